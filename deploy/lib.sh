# shellcheck shell=bash
# Shared by deploy/deploy.sh and deploy/teardown.sh (sourced, not run).
#
# Every command that touches AWS, Docker or Lithops goes through `run` (or `capture` when its
# output is needed): with --dry-run it prints the command line, values filled in, and runs
# nothing; otherwise it prints it to stderr with a "+ " prefix and runs it. A dry run therefore
# shows exactly what a real run would do, in order.

DRY_RUN=0
exec 3>&1  # the dry-run listing goes to the script's stdout, even from inside $(capture ...)

die() { echo "error: $*" >&2; exit 2; }
warn() { echo "warning: $*" >&2; }
note() {  # a line for the human: a comment in the dry-run listing, plain text otherwise
  if [[ $DRY_RUN == 1 ]]; then echo "# $*" >&3; else echo "$*" >&2; fi
}

# quote ARG: the argument as the shell would need it typed (bare when that is safe)
quote() {
  local a=$1
  if [[ -n $a && $a =~ ^[A-Za-z0-9_./:=,@%+^-]+$ ]]; then
    printf '%s' "$a"
  else
    printf "'%s'" "${a//\'/\'\\\'\'}"
  fi
}

# render ARGS...: one command line; the bare words '|' and '>' are a pipe and a redirection
render() {
  local out="" a
  for a in "$@"; do
    if [[ $a == "|" || $a == ">" ]]; then out+="$a "; else out+="$(quote "$a") "; fi
  done
  printf '%s' "${out% }"
}

# run CMD ARGS... ['|' CMD2 ARGS...] ['>' FILE]
run() {
  local line
  line=$(render "$@")
  if [[ $DRY_RUN == 1 ]]; then
    echo "$line" >&3
    return 0
  fi
  echo "+ $line" >&2
  local -a left=() right=()
  local out="" seen_pipe=0
  while (($#)); do
    case $1 in
      "|") seen_pipe=1 ;;
      ">") out=$2; shift ;;
      *) if ((seen_pipe)); then right+=("$1"); else left+=("$1"); fi ;;
    esac
    shift
  done
  if ((seen_pipe)); then
    if [[ -n $out ]]; then "${left[@]}" | "${right[@]}" >"$out"; else "${left[@]}" | "${right[@]}"; fi
  elif [[ -n $out ]]; then
    "${left[@]}" >"$out"
  else
    "${left[@]}"
  fi
}

# capture PLACEHOLDER CMD ARGS...: CMD's stdout (a dry run prints CMD and answers PLACEHOLDER)
capture() {
  local placeholder=$1
  shift
  if [[ $DRY_RUN == 1 ]]; then
    render "$@" >&3
    echo >&3
    printf '%s\n' "$placeholder"
    return 0
  fi
  echo "+ $(render "$@")" >&2
  "$@"
}

# need NAME FLAG PROMPT: VALUE of variable NAME, asked for on a terminal when empty
need() {
  local name=$1 flag=$2 prompt=$3 value
  if [[ -n ${!name:-} ]]; then return 0; fi
  if [[ -t 0 ]]; then
    read -r -p "$prompt: " value || true
    [[ -n $value ]] || die "$flag is required"
    printf -v "$name" '%s' "$value"
  else
    die "$flag is missing (no terminal to ask on; see --help)"
  fi
}

# the Lithops version pinned in pyproject.toml (the version baked into the image)
pinned_lithops_version() {
  local v
  v=$(grep -o 'lithops==[0-9][0-9.]*' "$REPO_ROOT/pyproject.toml" | head -n1 | cut -d= -f3)
  [[ -n $v ]] || die "no lithops==X.Y.Z pin in pyproject.toml"
  printf '%s' "$v"
}

# names Lithops derives (lithops/serverless/backends/aws_lambda/aws_lambda.py, user_id "lnet",
# namespace = the stack, as deploy/template.yaml gives the driver)
LITHOPS_USER_ID=lnet
lithops_package() {  # STACK VERSION -> lithops_v380_lnet_<stack>
  printf 'lithops_v%s_%s_%s' "${2//./}" "${LITHOPS_USER_ID: -4}" "$1"
}
lithops_worker_name() {  # STACK RUNTIME MEMORY VERSION -> <stack>-lithops-worker-lnet-380-<sha1[:10]>
  local hash
  hash=$(printf '%s' "$2-$3-$4" | sha1 | cut -c1-10)
  printf '%s-lithops-worker-%s-%s-%s' "$1" "${LITHOPS_USER_ID: -4}" "${4//./}" "$hash"
}
sha1() {
  if command -v sha1sum >/dev/null 2>&1; then sha1sum; else shasum -a 1; fi
}

# runtime_version EXTRAS -> 12 hex: a content hash of what the runtime image is built from
# (deploy/Dockerfile, pyproject.toml with its pinned dependencies and Lithops, README.md, every
# file under src/ but Python caches, the pip extras). It versions Lithops' runtime name, so a
# deploy with other content makes new worker functions beside the old ones, and a deploy of the
# same content finds its functions already there.
runtime_version() {
  local f
  {
    printf 'extras=%s\n' "$1"
    (cd "$REPO_ROOT" && find deploy/Dockerfile pyproject.toml README.md src -type f ! -name '*.pyc' \
      ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print | LC_ALL=C sort) |
      while IFS= read -r f; do
        printf '%s %s\n' "$(sha1 <"$REPO_ROOT/$f" | cut -c1-40)" "$f"
      done
  } | sha1 | cut -c1-12
}

int_between() {  # VALUE MIN MAX: VALUE is a whole number in [MIN, MAX]
  [[ $1 =~ ^[0-9]{1,9}$ ]] || return 1
  (( 10#$1 >= $2 && 10#$1 <= $3 ))
}
valid_stack() {
  # lower case (it names the bucket); at most 29 characters so that Lithops' worker function
  # name (<stack>-lithops-worker-lnet-380-<10 hex>) stays within Lambda's 64
  [[ $1 =~ ^[a-z][a-z0-9-]{0,27}[a-z0-9]$ ]] || die "--stack '$1': 2-29 characters, a-z 0-9 and -, starting with a letter"
}
valid_region() {
  [[ $1 =~ ^[a-z]{2}(-[a-z]+)+-[0-9]$ ]] || die "--region '$1' does not look like an AWS region (e.g. eu-west-1)"
}
