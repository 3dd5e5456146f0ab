"""What ``--model NAME`` means, end to end through the CLI: the ``production`` alias when it exists,
else the newest version registered by ``train`` (or ``watch``) — never a ``lambdanet tune`` trial,
even when the trials registered after it — and ``lambdanet serve`` says at start-up which version
each name resolves to.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lambdanet.registry import TRIAL_KEY
from lambdanet.services import Services
from lambdanet.settings import Settings
from tests.conftest import IMAGES, REPO
from tests.e2e.test_tune import BASE, SPACE, cli, last_json, tiny_h5
from tests.support.serving import free_port

NAME = "tinycat"


def _predicted_version(home: Path, ref: str) -> str:
    out = cli(home, "predict", str(IMAGES / "grumpy_cat.jpeg"), "--model", ref, "--json")
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout.splitlines()[0])["model"])


def _serve_line(home: Path, name: str, timeout_s: float = 90.0) -> str:
    """``lambdanet serve``'s start-up line about ``name`` (its stderr, until the server is up)."""
    env = {**os.environ, "LAMBDANET_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "lambdanet", "serve", "--port", str(free_port())],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            seen.append(line)
            if f"model {name} " in line:
                return line.strip()
            if "Application startup complete" in line:
                break
        raise AssertionError(f"serve said nothing about {name}:\n{''.join(seen)}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.timeout(400)
def test_a_bare_name_means_the_trained_version_never_a_tune_trial(tmp_path: Path, home: Path) -> None:
    data = tiny_h5(tmp_path / "tiny" / "datasets.h5")
    base, space = tmp_path / "base.json", tmp_path / "space.json"
    base.write_text(json.dumps(BASE))
    space.write_text(json.dumps(SPACE))

    trained = cli(home, "train", str(data), "--params", str(base), "--model", NAME, "--json")
    assert trained.returncode == 0, trained.stderr
    train_model = last_json(trained.stdout)["model"]
    assert train_model == f"{NAME}:1"

    # a study registers its trials' versions after it (2, 3, 4): newer, and not what NAME means
    tuned = cli(home, "tune", str(data), "--params", str(base), "--space", str(space), "--study", "resolve",
                "--trials", "3", "--epochs-per-round", "10", "--pruner", "none", "--model", NAME, "--json")
    assert tuned.returncode == 0, tuned.stderr
    staged = last_json(tuned.stdout)["model"]
    services = Services.open(Settings.from_env())
    try:
        registry = services.registry
        assert registry.versions(NAME) == [1, 2, 3, 4]
        for version in (2, 3, 4):  # every trial's version says so; the trained one does not
            assert registry.metadata(NAME, version)[TRIAL_KEY]["study"] == "resolve"
        assert TRIAL_KEY not in registry.metadata(NAME, 1)
        assert f"{NAME}:{registry.aliases(NAME)['staging']}" == staged and staged != train_model
        assert registry.default_version(NAME) == (1, "newest version not from a tune trial")
    finally:
        services.close()

    assert _predicted_version(home, NAME) == train_model
    assert _predicted_version(home, f"{NAME}@staging") == staged  # the study's best, by its alias
    assert _predicted_version(home, f"{NAME}@latest") == f"{NAME}:4"  # the newest whatever made it
    assert _serve_line(home, NAME).endswith(f"model {NAME} -> {train_model} (newest version not from a tune trial)")

    # a human promotes the study's best: now NAME means production, in predict and in serve
    promoted = cli(home, "models", "promote", NAME, "--from", "staging", "--to", "production")
    assert promoted.returncode == 0, promoted.stderr
    assert _predicted_version(home, NAME) == staged
    assert _serve_line(home, NAME).endswith(f"model {NAME} -> {staged} (production alias)")
