"""The CLI through its entry point (``python -m lambdanet``), with embedded defaults only."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors.numpy import load as st_load

from tests.conftest import CATVNONCAT, IMAGES, REPO

DATA = CATVNONCAT / "datasets.h5"
PARAMS = REPO / "examples" / "itsacat" / "parameters.json"


def cli(home: Path, *args: str, timeout: float = 300,
        env_extra: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m lambdanet ARGS`` with LAMBDANET_HOME=home; ``env_extra`` sets (or, with None,
    removes) further variables."""
    env = {**os.environ, "LAMBDANET_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    for key, value in (env_extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "-m", "lambdanet", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def last_json(stdout: str) -> object:
    return json.loads(stdout.strip().splitlines()[-1])


def json_lines(stdout: str) -> list[dict]:
    """A list printed by ``--json``: one JSON object per stdout line."""
    objects = [json.loads(line) for line in stdout.splitlines()]
    assert all(isinstance(o, dict) for o in objects), stdout[:500]
    return objects


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    home = tmp_path_factory.mktemp("cli-home")
    res = cli(home, "train", str(DATA), "--params", str(PARAMS), "--batch-size", "209", "--epochs", "300",
              "--seed", "1", "--json")
    assert res.returncode == 0, res.stderr
    return home, last_json(res.stdout)  # type: ignore[return-value]


def test_train_json_line(trained: tuple[Path, dict]) -> None:
    _, out = trained
    for key in ("run_id", "status", "epochs_run", "final_cost", "train_accuracy", "test_accuracy", "wall_seconds",
                "model", "workers", "strategy", "rounds", "retries", "store_bytes", "estimated_cost_usd"):
        assert key in out, key
    assert out["status"] == "completed" and out["epochs_run"] == 300
    assert out["model"] == "catvnoncat:1"
    assert 0.0 < out["final_cost"] < 0.69  # it learned something from ln(2) at the start
    assert out["train_accuracy"] > 0.75
    assert out["workers"] == 1


def test_runs_list_and_show(trained: tuple[Path, dict]) -> None:
    home, out = trained
    res = cli(home, "runs", "list", "--json")
    assert res.returncode == 0, res.stderr
    runs = json_lines(res.stdout)
    assert [r["run_id"] for r in runs] == [out["run_id"]]
    assert runs[0]["status"] == "completed"
    res = cli(home, "runs", "show", out["run_id"], "--json")
    shown = last_json(res.stdout)
    # train's options left at their defaults: the engine's, as documented (docs/configuration.md)
    engine = shown["run"]["config"]["engine"]  # type: ignore[index]
    assert (engine["round_seconds"], engine["max_retries"], engine["checkpoint_seconds"]) == (300.0, 3, 1.0)
    assert engine["strategy"] == "neuron"
    epochs = shown["epochs"]  # type: ignore[index]
    assert [e["epoch"] for e in epochs] == list(range(1, 301))
    assert epochs[-1]["cost"] == pytest.approx(out["final_cost"], rel=1e-6)
    assert epochs[0]["cost"] > epochs[-1]["cost"]
    res = cli(home, "runs", "show", out["run_id"])
    assert res.returncode == 0 and "epoch" in res.stdout and out["run_id"] in res.stdout


def test_runs_list_in_80_columns_and_in_a_pipe_never_truncates(trained: tuple[Path, dict]) -> None:
    """``runs list`` / ``models list`` in an 80-column terminal (COLUMNS=80) and in a pipe with no
    COLUMNS: the full run id, the run's epochs (metrics["epochs_done"]), no ellipsis, no line wider
    than the terminal."""
    home, out = trained
    for columns in ("80", None):
        res = cli(home, "runs", "list", env_extra={"COLUMNS": columns})
        assert res.returncode == 0, res.stderr
        assert out["run_id"] in res.stdout, f"COLUMNS={columns}: run id truncated:\n{res.stdout}"
        assert "…" not in res.stdout, res.stdout
        row = next(line for line in res.stdout.splitlines() if out["run_id"] in line)
        assert "completed" in row.split() and "300" in row.split(), f"epochs missing from the row: {row!r}"
        assert "catvnoncat:1" in res.stdout
        if columns == "80":
            assert max(len(line) for line in res.stdout.splitlines()) <= 80, res.stdout
        res = cli(home, "models", "list", env_extra={"COLUMNS": columns})
        assert res.returncode == 0, res.stderr
        assert "catvnoncat" in res.stdout and "…" not in res.stdout, res.stdout
    narrow = cli(home, "runs", "list", env_extra={"COLUMNS": "40"})  # narrower than the id: folded, never cut
    assert narrow.returncode == 0 and "…" not in narrow.stdout
    assert out["run_id"] in narrow.stdout.replace(" ", "").replace("\n", ""), narrow.stdout


def test_list_and_show_json_is_one_object_per_line(trained: tuple[Path, dict]) -> None:
    """``--json`` on ``runs list``, ``runs show`` and ``models list``: every stdout line is one JSON
    object, however narrow the terminal (``models list``: one line per model)."""
    home, out = trained
    for args in (("runs", "list", "--json"), ("runs", "show", out["run_id"], "--json"), ("models", "list", "--json")):
        res = cli(home, *args, env_extra={"COLUMNS": "40"})
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        assert len(lines) == 1, (args, res.stdout[:500])
        assert all(isinstance(json.loads(line), dict) for line in lines)
    (model,) = json_lines(cli(home, "models", "list", "--json").stdout)
    assert (model["name"], model["versions"], model["kind"]) == ("catvnoncat", [1], "mlp")
    listed = json_lines(cli(home, "runs", "list", "--json").stdout)
    assert [(r["run_id"], r["metrics"]["epochs_done"]) for r in listed] == [(out["run_id"], 300)]


def test_models_list_export_and_predict(trained: tuple[Path, dict], tmp_path: Path) -> None:
    home, _ = trained
    res = cli(home, "models", "list", "--json")
    models = json_lines(res.stdout)
    assert models[0]["name"] == "catvnoncat" and models[0]["versions"] == [1]
    out = tmp_path / "params.h5"
    res = cli(home, "models", "export", "catvnoncat:1", str(out), "--format", "itsacat-h5")
    assert res.returncode == 0, res.stderr
    weights = st_load((home / "objects" / "models" / "catvnoncat" / "versions" / "1" / "weights.safetensors")
                      .read_bytes())
    with h5py.File(out) as f:
        assert sorted(f.keys()) == ["W1", "W2", "W3", "W4", "b1", "b2", "b3", "b4"]
        np.testing.assert_array_equal(f["W1"][()], weights["W1"])
        assert f["W1"].shape == (20, 12288)
    res = cli(home, "predict", str(IMAGES / "grumpy_cat.jpeg"), str(IMAGES / "my_image.jpeg"),
              "--model", "catvnoncat", "--json")
    assert res.returncode == 0, res.stderr
    preds = json_lines(res.stdout)  # one object per image, in order
    assert [Path(p["image"]).name for p in preds] == ["grumpy_cat.jpeg", "my_image.jpeg"]
    for p in preds:
        assert p["label"] in ("cat", "non-cat")
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)
        assert p["probability"] == max(p["probabilities"].values())


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, mtime in ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _read_only_home_runner(home: Path) -> list[str]:
    """A command prefix that runs with ``home`` read-only for real: a private mount namespace with
    ``home`` bind-mounted read-only over itself (root ignores file modes), else ``chmod a-w``."""
    import shutil

    if os.geteuid() != 0:
        for p in [home, *home.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        return []
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: cannot make the home read-only")
    prefix = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(home)]
    probe = subprocess.run([*prefix, "touch", str(home / "probe")], capture_output=True, text=True)
    if probe.returncode == 0 or "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot mount the home read-only here: {probe.stderr.strip()}")
    return prefix


READ_ONLY_COMMANDS = [["runs", "list"], ["runs", "list", "--json"], ["runs", "show", "{run}"],
                      ["runs", "show", "{run}", "--json"], ["models", "list"], ["models", "list", "--json"],
                      ["predict", str(IMAGES / "grumpy_cat.jpeg"), "--model", "catvnoncat"]]
REPORT_COMMANDS = [["report", "{run}", "--out", "{out}/r.html"], ["report", "latest", "--out", "{out}/latest.html"],
                   ["report", "latest", "--json"]]


def _assert_read_only(trained: tuple[Path, dict], tmp_path: Path, commands: list[list[str]]) -> None:
    """``commands`` on a READ-ONLY copy of the trained home (a read-only bind mount, or chmod
    a-w when not root) exit 0 and leave every file of the home as it was: ledger.db's size and
    mtime unchanged, no -wal/-shm files created."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(trained[0], home)
    run_id = trained[1]["run_id"]
    assert not list(home.glob("ledger.db-*")), "the trained run left WAL files behind"
    before = _snapshot(home)
    prefix = _read_only_home_runner(home)
    env = {**os.environ, "LAMBDANET_HOME": str(home), "PYTHONPATH": str(REPO / "src"), "COLUMNS": "120"}
    out = tmp_path / "out"
    out.mkdir()
    try:
        for template in commands:
            args = [a.format(run=run_id, out=out) for a in template]
            res = subprocess.run([*prefix, sys.executable, "-m", "lambdanet", *args], capture_output=True, text=True,
                                 env=env, timeout=300, cwd=REPO)
            assert res.returncode == 0, (args, res.returncode, res.stderr)
            assert run_id in res.stdout or "catvnoncat" in res.stdout, (args, res.stdout)
    finally:
        for p in [home, *home.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert _snapshot(home) == before


def test_read_only_commands_never_write_the_ledger(trained: tuple[Path, dict], tmp_path: Path) -> None:
    _assert_read_only(trained, tmp_path, READ_ONLY_COMMANDS)


def test_report_never_writes_the_ledger(trained: tuple[Path, dict], tmp_path: Path) -> None:
    _assert_read_only(trained, tmp_path, REPORT_COMMANDS)


def test_read_only_commands_on_an_empty_home_say_no_runs_and_create_no_ledger(tmp_path: Path) -> None:
    home = tmp_path / "never-used"
    res = cli(home, "runs", "list", "--json")
    assert res.returncode == 0 and res.stdout == "", res.stderr  # no runs: no lines
    res = cli(home, "runs", "list")
    assert res.returncode == 0, res.stderr
    res = cli(home, "models", "list", "--json")
    assert res.returncode == 0 and res.stdout == "", res.stderr  # no models: no lines
    res = cli(home, "runs", "show", "r-nope")
    assert res.returncode == 2 and "no run 'r-nope'" in res.stderr
    assert not list(home.glob("ledger.db*")), sorted(home.rglob("*"))


def test_report_on_an_empty_home_creates_no_ledger(tmp_path: Path) -> None:
    home = tmp_path / "never-used"
    res = cli(home, "report", "latest", "--out", str(tmp_path / "r.html"))
    assert res.returncode == 2 and "no runs yet" in res.stderr, res.stderr
    assert not list(home.glob("ledger.db*")), sorted(home.rglob("*"))


@pytest.mark.parametrize(("corrupt", "needle"), [
    (lambda meta: b"{truncated", "model.json is not valid JSON"),
    (lambda meta: json.dumps({k: v for k, v in meta.items() if k != "architecture"}).encode(), "architecture"),
    (lambda meta: json.dumps({**meta, "input_shape": [64, 64]}).encode(), "input_shape"),
])
def test_predict_with_a_corrupt_model_version_is_one_error_line(
        trained: tuple[Path, dict], tmp_path: Path, corrupt: object, needle: str) -> None:
    """A registered version whose model.json is broken is the server side's fault: exit 3 with one
    ``error:`` line naming the version and the problem (never "no model", never a traceback)."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(trained[0], home)  # the real trained run's home; the module's copy stays intact
    path = home / "objects" / "models" / "catvnoncat" / "versions" / "1" / "model.json"
    path.write_bytes(corrupt(json.loads(path.read_text())))  # type: ignore[operator]
    res = cli(home, "predict", str(IMAGES / "grumpy_cat.jpeg"), "--model", "catvnoncat:1")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 3, (res.returncode, res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    assert "catvnoncat:1" in lines[0] and needle in lines[0] and "no model" not in lines[0], lines[0]
    unknown = cli(home, "predict", str(IMAGES / "grumpy_cat.jpeg"), "--model", "catvnoncat:9")
    assert unknown.returncode == 2 and "no version 9" in unknown.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "nope.h5"], "nope.h5"),
        (["train", str(DATA), "--params", "missing.json"], "missing.json: no such file"),
        (["train", str(DATA), "--store", "ftp://x"], "unknown store scheme 'ftp' (known: memory://, redis://, rediss://)"),
        (["train", str(DATA), "--strategy", "pipeline"],
         "--strategy: unknown strategy 'pipeline' (allowed: data, neuron)"),
        (["train", str(DATA), "--round-seconds", "0"], "--round-seconds must be a positive number of seconds"),
        (["train", str(DATA), "--cpu-threads", "0"], "--cpu-threads must be at least 1, got 0"),
        (["train", str(DATA), "--workers", "0"], "--workers must be at least 1, got 0"),
        (["train", str(DATA), "--strategy", "neuron", "--sync-every", "2"],
         "the neuron strategy takes no data-strategy option (got sync_every=2)"),
        (["train", str(DATA), "--strategy", "neuron", "--compress", "fp16", "--epochs", "1"],
         "the neuron strategy takes no data-strategy option (got compress=fp16)"),
        (["runs", "show", "r-does-not-exist"], "r-does-not-exist"),
        (["predict", str(IMAGES / "grumpy_cat.jpeg"), "--model", "nomodel"], "nomodel"),
        (["models", "export", "x", "out.h5", "--format", "onnx"], "--format: unknown format 'onnx'"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    res = cli(tmp_path / "home", *args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in res.stderr


def test_strategy_the_registry_lacks_for_the_config_kind_is_one_line(tmp_path: Path) -> None:
    """``neuron`` is an MLP strategy: with a CNN config it is refused before any data is read,
    naming the CNN strategies the registry has."""
    cnn = tmp_path / "cnn.json"
    cnn.write_text(json.dumps({"model": "lenet", "epochs": 1}))
    res = cli(tmp_path / "home", "train", str(tmp_path / "not-read.npz"), "--params", str(cnn), "--strategy", "neuron")
    assert res.returncode == 2, (res.stdout, res.stderr)
    (line,) = res.stderr.strip().splitlines()
    assert line == "error: --strategy: unknown strategy 'neuron' for a cnn model (allowed: data)"
    assert not (tmp_path / "home" / "ledger.db").exists()  # no run was created


def test_the_config_device_is_kept_without_device_flag(tmp_path: Path) -> None:
    """A CNN config's own ``"device": "cuda"`` is what the run uses when ``--device`` is not given
    (the CLI once overwrote it with its own "cpu" default): on a machine without CUDA that is the
    one-line CUDA error, exit 2."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    np.savez(data, x=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), y=np.arange(8) % 2)
    cnn = tmp_path / "cnn.json"
    cnn.write_text(json.dumps({"model": "lenet", "epochs": 1, "batch_size": 4, "device": "cuda"}))
    res = cli(tmp_path / "home", "train", str(data), "--params", str(cnn))
    assert res.returncode == 2, (res.stdout, res.stderr)
    (line,) = res.stderr.strip().splitlines()
    assert "--device cuda: CUDA is not available" in line


def test_bad_params_message(tmp_path: Path) -> None:
    p = tmp_path / "parameters.json"
    p.write_text(json.dumps({**json.loads(PARAMS.read_text()), "learning_rate": -1}))
    res = cli(tmp_path / "home", "train", str(DATA), "--params", str(p))
    assert res.returncode == 2
    assert res.stderr.strip() == "error: parameters.json: learning_rate: Input should be greater than 0 (got -1)"


def test_ctrl_c_marks_run_interrupted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "LAMBDANET_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lambdanet", "train", str(DATA), "--batch-size", "209", "--epochs", "100000",
         "--epochs-per-round", "20", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    db = home / "ledger.db"
    deadline = time.monotonic() + 120
    epochs = 0
    while time.monotonic() < deadline and epochs == 0:  # wait until some epochs are recorded
        time.sleep(0.2)
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    epochs = conn.execute("select count(*) from epochs").fetchone()[0]
            except sqlite3.Error:
                pass
    assert epochs > 0, "the run never recorded an epoch"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    res = cli(home, "runs", "list", "--json")
    runs = json_lines(res.stdout)
    assert runs[0]["status"] == "interrupted"
