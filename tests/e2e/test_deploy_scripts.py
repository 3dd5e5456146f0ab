"""deploy/deploy.sh and deploy/teardown.sh: --dry-run prints every command (values filled in, in
order) and runs none — checked with no ``aws``, ``docker``, ``lithops`` or ``python3`` on PATH at
all; a missing flag without a terminal is one ``error:`` line and exit 2; the Lithops names the
scripts compute are the ones the installed Lithops computes; the runtime name carries a content
hash, so a redeploy of new content makes new worker functions and deletes none; the printed
worker-log-group and worker-cleaning commands, run against moto's server, give every worker
function (each memory size, each runtime version) a 7-day group and remove them all; the bucket
helper empties every version (moto)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

DEPLOY = REPO / "deploy" / "deploy.sh"
TEARDOWN = REPO / "deploy" / "teardown.sh"
BASH = shutil.which("bash") or "/bin/bash"
# what the scripts may use on a dry run: shell utilities only
TOOLS = ("bash", "dirname", "grep", "head", "cut", "awk", "date", "sha1sum", "shasum", "cat", "find", "sort")
ACCOUNT = "123456789012"
REGISTRY = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com"
REPO_NAME = "lithops_v380_lnet_lambdanet-demo/lambdanet-runtime"
ALL_FLAGS = ["--region", "eu-west-1", "--stack", "lambdanet-demo", "--email", "you@example.com",
             "--workers", "4", "--strategy", "data", "--worker-memory", "3008,4096", "--image-tag", "v7",
             "--account-id", ACCOUNT, "--revision", "r42"]


@pytest.fixture(scope="module")
def bare_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH holding only shell utilities: no aws, docker, lithops or python."""
    bin_dir = tmp_path_factory.mktemp("bin")
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    for absent in ("aws", "docker", "lithops", "python3", "python"):
        assert shutil.which(absent, path=str(bin_dir)) is None
    return str(bin_dir)


def _run(script: Path, args: list[str], path: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": str(tmp), "TMPDIR": str(tmp), "LANG": "C"}
    return subprocess.run([BASH, str(script), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=env, timeout=60, cwd=tmp)


def _commands(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line and not line.startswith("#")]


def _runtime(lines: list[str]) -> str:
    """The versioned Lithops runtime name a deploy's dry run builds (``docker build … -t NAME .``)."""
    build = next(line for line in lines if line.startswith("docker build "))
    match = re.search(r" -t (lambdanet-runtime:\S+) \.$", build)
    assert match, build
    return match.group(1)


def _in_order(lines: list[str], expected: list[str]) -> None:
    positions = []
    for want in expected:
        assert want in lines, f"missing command line:\n{want}\n--- got:\n" + "\n".join(lines)
        positions.append(lines.index(want))
    assert positions == sorted(positions), positions


def test_deploy_dry_run_prints_every_command_in_order_and_runs_none(bare_path: str, tmp_path: Path) -> None:
    proc = _run(DEPLOY, [*ALL_FLAGS, "--dry-run"], bare_path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # nothing executed (a real run echoes "+ command" to stderr)
    lines = _commands(proc.stdout)
    runtime = _runtime(lines)
    tag = runtime.split(":", 1)[1]
    assert re.fullmatch(r"v7-[0-9a-f]{12}", tag), tag  # --image-tag, then the content hash
    image = f"{REGISTRY}/{REPO_NAME}:{tag}"
    config = f"{tmp_path}/lambdanet-lambdanet-demo-lithops.json"
    workers = [f"lambdanet-demo-lithops-worker-lnet-380-{_lithops_hash(runtime, m)}" for m in (3008, 4096)]
    _in_order(lines, [
        "python3 -c 'from lithops.serverless.backends.aws_lambda.aws_lambda import AWSLambdaBackend; "
        "AWSLambdaBackend._create_handler_bin(remove=False)'",
        "docker build --platform linux/amd64 -f deploy/Dockerfile --build-arg EXTRAS=aws,redis,lithops,serve "
        f"-t {runtime} .",
        "rm -f lithops_lambda.zip",
        f"aws ecr create-repository --region eu-west-1 --repository-name {REPO_NAME} "
        "--image-scanning-configuration scanOnPush=true",
        f"aws ecr get-login-password --region eu-west-1 | docker login --username AWS --password-stdin {REGISTRY}",
        f"docker tag {runtime} {image}",
        f"docker push {image}",
        f"aws ecr describe-images --region eu-west-1 --repository-name {REPO_NAME} --image-ids imageTag={tag} "
        "--query 'imageDetails[0].imageDigest' --output text",
        "aws cloudformation deploy --region eu-west-1 --stack-name lambdanet-demo "
        "--template-file deploy/template.yaml --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset "
        f"--parameter-overrides 'RuntimeImageUri={REGISTRY}/{REPO_NAME}@sha256:<image-digest>' "
        f"LithopsRuntimeName={runtime} "
        "NotificationEmail=you@example.com Workers=4 Strategy=data ModelName=itsacat WorkerMemoryMB=3008 "
        "DurableExecutionTimeout=604800 DriverRevision=r42",
        "aws cloudformation describe-stacks --region eu-west-1 --stack-name lambdanet-demo "
        "--query 'Stacks[0].Outputs[].[OutputKey,OutputValue]' --output text",
        "aws lambda get-function-configuration --region eu-west-1 --function-name lambdanet-demo-driver "
        f"--query Environment.Variables.LAMBDANET_LITHOPS_CONFIG --output text > {config}",
        # every worker function's log group, 7 days, before Lithops creates the functions
        "python3 deploy/lithops_workers.py log-groups --region eu-west-1 --retention-days 7 " + " ".join(workers),
        f"lithops runtime deploy -b aws_lambda -s aws_s3 -c {config} --memory 3008 --timeout 900 {runtime}",
        f"lithops runtime deploy -b aws_lambda -s aws_s3 -c {config} --memory 4096 --timeout 900 {runtime}",
    ])
    # the account id was given: no STS call; the outputs are placeholders
    assert not any(line.startswith("aws sts") for line in lines)
    assert "# bucket: <BucketName>" in proc.stdout and "# api: <ApiUrl>" in proc.stdout
    assert not (tmp_path / "lambdanet-lambdanet-demo-lithops.json").exists()  # the redirect did not run


def test_deploy_dry_run_asks_sts_for_the_account_when_not_given(bare_path: str, tmp_path: Path) -> None:
    proc = _run(DEPLOY, ["--region", "eu-west-1", "--stack", "lambdanet-demo", "--email", "you@example.com",
                         "--dry-run"], bare_path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = _commands(proc.stdout)
    assert lines[0] == "aws sts get-caller-identity --query Account --output text"
    runtime = _runtime(lines)
    assert re.fullmatch(r"lambdanet-runtime:build-[0-9a-f]{12}", runtime), runtime
    assert f"docker push '<account-id>.dkr.ecr.eu-west-1.amazonaws.com/{REPO_NAME}:{runtime.split(':')[1]}'" in lines
    deploy = next(line for line in lines if line.startswith("aws cloudformation deploy"))
    assert "Workers=2 Strategy=neuron ModelName=itsacat WorkerMemoryMB=2048 DurableExecutionTimeout=604800" in deploy
    assert "DriverRevision=20" in deploy  # a UTC timestamp by default: every deploy publishes a version


@pytest.mark.parametrize("drop", ["--region", "--stack", "--email"])
def test_deploy_without_a_terminal_a_missing_flag_is_one_error_line(bare_path: str, tmp_path: Path,
                                                                     drop: str) -> None:
    i = ALL_FLAGS.index(drop)
    args = ALL_FLAGS[:i] + ALL_FLAGS[i + 2:]
    proc = _run(DEPLOY, [*args, "--dry-run"], bare_path, tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: {drop} is missing (no terminal to ask on; see --help)"]


@pytest.mark.parametrize(("flag", "value"), [("--stack", "Lambdanet"), ("--stack", "x" * 30), ("--region", "mars"),
                                             ("--workers", "0"), ("--strategy", "model"), ("--email", "nobody"),
                                             ("--worker-memory", "2048,100"), ("--worker-memory", "2048,,4096"),
                                             ("--image-tag", "x" * 116)])
def test_deploy_rejects_bad_values_with_one_line(bare_path: str, tmp_path: Path, flag: str, value: str) -> None:
    args = list(ALL_FLAGS)
    args[args.index(flag) + 1] = value
    proc = _run(DEPLOY, [*args, "--dry-run"], bare_path, tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ")


def test_deploy_without_tools_fails_clearly_when_not_a_dry_run(bare_path: str, tmp_path: Path) -> None:
    proc = _run(DEPLOY, ALL_FLAGS, bare_path, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: 'aws' is not on PATH (docs/deploy.md, prerequisites)"]


def test_teardown_dry_run_prints_cleanup_in_order(bare_path: str, tmp_path: Path) -> None:
    proc = _run(TEARDOWN, ["--region", "eu-west-1", "--stack", "lambdanet-demo", "--account-id", ACCOUNT,
                           "--dry-run"], bare_path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = _commands(proc.stdout)
    config = f"{tmp_path}/lambdanet-lambdanet-demo-lithops.json"
    expected = [
        "aws lambda get-function-configuration --region eu-west-1 --function-name lambdanet-demo-driver "
        f"--query Environment.Variables.LAMBDANET_LITHOPS_CONFIG --output text > {config}",
        f"lithops clean -b aws_lambda -s aws_s3 -c {config}",
        "python3 deploy/lithops_workers.py clean --region eu-west-1 lambdanet-demo",
        f"aws ecr delete-repository --region eu-west-1 --repository-name {REPO_NAME} --force",
        "aws cloudformation delete-stack --region eu-west-1 --stack-name lambdanet-demo",
        "aws cloudformation wait stack-delete-complete --region eu-west-1 --stack-name lambdanet-demo",
        f"python3 deploy/empty_bucket.py lambdanet-demo-{ACCOUNT}-eu-west-1 --region eu-west-1 --delete",
        "aws dynamodb delete-table --region eu-west-1 --table-name lambdanet-demo-ledger",
    ]
    assert lines == expected


def test_teardown_keep_data_keeps_bucket_and_table(bare_path: str, tmp_path: Path) -> None:
    proc = _run(TEARDOWN, ["--region", "eu-west-1", "--stack", "lambdanet-demo", "--account-id", ACCOUNT,
                           "--keep-data", "--dry-run"], bare_path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = _commands(proc.stdout)
    assert lines[-1] == "aws cloudformation wait stack-delete-complete --region eu-west-1 --stack-name lambdanet-demo"
    assert not any("empty_bucket" in line or "delete-table" in line for line in lines)


def test_teardown_without_a_terminal_a_missing_flag_is_one_error_line(bare_path: str, tmp_path: Path) -> None:
    proc = _run(TEARDOWN, ["--region", "eu-west-1", "--dry-run"], bare_path, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: --stack is missing (no terminal to ask on; see --help)"]


# ---- versioned runtimes: a redeploy adds worker functions and deletes none ---------------------
def _deletions(lines: list[str]) -> list[str]:
    """Command lines that delete or clean anything (the handler zip's ``rm -f`` aside)."""
    return [line for line in lines if re.search(r"\bdelete\b|delete-|\bclean\b|\brm\b", line)
            and line != "rm -f lithops_lambda.zip"]


def _snapshot(tmp: Path) -> Path:
    """A copy of what deploy.sh reads and hashes (its own folder, pyproject.toml, README.md, src/):
    the deploys below see a source tree that changes only when the test changes it."""
    root = tmp / "checkout"
    for rel in ("deploy", "src"):
        shutil.copytree(REPO / rel, root / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    for rel in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / rel, root / rel)
    return root


def test_a_redeploy_of_new_code_adds_worker_functions_and_deletes_none(bare_path: str, tmp_path: Path) -> None:
    root = _snapshot(tmp_path)
    deploy = root / "deploy" / "deploy.sh"
    first = _commands(_run(deploy, [*ALL_FLAGS, "--dry-run"], bare_path, tmp_path).stdout)
    # the code changes while a run may still use the first deploy's workers; deploy again
    init = root / "src" / "lambdanet" / "__init__.py"
    init.write_text(init.read_text() + "\n# a change\n")
    again = list(ALL_FLAGS)
    again[again.index("--revision") + 1] = "r43"
    proc = _run(deploy, [*again, "--dry-run"], bare_path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    second = _commands(proc.stdout)
    old, new = _runtime(first), _runtime(second)
    assert old != new and old.split("-")[:-1] == new.split("-")[:-1]  # same tag prefix, new content hash
    old_workers = {f"lambdanet-demo-lithops-worker-lnet-380-{_lithops_hash(old, m)}" for m in (3008, 4096)}
    # the redeploy deletes nothing, and never names a function of the first deploy
    assert _deletions(second) == []
    assert not any(name in line for line in second for name in old_workers)
    assert any(line.startswith("lithops runtime deploy ") and line.endswith(f" {new}") for line in second)
    # the same code deployed again (another revision) finds its own functions: same names
    again[again.index("--revision") + 1] = "r44"
    same = _commands(_run(deploy, [*again, "--dry-run"], bare_path, tmp_path).stdout)
    assert _runtime(same) == new and _deletions(same) == []


def _version(root: Path, extras: str = "aws") -> str:
    script = f'source {REPO}/deploy/lib.sh; REPO_ROOT={root}; runtime_version {shlex.quote(extras)}'
    out = subprocess.run([BASH, "-c", script], capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    assert re.fullmatch(r"[0-9a-f]{12}\n", out.stdout), out.stdout
    return out.stdout.strip()


def test_the_runtime_version_is_a_hash_of_what_the_image_is_built_from(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for rel, text in {"deploy/Dockerfile": "FROM python:3.11-slim\n", "pyproject.toml": "lithops==3.8.0\n",
                      "README.md": "# x\n", "src/lambdanet/a.py": "A = 1\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    base = _version(root)
    assert _version(root) == base
    # what the image does not hold leaves it alone: caches, other folders, modification times
    (root / "src/lambdanet/__pycache__").mkdir()
    (root / "src/lambdanet/__pycache__/a.cpython-311.pyc").write_bytes(b"\0")
    (root / "tests").mkdir()
    (root / "tests/t.py").write_text("x = 1\n")
    os.utime(root / "src/lambdanet/a.py", (1, 1))
    assert _version(root) == base
    # what it holds changes it
    assert _version(root, "aws,torch") != base
    (root / "src/lambdanet/a.py").write_text("A = 2\n")
    changed = _version(root)
    assert changed != base
    (root / "src/lambdanet/b.py").write_text("")
    assert _version(root) not in (base, changed)
    (root / "src/lambdanet/b.py").unlink()
    (root / "deploy/Dockerfile").write_text("FROM python:3.12-slim\n")
    assert _version(root) not in (base, changed)


# ---- worker log groups and teardown's sweep, run against moto's server ------------------------
def _lithops_backend(monkeypatch: pytest.MonkeyPatch, stack: str) -> Any:
    from lithops.serverless.backends.aws_lambda.aws_lambda import AWSLambdaBackend

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    return AWSLambdaBackend({"user_agent": "lambdanet-test", "region": "eu-west-1",
                             "execution_role": f"arn:aws:iam::{ACCOUNT}:role/r", "namespace": stack,
                             "account_id": ACCOUNT, "user_id": "lnet"}, internal_storage=None)


def _run_printed(line: str, endpoint: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run a ``python3 deploy/…`` line a dry run printed, as printed, against moto's server."""
    argv = shlex.split(line)
    assert argv[0] == "python3", line
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp), "AWS_ENDPOINT_URL": endpoint,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"}
    return subprocess.run([sys.executable, *argv[1:]], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _aws(service: str, endpoint: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def _groups(logs: Any, prefix: str) -> dict[str, int | None]:
    pages = logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=prefix)
    return {g["logGroupName"]: g.get("retentionInDays") for page in pages for g in page["logGroups"]}


def test_every_worker_memory_gets_a_seven_day_log_group(bare_path: str, tmp_path: Path, moto_server: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    stack, memories = "lnet-logs", (2048, 3008, 10240)
    args = [*ALL_FLAGS, "--dry-run"]
    args[args.index("--stack") + 1] = stack
    args[args.index("--worker-memory") + 1] = ",".join(map(str, memories))
    lines = _commands(_run(DEPLOY, args, bare_path, tmp_path).stdout)
    runtime = _runtime(lines)
    backend = _lithops_backend(monkeypatch, stack)
    functions = [backend._format_function_name(runtime, m) for m in memories]  # Lithops' own names
    line = next(line for line in lines if "lithops_workers.py log-groups" in line)
    # the groups come before Lithops creates the functions: one `runtime deploy` per memory, after
    deploys = [i for i, x in enumerate(lines) if x.startswith("lithops runtime deploy ")]
    assert [lines[i].split("--memory ")[1].split()[0] for i in deploys] == [str(m) for m in memories]
    assert lines.index(line) < deploys[0]

    logs = _aws("logs", moto_server)
    logs.create_log_group(logGroupName=f"/aws/lambda/{functions[1]}")  # one made earlier, kept forever
    for _ in range(2):  # a redeploy of the same content runs it again
        proc = _run_printed(line, moto_server, tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert _groups(logs, f"/aws/lambda/{stack}-") == {f"/aws/lambda/{f}": 7 for f in functions}


def test_teardown_deletes_every_worker_function_and_log_group_of_any_version(
        bare_path: str, tmp_path: Path, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = "lnet-sweep"
    backend = _lithops_backend(monkeypatch, stack)
    runtimes = ("lambdanet-runtime:build-0123456789ab", "lambdanet-runtime:build-ba9876543210")
    workers = [backend._format_function_name(r, m) for r in runtimes for m in (2048, 4096)]
    workers.append(backend._format_function_name(runtimes[0], 2048, version="3.7.0"))  # an older Lithops
    others = [f"{stack}-driver", f"{stack}-serve",  # the stack's own (it deletes them itself)
              _lithops_backend(monkeypatch, f"{stack}2")._format_function_name(runtimes[0], 2048),  # another stack
              _lithops_backend(monkeypatch, "other")._format_function_name(runtimes[0], 2048)]
    lam, logs = _aws("lambda", moto_server), _aws("logs", moto_server)
    role = _aws("iam", moto_server).create_role(RoleName=f"{stack}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    for name in workers + others:
        lam.create_function(FunctionName=name, Role=role, PackageType="Image", MemorySize=2048, Timeout=900,
                            Code={"ImageUri": f"{REGISTRY}/{REPO_NAME}@sha256:" + "0" * 64})
        logs.create_log_group(logGroupName=f"/aws/lambda/{name}")
    orphan = backend._format_function_name("lambdanet-runtime:build-cccccccccccc", 2048)
    logs.create_log_group(logGroupName=f"/aws/lambda/{orphan}")  # its function already gone (lithops clean)

    proc = _run(TEARDOWN, ["--region", "eu-west-1", "--stack", stack, "--account-id", ACCOUNT, "--dry-run"],
                bare_path, tmp_path)
    sweep = next(line for line in _commands(proc.stdout) if "lithops_workers.py clean" in line)
    proc = _run_printed(sweep, moto_server, tmp_path)
    assert proc.returncode == 0, proc.stderr
    functions = {f["FunctionName"] for page in lam.get_paginator("list_functions").paginate()
                 for f in page["Functions"]}
    assert not functions & set(workers) and set(others) <= functions
    groups = set(_groups(logs, "/aws/lambda/"))
    assert not groups & {f"/aws/lambda/{n}" for n in [*workers, orphan]}
    assert {f"/aws/lambda/{n}" for n in others} <= groups
    proc = _run_printed(sweep, moto_server, tmp_path)  # teardown again: nothing left, no error
    assert proc.returncode == 0 and "nothing to delete" in proc.stdout, proc.stdout + proc.stderr


# ---- the names Lithops derives: the scripts' formula against the installed Lithops ------------
def _lithops_hash(runtime: str, memory: int, version: str = "3.8.0") -> str:
    import hashlib

    return hashlib.sha1(f"{runtime}-{memory}-{version}".encode()).hexdigest()[:10]


def test_scripts_name_the_worker_function_and_repository_as_lithops_does(monkeypatch: pytest.MonkeyPatch) -> None:
    import lithops
    from lithops.serverless.backends.aws_lambda.aws_lambda import AWSLambdaBackend

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    backend = AWSLambdaBackend({"user_agent": "lambdanet-test", "region": "eu-west-1",
                                "execution_role": f"arn:aws:iam::{ACCOUNT}:role/r", "namespace": "lambdanet-demo",
                                "account_id": ACCOUNT, "user_id": "lnet"}, internal_storage=None)
    script = f"""source {REPO}/deploy/lib.sh; REPO_ROOT={REPO}
        v=$(pinned_lithops_version); echo "$v"
        echo "$(lithops_package lambdanet-demo "$v")/lambdanet-runtime"
        lithops_worker_name lambdanet-demo lambdanet-runtime:v7 3008 "$v"; echo"""
    out = subprocess.run([BASH, "-c", script], capture_output=True, text=True, check=True,
                         stdin=subprocess.DEVNULL).stdout.split()
    assert out[0] == lithops.__version__  # the pin the image installs is the Lithops here
    assert out[1] == backend._format_repo_name("lambdanet-runtime:v7")
    assert out[2] == backend._format_function_name("lambdanet-runtime:v7", 3008)
    assert len(out[2]) <= 64


def test_the_handler_zip_command_builds_what_the_dockerfile_copies(tmp_path: Path) -> None:
    """The dry run's first command (no network): Lithops' handler zip for deploy/Dockerfile."""
    import sys

    code = ("from lithops.serverless.backends.aws_lambda.aws_lambda import AWSLambdaBackend; "
            "AWSLambdaBackend._create_handler_bin(remove=False)")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, timeout=120,
                   stdin=subprocess.DEVNULL)
    names = zipfile.ZipFile(tmp_path / "lithops_lambda.zip").namelist()
    assert "entry_point.py" in names and any(n.startswith("lithops/") for n in names)
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "COPY lithops_lambda.zip" in dockerfile and "mv entry_point.py handler/" in dockerfile


# ---- deploy/empty_bucket.py -------------------------------------------------------------------
def test_empty_bucket_removes_every_version_then_the_bucket(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    import boto3
    from moto import mock_aws

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    spec = importlib.util.spec_from_file_location("empty_bucket", REPO / "deploy" / "empty_bucket.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="lnet-test-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.put_bucket_versioning(Bucket="lnet-test-bucket", VersioningConfiguration={"Status": "Enabled"})
        for body in (b"1", b"2"):
            s3.put_object(Bucket="lnet-test-bucket", Key="training_input/datasets.h5", Body=body)
        s3.delete_object(Bucket="lnet-test-bucket", Key="training_input/datasets.h5")  # a delete marker
        assert module.main(["lnet-test-bucket", "--region", "eu-west-1", "--delete"]) == 0
        assert "removed 3 object versions" in capsys.readouterr().out
        assert "lnet-test-bucket" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert module.main(["lnet-test-bucket", "--region", "eu-west-1", "--delete"]) == 0  # again: nothing to do
        assert "no such bucket" in capsys.readouterr().out


def test_scripts_are_executable_bash_with_strict_mode() -> None:
    for script in (DEPLOY, TEARDOWN):
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in text
        assert os.access(script, os.X_OK)
