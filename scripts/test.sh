#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian/Ubuntu machine, then run it:
#   - redis-server (the tests start their own instances on free loopback ports)
#   - Debian's chromium (headless browser tests of the photo page, report and dashboard)
#   - a virtualenv .venv with lambdanet[test] (moto server, lithops, torch CPU, fastapi, …)
# then lint (ruff), type-check (mypy), build the docs site (mkdocs --strict: a broken link or a page
# missing from the nav fails) and run the whole suite (slow cases included). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
site_dir="$(mktemp -d)"
trap 'rm -rf "$site_dir"' EXIT
# No -q: in mkdocs 1.6 it hides the warnings that --strict counts. The log is shown only on failure.
if ! mkdocs_log="$(NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -d "$site_dir" 2>&1)"; then
  printf '%s\n' "$mkdocs_log" >&2
  exit 1
fi
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
