"""Data snapshots stored once per content (``datasets/<sha256>.npz`` + ``runs/<id>/data.json``)
and the clean-up commands (``lambdanet runs delete``, ``lambdanet gc``), on the embedded folder
object store. Byte counts come from the folder itself (every file's size, mtime and inode before
and after), never from the code under test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lambdanet.data.readers import load_dataset
from lambdanet.engine import checkpoints
from lambdanet.engine.driver import Driver, RunResult, TrainRequest
from lambdanet.errors import DataError
from lambdanet.services import Services
from tests.conftest import REPO, RedisServer
from tests.e2e.engine_support import config, max_rel_diff, open_services, reference_run, small_data, weights_of

Files = dict[str, tuple[int, int, int]]  # key -> (size, mtime_ns, inode)


@pytest.fixture(scope="module")
def cats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("cats16"))


@pytest.fixture(scope="module")
def other(cats: Path) -> Path:
    """A second data set: the first 120 training samples of ``cats``."""
    path = cats.parent / "cats16-120.npz"
    with np.load(cats, allow_pickle=False) as z:
        np.savez(path, x=z["x"][:120], y=z["y"][:120], x_test=z["x_test"], y_test=z["y_test"], classes=z["classes"])
    return path


def store_files(services: Services) -> Files:
    """Every file of the folder object store, read from the disk."""
    root = Path(services.objects.url)
    out: Files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            st = (Path(dirpath) / name).stat()
            out[(Path(dirpath) / name).relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def train(services: Services, data: Path, **kw: object) -> RunResult:
    return Driver(services).train(TrainRequest(data=str(data), config=config(epochs=2), workers=2, **kw))  # type: ignore[arg-type]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAMBDANET_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "lambdanet", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO)


def json_lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# ---- one snapshot per content -----------------------------------------------------------------
def test_a_second_run_on_the_same_data_writes_no_data_bytes(home: Path, cats: Path, tmp_path: Path,
                                                             redis_server: RedisServer) -> None:
    services = open_services()
    first = train(services, cats)
    before = store_files(services)
    snapshots = [k for k in before if k.startswith("datasets/")]
    assert len(snapshots) == 1 and not any(k.endswith("data.npz") for k in before)
    with np.load(Path(services.objects.url) / snapshots[0], allow_pickle=False) as z:
        assert np.array_equal(z["x_train"], load_dataset(cats).x_train)

    elsewhere = tmp_path / "copy" / "cats16.npz"  # the same content under another path
    elsewhere.parent.mkdir()
    shutil.copy(cats, elsewhere)
    # worker processes (redis store): each reads the data through the run's reference
    second = train(services, elsewhere, store_url=redis_server.url, executor="process")
    after = store_files(services)

    changed = {k: after[k][0] for k in after if before.get(k) != after[k]}
    assert not [k for k in before if k not in after]  # the first run lost nothing
    assert not [k for k in changed if k.startswith("datasets/")]  # the snapshot: not rewritten, not touched
    data_objects = {k: n for k, n in changed.items()
                    if k.startswith(f"runs/{second.run_id}/") and "checkpoint" not in k}
    reference = f"runs/{second.run_id}/data.json"
    assert list(data_objects) == [reference] and data_objects[reference] < 512  # 0 bytes of data
    ref = json.loads((Path(services.objects.url) / f"runs/{second.run_id}/data.json").read_text())
    assert ref["snapshot"] == snapshots[0] and ref["bytes"] == before[snapshots[0]][0]
    assert ref["source"] == str(elsewhere)
    # the worker processes trained on the right data: the plain single-process reference's weights
    assert max_rel_diff(weights_of(services, second), reference_run(config(epochs=2), cats).params) <= 1e-9
    assert max_rel_diff(weights_of(services, first), weights_of(services, second)) <= 1e-9


def test_two_data_sets_give_two_snapshots(home: Path, cats: Path, other: Path) -> None:
    services = open_services()
    train(services, cats)
    train(services, other)
    root = Path(services.objects.url)
    snapshots = sorted(k for k in store_files(services) if k.startswith("datasets/"))
    assert len(snapshots) == 2
    held = {}
    for key in snapshots:
        with np.load(root / key, allow_pickle=False) as z:
            held[z["x_train"].shape[0]] = z["x_train"]
    assert sorted(held) == [120, 209]
    assert np.array_equal(held[120], load_dataset(other).x_train)
    assert np.array_equal(held[209], load_dataset(cats).x_train)


_READER = """
import json, sys
from lambdanet.engine import checkpoints
from lambdanet.objects.folder import FolderStore
reads = []
class CountingFolder(FolderStore):
    def get(self, key):
        reads.append(key)
        return super().get(key)
store = CountingFolder(sys.argv[1])
a = checkpoints.read_data(store, sys.argv[2])
b = checkpoints.read_data(store, sys.argv[3])
a2 = checkpoints.read_data(store, sys.argv[2])
print(json.dumps({"reads": reads, "shared": a.x_train is b.x_train, "again": a2.x_train is a.x_train,
                  "sources": [a.source, b.source], "m": int(a.x_train.shape[0])}))
"""


def test_a_process_loads_a_snapshot_once_by_its_hash(home: Path, cats: Path, tmp_path: Path) -> None:
    services = open_services()
    elsewhere = tmp_path / "cats-copy.npz"
    shutil.copy(cats, elsewhere)
    ids = [Driver(services).start(TrainRequest(data=str(d), config=config(epochs=2))) for d in (cats, elsewhere)]
    snapshot = json.loads(services.objects.get(checkpoints.data_key(ids[0])))["snapshot"]
    res = subprocess.run([sys.executable, "-c", _READER, services.objects.url, *ids], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    # one read of each run's reference, ONE of the shared snapshot, none the third time
    assert out["reads"] == [f"runs/{ids[0]}/data.json", snapshot, f"runs/{ids[1]}/data.json"]
    assert out["shared"] is True and out["again"] is True and out["m"] == 209
    assert out["sources"] == [str(cats), str(elsewhere)]


def test_references_that_point_elsewhere_and_pickled_snapshots_are_refused(home: Path) -> None:
    services = open_services()
    objects = services.objects
    sha = "ab" * 32
    objects.put("runs/r-elsewhere/data.json", json.dumps(
        {"snapshot": "models/cats/versions/1/weights.safetensors", "sha256": sha, "bytes": 1}).encode())
    with pytest.raises(DataError, match="not a data snapshot"):
        checkpoints.read_data(objects, "r-elsewhere")
    evil = Path(objects.url) / "evil.npz"
    np.savez(evil, x_train=np.array([object()], dtype=object))  # an object array: a pickle inside
    blob = evil.read_bytes()
    objects.put(checkpoints.snapshot_key(sha), blob)
    objects.put("runs/r-evil/data.json", json.dumps(
        {"snapshot": checkpoints.snapshot_key(sha), "sha256": sha, "bytes": len(blob)}).encode())
    with pytest.raises(DataError, match="is not a lambdanet run data file"):
        checkpoints.read_data(objects, "r-evil")


def test_a_run_with_its_own_data_npz_is_still_read(home: Path, cats: Path) -> None:
    """Runs started before snapshots kept ``runs/<id>/data.npz``: they still resume and report."""
    services = open_services()
    ds = load_dataset(cats)
    path = Path(services.objects.url) / "legacy.npz"
    np.savez(path, x_train=ds.x_train, y_train=ds.y_train,
             meta=np.frombuffer(json.dumps({"classes": ds.classes, "source": "old"}).encode(), np.uint8))
    services.objects.put("runs/r-old/data.npz", path.read_bytes())
    got = checkpoints.read_data(services.objects, "r-old")
    assert np.array_equal(got.x_train, ds.x_train) and got.classes == ds.classes and got.x_test is None


# ---- runs delete and gc -----------------------------------------------------------------------
def test_runs_delete_and_gc_remove_exactly_what_they_print(home: Path, cats: Path, other: Path) -> None:
    services = open_services()
    a, b = train(services, cats, model_name="cats"), train(services, cats, model_name="cats")
    c = train(services, other, model_name="fewer")
    running = Driver(services).start(TrainRequest(data=str(other), config=config(epochs=2)))  # never driven
    models = {k: v for k, v in store_files(services).items() if k.startswith("models/")}
    assert models  # three registered versions
    snap = {r: json.loads(services.objects.get(checkpoints.data_key(r)))["snapshot"]
            for r in (a.run_id, c.run_id)}

    # a running run: one line, exit 2, nothing removed
    before = store_files(services)
    refused = cli(home, "runs", "delete", running, "--yes")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"error: run {running} is running")
    assert store_files(services) == before

    # the dry run names run a's objects only (its snapshot is b's too) and removes nothing
    dry = cli(home, "runs", "delete", a.run_id, "--json")
    assert dry.returncode == 0, dry.stderr
    listed = json_lines(dry.stdout)
    mine = {k for k in before if k.startswith(f"runs/{a.run_id}/")}
    assert {str(r["key"]) for r in listed} == mine and not any(r["removed"] for r in listed)
    assert sum(int(str(r["bytes"])) for r in listed) == sum(before[k][0] for k in mine)
    assert "Dry run: nothing was removed" in dry.stderr
    assert store_files(services) == before
    text = cli(home, "runs", "delete", a.run_id)
    total = sum(before[k][0] for k in mine)
    assert f"would remove run {a.run_id} (completed): {len(mine)} objects, {total:,} bytes" in text.stdout

    done = cli(home, "runs", "delete", a.run_id, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    after = store_files(services)
    assert {str(r["key"]) for r in json_lines(done.stdout)} == set(before) - set(after) == mine
    assert all(after[k] == before[k] for k in after)

    # gc: the objects of b and c (finished), and cats' snapshot (b was the last run on it); other's
    # snapshot stays: the running run uses it
    before = after
    dry_gc = cli(home, "gc", "--json")
    assert dry_gc.returncode == 0, dry_gc.stderr
    assert store_files(services) == before
    expect = {k for k in before if k.startswith((f"runs/{b.run_id}/", f"runs/{c.run_id}/"))} | {snap[a.run_id]}
    assert {str(r["key"]) for r in json_lines(dry_gc.stdout)} == expect
    gc = cli(home, "gc", "--yes", "--json")
    assert gc.returncode == 0, gc.stderr
    after = store_files(services)
    assert {str(r["key"]) for r in json_lines(gc.stdout)} == set(before) - set(after) == expect
    assert all(after[k] == before[k] for k in after)
    assert snap[c.run_id] in after and {k for k in after if k.startswith(f"runs/{running}/")}
    again = cli(home, "gc", "--yes", "--json")
    assert again.returncode == 0 and again.stdout == "" and store_files(services) == after

    # registered model versions and the ledger's rows stay; the commands that read them still work
    assert {k: v for k, v in store_files(services).items() if k.startswith("models/")} == models
    assert services.registry.load(str(a.model)).weights
    listed_runs = cli(home, "runs", "list", "--json")
    assert listed_runs.returncode == 0 and all(r in listed_runs.stdout for r in (a.run_id, b.run_id, c.run_id))
    shown = cli(home, "runs", "show", a.run_id)
    assert shown.returncode == 0 and "completed" in shown.stdout
    report = cli(home, "report", a.run_id, "--out", str(home / "a.html"))
    assert report.returncode == 0, report.stderr
    assert (home / "a.html").stat().st_size > 0
