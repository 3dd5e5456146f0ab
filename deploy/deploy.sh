#!/usr/bin/env bash
# One command to deploy lambdanet to AWS (docs/deploy.md): build and push the runtime image,
# deploy the CloudFormation stack (deploy/template.yaml), create Lithops' worker functions, print
# the bucket and the API URL. Its twin is deploy/teardown.sh.
#
#   deploy/deploy.sh --region eu-west-1 --stack lambdanet-demo --email you@example.com
#   deploy/deploy.sh ... --dry-run      # print every command, values filled in; run nothing
#
# Missing --region/--stack/--email are asked for on a terminal; without one the script stops
# with one "error:" line (exit 2). Re-running it updates the stack in place; it never deletes a
# worker function: the runtime name carries a content hash of the image's inputs, so new content
# gets new worker functions beside the old ones (a running run keeps its own).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/lib.sh
source "$REPO_ROOT/deploy/lib.sh"

usage() {
  cat <<'EOF'
usage: deploy/deploy.sh [--region R] [--stack NAME] [--email ADDRESS] [options]

  --region R             AWS region (e.g. eu-west-1)
  --stack NAME           stack name, lower case, 2-29 characters; names everything, the bucket
                         included: NAME-ACCOUNT-REGION
  --email ADDRESS        receives the training e-mails (confirm the SNS subscription)
  --workers K            worker functions per training run (default 2)
  --strategy S           neuron | data (default neuron)
  --model NAME           registered model name (default itsacat)
  --worker-memory MB[,MB...]
                         memory of Lithops' worker functions (default 2048): one function, and
                         one 7-day log group, per size; the driver's workers use the first
  --image-tag TAG        runtime image tag prefix (default build); the tag is TAG-<content hash>
  --extras LIST          pip extras baked into the image (default aws,redis,lithops,serve;
                         add torch for the CNN track)
  --execution-timeout S  seconds one durable driver execution may run in all (default 604800 = 7 days)
  --account-id ID        AWS account id (default: aws sts get-caller-identity)
  --revision REV         driver version label (default: UTC time); a new one publishes a new version
  --python PATH          Python with lithops installed (default python3)
  --dry-run              print the commands, run nothing (no AWS call, no docker)
  -h, --help             this text
EOF
}

REGION="" STACK="" EMAIL="" WORKERS=2 STRATEGY=neuron MODEL=itsacat WORKER_MEMORY=2048
IMAGE_TAG=build EXTRAS=aws,redis,lithops,serve EXECUTION_TIMEOUT=604800 ACCOUNT_ID="" REVISION=""
PYTHON=${PYTHON:-python3}
while (($#)); do
  case $1 in
    --region|--stack|--email|--workers|--strategy|--model|--worker-memory|--image-tag|--extras|\
    --execution-timeout|--account-id|--revision|--python)
      (($# >= 2)) || die "$1 needs a value"
      case $1 in
        --region) REGION=$2 ;; --stack) STACK=$2 ;; --email) EMAIL=$2 ;; --workers) WORKERS=$2 ;;
        --strategy) STRATEGY=$2 ;; --model) MODEL=$2 ;; --worker-memory) WORKER_MEMORY=$2 ;;
        --image-tag) IMAGE_TAG=$2 ;; --extras) EXTRAS=$2 ;; --execution-timeout) EXECUTION_TIMEOUT=$2 ;;
        --account-id) ACCOUNT_ID=$2 ;; --revision) REVISION=$2 ;; --python) PYTHON=$2 ;;
      esac
      shift 2 ;;
    --region=*|--stack=*|--email=*|--workers=*|--strategy=*|--model=*|--worker-memory=*|--image-tag=*|\
    --extras=*|--execution-timeout=*|--account-id=*|--revision=*|--python=*)
      set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

need REGION --region "AWS region (e.g. eu-west-1)"
need STACK --stack "Stack name (lower case; names the bucket)"
need EMAIL --email "E-mail address for training notifications"
valid_region "$REGION"
valid_stack "$STACK"
[[ $EMAIL =~ ^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$ ]] || die "--email '$EMAIL' is not an e-mail address"
int_between "$WORKERS" 1 64 || die "--workers must be 1-64"
[[ $STRATEGY == neuron || $STRATEGY == data ]] || die "--strategy must be neuron or data"
WORKER_MEMORIES=()
IFS=, read -r -a memory_list <<<"$WORKER_MEMORY"
((${#memory_list[@]})) || die "--worker-memory must be 512-10240 (MB), or a list such as 2048,4096"
for m in "${memory_list[@]}"; do
  int_between "$m" 512 10240 || die "--worker-memory must be 512-10240 (MB), or a list such as 2048,4096"
  m=$((10#$m))
  [[ " ${WORKER_MEMORIES[*]:-} " == *" $m "* ]] || WORKER_MEMORIES+=("$m")
done
int_between "$EXECUTION_TIMEOUT" 900 31622400 || die "--execution-timeout must be 900-31622400 seconds"
[[ $MODEL =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] || die "--model '$MODEL': 1-64 of A-Z a-z 0-9 _ . - (template's ModelName)"
# the tag gets "-<12 hex>" appended: 115 + 13 = 128, Docker's limit
[[ $IMAGE_TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,114}$ ]] || die "--image-tag '$IMAGE_TAG': 1-115 of A-Z a-z 0-9 _ . -"
[[ -z $ACCOUNT_ID || $ACCOUNT_ID =~ ^[0-9]{12}$ ]] || die "--account-id must be 12 digits"
REVISION=${REVISION:-$(date -u +%Y%m%dT%H%M%SZ)}
[[ $REVISION =~ ^[A-Za-z0-9._:-]{1,64}$ ]] || die "--revision: 1-64 of A-Z a-z 0-9 . _ : -"

LITHOPS_VERSION=$(pinned_lithops_version)
if [[ $DRY_RUN == 0 ]]; then
  for tool in aws docker lithops "$PYTHON"; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not on PATH (docs/deploy.md, prerequisites)"
  done
  local_version=$("$PYTHON" -c 'import lithops; print(lithops.__version__)' 2>/dev/null) \
    || die "$PYTHON cannot import lithops (pip install 'lambdanet[aws,lithops]')"
  [[ $local_version == "$LITHOPS_VERSION" ]] \
    || die "local lithops is $local_version, the image pins $LITHOPS_VERSION (pip install lithops==$LITHOPS_VERSION)"
fi

cd "$REPO_ROOT"
note "lambdanet deploy: stack $STACK in $REGION (dry run: nothing is executed)"

# 1. names -------------------------------------------------------------------------------------
if [[ -z $ACCOUNT_ID ]]; then
  ACCOUNT_ID=$(capture "<account-id>" aws sts get-caller-identity --query Account --output text)
fi
REGISTRY="$ACCOUNT_ID.dkr.ecr.$REGION.amazonaws.com"
VERSION=$(runtime_version "$EXTRAS") || die "cannot hash the runtime image's inputs"
TAG="$IMAGE_TAG-$VERSION"                              # a new tag for new content
RUNTIME="lambdanet-runtime:$TAG"                       # Lithops' runtime name: it names the workers
REPO="$(lithops_package "$STACK" "$LITHOPS_VERSION")/lambdanet-runtime"  # where Lithops looks for it
IMAGE="$REGISTRY/$REPO:$TAG"
WORKER_FUNCTIONS=()  # one per memory size; Lithops' own names (deploy/lib.sh)
for m in "${WORKER_MEMORIES[@]}"; do
  WORKER_FUNCTIONS+=("$(lithops_worker_name "$STACK" "$RUNTIME" "$m" "$LITHOPS_VERSION")")
done
BUCKET="$STACK-$ACCOUNT_ID-$REGION"
LITHOPS_CONFIG="${TMPDIR:-/tmp}/lambdanet-$STACK-lithops.json"

# 2. the runtime image: one image for the driver, the serving function and Lithops' workers --------
note "build and push the runtime image $IMAGE"
if [[ $DRY_RUN == 0 ]]; then trap 'rm -f "$REPO_ROOT/lithops_lambda.zip"' EXIT; fi
# Lithops' worker handler (what `lithops runtime build` adds to the build context)
run "$PYTHON" -c "from lithops.serverless.backends.aws_lambda.aws_lambda import AWSLambdaBackend; AWSLambdaBackend._create_handler_bin(remove=False)"
run docker build --platform linux/amd64 -f deploy/Dockerfile --build-arg "EXTRAS=$EXTRAS" -t "$RUNTIME" .
run rm -f lithops_lambda.zip
existing=$(capture "" aws ecr describe-repositories --region "$REGION" --repository-names "$REPO" \
  --query "repositories[0].repositoryName" --output text 2>/dev/null || true)
if [[ $existing != "$REPO" ]]; then
  run aws ecr create-repository --region "$REGION" --repository-name "$REPO" \
    --image-scanning-configuration scanOnPush=true
fi
run aws ecr get-login-password --region "$REGION" "|" docker login --username AWS --password-stdin "$REGISTRY"
run docker tag "$RUNTIME" "$IMAGE"
run docker push "$IMAGE"
DIGEST=$(capture "sha256:<image-digest>" aws ecr describe-images --region "$REGION" --repository-name "$REPO" \
  --image-ids "imageTag=$TAG" --query "imageDetails[0].imageDigest" --output text)
IMAGE_URI="$REGISTRY/$REPO@$DIGEST"  # a digest: a new image is a new value, so the functions update

# 3. the stack -------------------------------------------------------------------------------------
note "deploy the stack (the first time about 15 minutes: NAT gateway and Redis)"
run aws cloudformation deploy --region "$REGION" --stack-name "$STACK" --template-file deploy/template.yaml \
  --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
  --parameter-overrides "RuntimeImageUri=$IMAGE_URI" "LithopsRuntimeName=$RUNTIME" \
  "NotificationEmail=$EMAIL" "Workers=$WORKERS" \
  "Strategy=$STRATEGY" "ModelName=$MODEL" "WorkerMemoryMB=${WORKER_MEMORIES[0]}" \
  "DurableExecutionTimeout=$EXECUTION_TIMEOUT" "DriverRevision=$REVISION"
placeholder_outputs=$(printf '%s\t<%s>\n' BucketName BucketName ApiUrl ApiUrl DriverAliasArn DriverAliasArn)
OUTPUTS=$(capture "$placeholder_outputs" aws cloudformation describe-stacks --region "$REGION" --stack-name "$STACK" \
  --query "Stacks[0].Outputs[].[OutputKey,OutputValue]" --output text)
output() { awk -F'\t' -v k="$1" '$1 == k {print $2}' <<<"$OUTPUTS"; }

# 4. Lithops' worker functions, with the driver's own Lithops config -----------------------------
#    Each function's log group first, kept 7 days (Lithops has no log setting; without the group,
#    Lambda makes one that is kept forever). Nothing is deleted: the functions of earlier runtime
#    versions stay for the runs that use them (teardown.sh removes them all); a function of this
#    version that exists already runs this same content and is left as it is.
note "create Lithops' worker functions of runtime $RUNTIME: ${WORKER_FUNCTIONS[*]}"
run aws lambda get-function-configuration --region "$REGION" --function-name "$STACK-driver" \
  --query Environment.Variables.LAMBDANET_LITHOPS_CONFIG --output text ">" "$LITHOPS_CONFIG"
run "$PYTHON" deploy/lithops_workers.py log-groups --region "$REGION" --retention-days 7 "${WORKER_FUNCTIONS[@]}"
for m in "${WORKER_MEMORIES[@]}"; do
  run lithops runtime deploy -b aws_lambda -s aws_s3 -c "$LITHOPS_CONFIG" --memory "$m" --timeout 900 "$RUNTIME"
done

# 5. what to do next -------------------------------------------------------------------------------
note "deployed"
bucket_out=$(output BucketName); api_out=$(output ApiUrl); alias_out=$(output DriverAliasArn)
if [[ $DRY_RUN == 1 ]]; then
  echo "# bucket: ${bucket_out:-$BUCKET}"
  echo "# api: $api_out"
  echo "# driver: $alias_out"
else
  echo "bucket: ${bucket_out:-$BUCKET}"
  echo "api: $api_out"
  echo "driver: $alias_out (durable; executions up to $EXECUTION_TIMEOUT s)"
  echo "next: confirm the SNS e-mail, then upload training_input/parameters.json and training_input/datasets.h5"
fi
