#!/usr/bin/env bash
# The twin of deploy/deploy.sh (docs/deploy.md): remove Lithops' worker functions (every runtime
# version and memory size) with their log groups, and Lithops' job data, the ECR repository, the CloudFormation stack (and wait), then the bucket (every version) and the
# ledger table, which the stack retains on delete.
#
#   deploy/teardown.sh --region eu-west-1 --stack lambdanet-demo [--keep-data] [--yes]
#   deploy/teardown.sh ... --dry-run    # print every command, values filled in; run nothing
#
# Safe to run again: a step whose resource is already gone warns and the others go on; the
# exit status is 1 when any step failed.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/lib.sh
source "$REPO_ROOT/deploy/lib.sh"

usage() {
  cat <<'EOF'
usage: deploy/teardown.sh [--region R] [--stack NAME] [options]

  --region R          AWS region of the stack
  --stack NAME        the stack deploy/deploy.sh created (the bucket is NAME-ACCOUNT-REGION)
  --keep-data         keep the bucket and the ledger table (runs, models, uploads)
  --account-id ID     AWS account id (default: aws sts get-caller-identity)
  --python PATH       Python with lithops and boto3 installed (default python3)
  --yes               do not ask for confirmation (needed when stdin is not a terminal)
  --dry-run           print the commands, run nothing (no AWS call)
  -h, --help          this text
EOF
}

REGION="" STACK="" ACCOUNT_ID="" KEEP_DATA=0 YES=0
PYTHON=${PYTHON:-python3}
while (($#)); do
  case $1 in
    --region|--stack|--account-id|--python)
      (($# >= 2)) || die "$1 needs a value"
      case $1 in
        --region) REGION=$2 ;; --stack) STACK=$2 ;; --account-id) ACCOUNT_ID=$2 ;; --python) PYTHON=$2 ;;
      esac
      shift 2 ;;
    --region=*|--stack=*|--account-id=*|--python=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
    --keep-data) KEEP_DATA=1; shift ;;
    --yes|-y) YES=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

need REGION --region "AWS region of the stack"
need STACK --stack "Stack name to delete"
valid_region "$REGION"
valid_stack "$STACK"
[[ -z $ACCOUNT_ID || $ACCOUNT_ID =~ ^[0-9]{12}$ ]] || die "--account-id must be 12 digits"

if [[ $DRY_RUN == 0 ]]; then
  for tool in aws lithops "$PYTHON"; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not on PATH (docs/deploy.md, prerequisites)"
  done
  if [[ $YES == 0 ]]; then
    [[ -t 0 ]] || die "deleting stack $STACK needs --yes when stdin is not a terminal"
    what="stack $STACK, its functions, Redis, VPC and ECR images"
    ((KEEP_DATA)) || what+=", and ALL its data (bucket, ledger)"
    read -r -p "Delete $what in $REGION? Type the stack name to confirm: " answer || true
    [[ $answer == "$STACK" ]] || die "not confirmed; nothing deleted"
  fi
fi

cd "$REPO_ROOT"
note "lambdanet teardown: stack $STACK in $REGION (dry run: nothing is executed)"
FAILED=()
step_failed() { warn "$1 failed (continuing)"; FAILED+=("$1"); }

if [[ -z $ACCOUNT_ID ]]; then
  ACCOUNT_ID=$(capture "<account-id>" aws sts get-caller-identity --query Account --output text)
fi
LITHOPS_VERSION=$(pinned_lithops_version)
REPO="$(lithops_package "$STACK" "$LITHOPS_VERSION")/lambdanet-runtime"
BUCKET="$STACK-$ACCOUNT_ID-$REGION"
LITHOPS_CONFIG="${TMPDIR:-/tmp}/lambdanet-$STACK-lithops.json"

# 1. Lithops' worker functions (every runtime version and memory of this stack's namespace), their
#    log groups (deploy.sh made them, outside the stack) and Lithops' job data.
#    First: a VPC function left behind keeps network interfaces that block deleting the subnets.
note "delete Lithops' worker functions and job data (with the driver's Lithops config)"
if run aws lambda get-function-configuration --region "$REGION" --function-name "$STACK-driver" \
    --query Environment.Variables.LAMBDANET_LITHOPS_CONFIG --output text ">" "$LITHOPS_CONFIG"; then
  run lithops clean -b aws_lambda -s aws_s3 -c "$LITHOPS_CONFIG" || step_failed "lithops clean"
else
  step_failed "reading the driver's Lithops config (no driver function?): Lithops' job data not deleted"
fi
note "delete every worker function $STACK-lithops-worker-* left and every worker log group (any version)"
run "$PYTHON" deploy/lithops_workers.py clean --region "$REGION" "$STACK" \
  || step_failed "deleting Lithops' worker functions and log groups"

# 2. the runtime image repository
note "delete the ECR repository $REPO"
run aws ecr delete-repository --region "$REGION" --repository-name "$REPO" --force \
  || step_failed "deleting ECR repository $REPO"

# 3. the stack (driver and serving functions and their log groups, Redis, VPC, SNS, roles), and wait
note "delete the stack and wait (several minutes: Redis, NAT gateway, Lambda network interfaces)"
run aws cloudformation delete-stack --region "$REGION" --stack-name "$STACK" || step_failed "delete-stack"
run aws cloudformation wait stack-delete-complete --region "$REGION" --stack-name "$STACK" \
  || step_failed "waiting for the stack deletion (see the stack's events; run teardown again)"

# 4. what the stack retains on delete: the bucket (every version) and the ledger table
if ((KEEP_DATA)); then
  note "kept: s3://$BUCKET and DynamoDB table $STACK-ledger (--keep-data)"
else
  note "empty and delete the bucket (every object version), delete the ledger table"
  run "$PYTHON" deploy/empty_bucket.py "$BUCKET" --region "$REGION" --delete || step_failed "emptying s3://$BUCKET"
  run aws dynamodb delete-table --region "$REGION" --table-name "$STACK-ledger" \
    || step_failed "deleting table $STACK-ledger"
fi

if ((${#FAILED[@]})); then
  echo "teardown of $STACK finished with ${#FAILED[@]} failed step(s): ${FAILED[*]}" >&2
  exit 1
fi
note "teardown of $STACK done"
