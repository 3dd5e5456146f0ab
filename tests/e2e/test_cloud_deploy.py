"""deploy/: the CloudFormation template passes cfn-lint with no errors and wires what the code
expects (table schema, handlers, trigger filter, per-stack names)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

TEMPLATE = REPO / "deploy" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation's short tags (!Sub, !Ref, …) as {tag: value}."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


_CfnLoader.add_multi_constructor("!", _tag)


def _template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def test_template_passes_cfn_lint() -> None:
    exe = Path(sys.executable).parent / "cfn-lint"
    proc = subprocess.run([str(exe), "--format", "parseable", str(TEMPLATE)], capture_output=True, text=True,
                          timeout=300)
    errors = [line for line in proc.stdout.splitlines() if ":E" in line or line.split(":")[-2:-1] == ["E"]]
    # cfn-lint exit codes: 0 clean, 2 errors, 4 warnings, 8 informational (bit flags)
    assert proc.returncode & 2 == 0 and proc.returncode & 1 == 0, proc.stdout + proc.stderr
    assert errors == []


def test_template_wires_what_the_code_expects() -> None:
    from lambdanet.ledgers.dynamodb import GSI

    t = _template()
    res = t["Resources"]
    types = {r["Type"] for r in res.values()}
    assert {"AWS::S3::Bucket", "AWS::Lambda::Function", "AWS::ElastiCache::CacheCluster", "AWS::DynamoDB::Table",
            "AWS::SNS::Topic", "AWS::SNS::Subscription", "AWS::ApiGatewayV2::Api", "AWS::EC2::NatGateway",
            "AWS::IAM::Role"} <= types
    # the trigger: training_input/*.h5 -> the driver function running lambdanet.aws_lambda.handler
    notif = res["DataBucket"]["Properties"]["NotificationConfiguration"]["LambdaConfigurations"][0]
    rules = {r["Name"]: r["Value"] for r in notif["Filter"]["S3Key"]["Rules"]}
    assert rules == {"prefix": "training_input/", "suffix": ".h5"}
    assert notif["Function"] == {"GetAtt": "DriverFunction.Arn"}
    driver = res["DriverFunction"]["Properties"]
    assert driver["ImageConfig"]["Command"] == ["lambdanet.aws_lambda.handler"]
    assert driver["Timeout"] <= 900
    assert res["ServeFunction"]["Properties"]["ImageConfig"]["Command"] == ["lambdanet.serve.aws_lambda.handler"]
    env = driver["Environment"]["Variables"]
    assert env["LAMBDANET_EXECUTOR"] == "lithops"
    assert set(env) >= {"LAMBDANET_LEDGER", "LAMBDANET_OBJECTS", "LAMBDANET_NOTIFIER", "LAMBDANET_STORE",
                        "LAMBDANET_LITHOPS_CONFIG"}
    # the ledger table has the schema DynamoLedger creates when one is missing
    table = res["LedgerTable"]["Properties"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    assert table["GlobalSecondaryIndexes"][0]["IndexName"] == GSI
    # several stacks per account: every explicit name derives from the stack name
    for name, r in res.items():
        for prop in ("FunctionName", "TableName", "TopicName", "BucketName", "Name"):
            value = r.get("Properties", {}).get(prop)
            if isinstance(value, str) or (isinstance(value, dict) and "Sub" in value):
                assert "${AWS::StackName}" in str(value), (name, prop, value)
