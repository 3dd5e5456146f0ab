"""Lithops' worker functions of a lambdanet stack: their CloudWatch log groups, and their removal.

Lithops 3.8 creates its worker functions itself (``lithops runtime deploy``) and has no setting
for their logs: Lambda then makes ``/aws/lambda/<function>`` on the first log line, kept forever.
So deploy/deploy.sh creates each worker's group, with its retention, before the function exists,
and deploy/teardown.sh removes every worker function of the stack and every such group:

    python3 deploy/lithops_workers.py log-groups --region R --retention-days 7 FUNCTION...
    python3 deploy/lithops_workers.py clean --region R STACK

``log-groups`` is idempotent (an existing group keeps its events and gets the retention);
``clean`` deletes the functions named ``<STACK>-lithops-worker-<user key>-<Lithops version>-<hash>``
(every runtime version, memory size and Lithops version), then their log groups, and nothing
else; run again it finds nothing. Needs boto3 (``pip install 'lambdanet[aws]'``; Lithops brings
it too).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

LOG_PREFIX = "/aws/lambda/"
# the CloudWatch Logs retention values the service accepts
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                  2922, 3288, 3653)
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def worker_pattern(stack: str) -> re.Pattern[str]:
    """The names Lithops gives this stack's worker functions (namespace = the stack):
    ``<stack>-lithops-worker-<user key, ≤ 4>-<version without dots>-<sha1[:10]>``."""
    return re.compile(rf"^{re.escape(stack)}-lithops-worker-[a-z0-9]{{1,4}}-[0-9]+-[0-9a-f]{{10}}$")


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def log_groups(logs: Any, functions: list[str], days: int) -> None:
    for name in functions:
        group = LOG_PREFIX + name
        try:
            logs.create_log_group(logGroupName=group)
            made = "created"
        except Exception as exc:
            if _code(exc) != "ResourceAlreadyExistsException":
                raise
            made = "exists"
        logs.put_retention_policy(logGroupName=group, retentionInDays=days)
        print(f"{group}: {made}, kept {days} days")


def clean(lambda_client: Any, logs: Any, stack: str) -> int:
    pattern = worker_pattern(stack)
    functions = [f["FunctionName"] for page in lambda_client.get_paginator("list_functions").paginate()
                 for f in page.get("Functions", []) if pattern.match(f["FunctionName"])]
    for name in functions:
        try:
            lambda_client.delete_function(FunctionName=name)
            print(f"deleted function {name}")
        except Exception as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
    # the groups after the functions: a function still running could otherwise recreate its group
    prefix = f"{LOG_PREFIX}{stack}-lithops-worker-"
    pages = logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=prefix)
    groups = [g["logGroupName"] for page in pages for g in page.get("logGroups", [])
              if pattern.match(g["logGroupName"][len(LOG_PREFIX):])]
    for group in groups:
        try:
            logs.delete_log_group(logGroupName=group)
            print(f"deleted log group {group}")
        except Exception as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
    if not functions and not groups:
        print(f"no Lithops worker functions or log groups of stack {stack} (nothing to delete)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_logs = sub.add_parser("log-groups", help="create /aws/lambda/FUNCTION for each function, with a retention")
    p_logs.add_argument("--region", required=True)
    p_logs.add_argument("--retention-days", type=int, default=7, choices=RETENTION_DAYS, metavar="DAYS")
    p_logs.add_argument("functions", nargs="+", metavar="FUNCTION")
    p_clean = sub.add_parser("clean", help="delete every Lithops worker function of STACK and its log group")
    p_clean.add_argument("--region", required=True)
    p_clean.add_argument("stack")
    args = parser.parse_args(argv)

    import boto3

    logs = boto3.client("logs", region_name=args.region)
    if args.command == "log-groups":
        bad = [name for name in args.functions if not FUNCTION_NAME.match(name)]
        if bad:
            parser.error(f"not a Lambda function name: {bad[0]!r}")
        log_groups(logs, args.functions, args.retention_days)
        return 0
    return clean(boto3.client("lambda", region_name=args.region), logs, args.stack)


if __name__ == "__main__":
    sys.exit(main())
