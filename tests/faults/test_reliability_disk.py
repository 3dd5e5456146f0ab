"""A full disk and an unwritable home: one clear error, and what was saved stays intact.

The home lives on a small tmpfs mounted for the test (``mount -t tmpfs -o size=4m``; the suite
runs as root in CI). Where mounting is not allowed, the full disk is simulated by lowering the
driver's ``RLIMIT_FSIZE`` mid-run (writes then fail with EFBIG) and the unwritable home by
``chmod`` (effective for non-root users).

* Full disk mid-run: ``lambdanet train`` is running when the disk fills up; it stops with exit 3
  and one ``error:`` line; the last checkpoint and its pointer are intact and loadable; after
  space is freed, ``lambdanet resume`` finishes with the weights of an undisturbed run and each
  epoch once in the ledger.
* Read-only home: training fails with one line (exit 3); the registered model and checkpoints
  are byte-for-byte unchanged.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.reliability_counts import record
from tests.security.reliability_kit import Job, Outcome, assert_same_run, outcome
from tests.security.seed import LAMBDANET, cli_env

pytestmark = [pytest.mark.slow]
EPOCHS = 40  # rounds of one epoch: the disk fills with many rounds still to go
TALLY: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _record() -> Iterator[None]:
    yield
    record("faults", {f"disk_{k}": v for k, v in sorted(TALLY.items())}
           | {"disk_command": "pytest tests/faults/test_reliability_disk.py"})


class Disk:
    """A small tmpfs (or, where mounting is refused, a plain folder and the fallbacks)."""

    def __init__(self, path: Path, size: str = "4m") -> None:
        self.path = path
        path.mkdir(parents=True)
        self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                      capture_output=True).returncode == 0

    def fill(self) -> Path | None:
        """Write zeros until the disk is full (tmpfs) — returns the filler file (None: the run had
        already filled the disk, so there is no filler to remove)."""
        filler = self.path / "filler"
        chunk = b"\0" * 65536
        try:
            f = open(filler, "wb")  # noqa: SIM115 (closed below; the open itself may find the disk full)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            return None
        with f:
            try:
                while True:
                    f.write(chunk)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        return filler

    def read_only(self, folder: Path) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)
        else:
            for p in [folder, *folder.rglob("*")]:
                p.chmod(p.stat().st_mode & ~0o222)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    d = Disk(tmp_path / "disk")
    yield d
    d.close()


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    j = Job(tmp_path_factory.mktemp("disk-job"), workers=1)
    j.config = {**j.config, "epochs": EPOCHS}
    return j


@pytest.fixture(scope="module")
def reference(job: Job) -> Outcome:
    return job.reference()  # a plain numpy loop (reliability_kit.numpy_reference)


def _pointer(home: Path) -> tuple[str, dict] | None:  # type: ignore[type-arg]
    for p in (home / "objects" / "runs").glob("*/checkpoint.json"):
        try:
            return p.parent.name, json.loads(p.read_text())
        except (ValueError, OSError):
            return None
    return None


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    return errors[0]


def test_disk_full_mid_run_then_resume(disk: Disk, job: Job, reference: Outcome) -> None:
    home = disk.path / "home"
    params = disk.path.parent / "params.json"
    params.write_text(json.dumps(job.config))
    proc = subprocess.Popen([LAMBDANET, "train", str(job.data), "--params", str(params), "--model", "fault",
                             "--epochs-per-round", "1", "--json"], env=cli_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        ptr = _pointer(home)
        if ptr and ptr[1]["epochs_done"] >= 3:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished before the disk could fill"
    if disk.mounted:
        filler: Path | None = disk.fill()
    else:  # no tmpfs: every larger write of the driver now fails with EFBIG
        filler = None
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (512, 512))
    TALLY["full_injected"] += 1
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, (proc.returncode, stderr)
    line = _one_error_line(stderr)
    assert any(w in line for w in ("full", "space", "too large", "File too large")), line
    run_id, pointer = _pointer(home) or ("", {})
    assert run_id and pointer["epochs_done"] < EPOCHS
    from safetensors.numpy import load as st_load

    state = st_load((home / "objects" / pointer["file"]).read_bytes())  # the last checkpoint is intact
    assert state["param.W1"].shape == (job.config["neurons"]["layer1"], 192)
    if filler is not None:
        filler.unlink()
    resumed = subprocess.run([LAMBDANET, "resume", run_id, "--json"], env=cli_env(home), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    services = job.services(home)
    try:
        out = outcome(services, run_id)
    finally:
        services.close()
    assert out.status == "completed" and out.epochs == list(range(1, EPOCHS + 1))
    assert_same_run(out, reference)
    TALLY["full_survived"] += 1


def test_read_only_home(disk: Disk, job: Job) -> None:
    home = disk.path / "home"
    small = {**job.config, "epochs": 2}
    params = disk.path.parent / "params.json"
    params.write_text(json.dumps(small))
    first = subprocess.run([LAMBDANET, "train", str(job.data), "--params", str(params), "--model", "ro", "--json"],
                           env=cli_env(home), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    before = _hashes(home / "objects")
    disk.read_only(home)
    TALLY["read_only_injected"] += 1
    again = subprocess.run([LAMBDANET, "train", str(job.data), "--params", str(params), "--model", "ro"],
                           env=cli_env(home), capture_output=True, text=True, timeout=300)
    assert again.returncode == 3, (again.returncode, again.stderr)
    line = _one_error_line(again.stderr)
    assert "read-only" in line or "permission" in line.lower(), line
    alias = subprocess.run([LAMBDANET, "models", "alias", "ro", "staging", "1"], env=cli_env(home),
                           capture_output=True, text=True, timeout=120)
    assert alias.returncode == 3, (alias.returncode, alias.stderr)
    _one_error_line(alias.stderr)
    assert _hashes(home / "objects") == before
    TALLY["read_only_survived"] += 1


def test_unwritable_fresh_home(disk: Disk, job: Job) -> None:
    home = disk.path / "home"
    home.mkdir()
    disk.read_only(home)
    proc = subprocess.run([LAMBDANET, "train", str(job.data), "--model", "x"], env=cli_env(home),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    _one_error_line(proc.stderr)
    assert os.listdir(home) == []
    TALLY["unwritable_home_injected"] += 1
    TALLY["unwritable_home_survived"] += 1
