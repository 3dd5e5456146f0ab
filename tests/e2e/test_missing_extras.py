"""A base install (``pip install lambdanet`` without extras): every command that needs an extra
answers with one line naming the extra and its ``pip install``, exit 2 — never a traceback.

A missing package is simulated the way the import machinery sees one that is not installed:
``sys.modules[name] = None`` makes ``import name`` raise ModuleNotFoundError (with ``name``
set), in a child process that then runs the CLI. The packages blocked for an extra are read from
pyproject.toml: every importable package of every requirement of that extra."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lambdanet.cli.main import EXTRA_OF
from tests.conftest import CATVNONCAT, REPO

DATA = str(CATVNONCAT / "datasets.h5")
EXTRAS = {name: reqs for name, reqs in
          tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"].items()
          if name not in ("all", "test")}

# child: block the packages named in argv[1], then run the CLI with the rest of argv
WRAPPER = ("import sys\n"
           "for name in filter(None, sys.argv[1].split(',')):\n"
           "    sys.modules[name] = None\n"
           "sys.argv = ['lambdanet', *sys.argv[2:]]\n"
           "from lambdanet.cli.main import main\n"
           "main()\n")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def import_names(extra: str) -> set[str]:
    """The top-level packages the requirements of ``extra`` install (as installed here)."""
    provided: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            provided.setdefault(_normal(dist), set()).add(module)
    names: set[str] = set()
    for requirement in EXTRAS[extra]:
        dist = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]
        names |= {m for m in provided.get(_normal(dist), set()) if not m.startswith("_")}
    return names


def expected_pip_install(extra: str) -> str:
    """What the message must end with: ``pip install 'lambdanet[extra]'``, or for this checkout's
    install from a folder (``pip install -e .``), the command run from that folder."""
    raw = importlib.metadata.distribution("lambdanet").read_text("direct_url.json")
    origin = json.loads(raw) if raw else {}
    if str(origin.get("url", "")).startswith("file://"):
        folder = origin["url"].removeprefix("file://")
        return f"pip install {'-e ' if origin['dir_info'].get('editable') else ''}'{folder}[{extra}]'"
    return f"pip install 'lambdanet[{extra}]'"


def test_the_install_command_works_for_this_install() -> None:
    """This checkout is installed with ``pip install -e .`` (README, scripts/test.sh): the message
    names that folder, since 'lambdanet' is not a name on the package index."""
    assert expected_pip_install("serve") == f"pip install -e '{REPO}[serve]'"


def run_without(blocked: set[str], *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAMBDANET_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-c", WRAPPER, ",".join(sorted(blocked)), *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=home)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("extras")
    (folder / "space.json").write_text(json.dumps({"learning_rate": {"log_uniform": [0.001, 0.1]}}))
    (folder / "cnn.json").write_text(json.dumps({"model": "lenet", "epochs": 1}))
    return folder


# extra -> a command of the tour that needs it (relative paths: in the fixture's folder)
COMMANDS = {
    "serve": ["serve", "--port", "0"],
    "tune": ["tune", DATA, "--space", "space.json", "--trials", "1"],
    "torch": ["train", DATA, "--params", "cnn.json"],
    "redis": ["train", DATA, "--store", "redis://127.0.0.1:1/0", "--epochs", "1"],
    "lithops": ["train", DATA, "--executor", "lithops", "--epochs", "1"],
    "aws": ["watch", "s3://bucket", "--once"],
}


def test_every_extra_has_a_command_here() -> None:
    assert set(COMMANDS) == set(EXTRAS)


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_every_package_of_an_extra_is_known_to_the_cli(extra: str) -> None:
    names = import_names(extra)
    assert names, f"none of the '{extra}' extra's packages is installed here"
    assert {name: EXTRA_OF.get(name) for name in names} == dict.fromkeys(names, extra)


@pytest.mark.parametrize("extra", sorted(COMMANDS))
def test_a_command_without_its_extra_is_one_line_naming_it(extra: str, files: Path) -> None:
    args = COMMANDS[extra]
    res = run_without(import_names(extra), *args, home=files)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr[-2000:]
    line = lines[0]
    assert line.startswith(f"error: 'lambdanet {args[0]}' needs ")
    assert f"'{extra}' extra" in line or f"[{extra}]" in line
    assert line.endswith(expected_pip_install(extra)), line
    assert "serving on" not in res.stdout + res.stderr


def test_help_works_with_no_extra_installed(files: Path) -> None:
    blocked = set().union(*(import_names(extra) for extra in EXTRAS))
    res = run_without(blocked, "--help", home=files)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "serve" in res.stdout and "tune" in res.stdout
    res = run_without(blocked, "train", "--help", home=files)
    assert res.returncode == 0 and "Usage: lambdanet train" in res.stdout, res.stderr[-2000:]
