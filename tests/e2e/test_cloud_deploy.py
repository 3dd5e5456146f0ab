"""deploy/: the CloudFormation template passes cfn-lint with no errors and wires what the code
expects (table schema, handlers, trigger filter, per-stack names, the durable driver behind its
alias, 7-day log groups for the driver and the serving function; Lithops' workers' groups are
made by deploy/deploy.sh, outside the stack: see test_deploy_scripts.py)."""

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
    # the trigger: training_input/ + every data suffix the code takes -> the driver function running
    # lambdanet.functions.training_function.handler
    from lambdanet.functions.upload_trigger import DATA_SUFFIXES

    suffixes = []
    for notif in res["DataBucket"]["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]:
        rules = {r["Name"]: r["Value"] for r in notif["Filter"]["S3Key"]["Rules"]}
        assert rules["prefix"] == "training_input/" and set(rules) == {"prefix", "suffix"}
        assert notif["Function"] == {"Ref": "DriverAlias"}  # qualified: the driver is a durable function
        suffixes.append(rules["suffix"])
    assert sorted(suffixes) == sorted(DATA_SUFFIXES)
    assert not any(a != b and a.endswith(b) for a in suffixes for b in suffixes)  # S3 refuses overlaps
    driver = res["DriverFunction"]["Properties"]
    assert driver["ImageConfig"]["Command"] == ["lambdanet.functions.training_function.handler"]
    assert driver["Timeout"] <= 900
    serve = res["ServeFunction"]["Properties"]
    assert serve["ImageConfig"]["Command"] == ["lambdanet.functions.serving_function.handler"]
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
        if r["Type"] == "AWS::Lambda::Alias":  # an alias name is scoped to its (stack-named) function
            continue
        for prop in ("FunctionName", "TableName", "TopicName", "BucketName", "Name"):
            value = r.get("Properties", {}).get(prop)
            if isinstance(value, str) or (isinstance(value, dict) and "Sub" in value):
                assert "${AWS::StackName}" in str(value), (name, prop, value)


def _sub_text(value: Any) -> str:
    """The template string of a !Sub (short or long form) or a plain string."""
    if isinstance(value, dict) and "Sub" in value:
        sub = value["Sub"]
        return str(sub[0] if isinstance(sub, list) else sub)
    return str(value)


def test_every_function_logs_to_a_seven_day_log_group() -> None:
    res = _template()["Resources"]
    groups = {name: r["Properties"] for name, r in res.items() if r["Type"] == "AWS::Logs::LogGroup"}
    assert groups and all(g["RetentionInDays"] == 7 for g in groups.values()), groups
    functions = {name: r["Properties"] for name, r in res.items() if r["Type"] == "AWS::Lambda::Function"}
    assert set(functions) == {"DriverFunction", "ServeFunction"}
    for name, fn in functions.items():
        ref = fn["LoggingConfig"]["LogGroup"]
        assert isinstance(ref, dict) and set(ref) == {"Ref"}, (name, ref)
        group = groups[ref["Ref"]]
        # Lambda's default name too, so nothing writes to a second, unbounded group
        assert _sub_text(group["LogGroupName"]) == "/aws/lambda/" + _sub_text(fn["FunctionName"]), name
    # Lithops' worker functions (one per runtime version and memory size) are not the stack's,
    # nor are their log groups: a group the stack held under a parameter's name would be replaced,
    # so deleted, by the next deploy of a new version while a run still uses the old function.
    # deploy.sh makes each worker's group, teardown.sh deletes them (test_deploy_scripts.py).
    assert set(groups) == {"DriverLogGroup", "ServeLogGroup"}, groups
    params = _template()["Parameters"]
    assert "LithopsWorkerFunctionName" not in params
    assert "${LithopsWorkerFunctionName}" not in TEMPLATE.read_text()
    assert params["LithopsRuntimeName"]["AllowedPattern"].startswith("^lambdanet-runtime:")
    # the same names the driver's Lithops config gives Lithops (deploy/lib.sh assumes user_id lnet)
    lithops_cfg = _sub_text(res["DriverFunction"]["Properties"]["Environment"]["Variables"]["LAMBDANET_LITHOPS_CONFIG"])
    for piece in ('"runtime": "${LithopsRuntimeName}"', '"user_id": "lnet"', '"namespace": "${AWS::StackName}"',
                  '"runtime_memory": ${WorkerMemoryMB}'):
        assert piece in lithops_cfg, piece


def test_driver_is_a_durable_function_invoked_through_its_alias() -> None:
    t = _template()
    res, params = t["Resources"], t["Parameters"]
    driver = res["DriverFunction"]["Properties"]
    assert driver["Timeout"] == 900  # one invocation; the execution goes on across invocations
    durable = driver["DurableConfig"]
    assert durable == {"ExecutionTimeout": {"Ref": "DurableExecutionTimeout"},
                       "RetentionPeriodInDays": {"Ref": "DurableRetentionDays"}}
    timeout = params["DurableExecutionTimeout"]
    assert timeout["Default"] == 7 * 24 * 3600
    assert timeout["MinValue"] >= 900 and timeout["MaxValue"] <= 31622400  # the service's limit: 366 days
    retention = params["DurableRetentionDays"]
    assert 1 <= retention["MinValue"] <= retention["Default"] <= retention["MaxValue"] <= 90
    assert "DurableConfig" not in res["ServeFunction"]["Properties"]

    # the execution role may checkpoint and read back the state of its own executions, on any
    # version (durable execution ARNs are qualified: an unqualified function ARN never matches)
    statements = res["DriverRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    durable_stmt = [s for s in statements if "lambda:CheckpointDurableExecution" in s["Action"]]
    assert len(durable_stmt) == 1
    assert set(durable_stmt[0]["Action"]) == {"lambda:CheckpointDurableExecution", "lambda:GetDurableExecutionState"}
    assert _sub_text(durable_stmt[0]["Resource"]).endswith(":function:${AWS::StackName}-driver:*")
    assert _sub_text(driver["FunctionName"]) == "${AWS::StackName}-driver"
    ddb = next(s for s in statements if any(str(a).startswith("dynamodb:") for a in s["Action"]))
    assert "dynamodb:DeleteItem" in ddb["Action"]  # the run's lease is released with DeleteItem

    # S3 -> the alias (a qualified ARN) -> the published version; the permission names the alias
    alias = res["DriverAlias"]
    assert alias["Type"] == "AWS::Lambda::Alias"
    assert alias["Properties"]["FunctionVersion"] == {"GetAtt": "DriverVersion.Version"}
    version = res["DriverVersion"]
    assert version["Type"] == "AWS::Lambda::Version"
    assert version["DeletionPolicy"] == version["UpdateReplacePolicy"] == "Retain"  # running executions replay on it
    assert "${DriverRevision}" in _sub_text(version["Properties"]["Description"])  # a new revision publishes
    notif = res["DataBucket"]["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    assert notif and all(n["Function"] == {"Ref": "DriverAlias"} for n in notif)
    permission = res["S3InvokeDriverPermission"]["Properties"]
    assert permission["FunctionName"] == {"Ref": "DriverAlias"} and permission["Principal"] == "s3.amazonaws.com"
    assert "S3InvokeDriverPermission" in [res["DataBucket"]["DependsOn"]]
    async_cfg = res["DriverAsyncConfig"]["Properties"]
    assert async_cfg["Qualifier"] == alias["Properties"]["Name"]
    assert t["Outputs"]["DriverAliasArn"]["Value"] == {"Ref": "DriverAlias"}
