"""What the SQLite ledger promises beyond the port: URLs, NaN, errors, processes, speed of a batch."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lambdanet import adapters
from lambdanet.errors import LedgerUnavailable, PortMisuse, UserInputError
from lambdanet.ledgers.sqlite import SqliteLedger
from lambdanet.ports import EpochRow, RunRecord


def _run(run_id: str) -> RunRecord:
    return RunRecord(run_id=run_id, status="running", kind="mlp", config={}, data="d.h5")


def test_opened_through_adapters_creates_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "ledger.db"
    ledger = adapters.open_ledger(f"sqlite:///{path}")
    assert isinstance(ledger, SqliteLedger)
    ledger.create_run(_run("r-1"))
    ledger.close()
    assert path.is_file()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT run_id, status FROM runs").fetchall() == [("r-1", "running")]
    # a closed ledger reopens on the next call
    assert ledger.get_run("r-1").status == "running"


def test_memory_url() -> None:
    ledger = adapters.open_ledger("sqlite:///:memory:")
    ledger.create_run(_run("r-1"))
    assert [r.run_id for r in ledger.list_runs()] == ["r-1"]


def test_nan_and_infinity_survive(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.create_run(_run("r-1"))
    ledger.upsert_epochs("r-1", [EpochRow("r-1", 1, math.nan, 0.1, 0.0), EpochRow("r-1", 2, math.inf, 0.1, 0.0)])
    rows = ledger.epochs("r-1")
    assert math.isnan(rows[0].cost) and rows[1].cost == math.inf


def test_duplicate_run_and_bad_status_are_refused(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.create_run(_run("r-1"))
    with pytest.raises(UserInputError, match="a run 'r-1' is already in the ledger"):
        ledger.create_run(_run("r-1"))
    with pytest.raises(UserInputError, match="unknown run status 'done'"):
        ledger.update_run("r-1", status="done")
    with pytest.raises(PortMisuse, match="colour"):
        ledger.update_run("r-1", colour="red")
    assert ledger.get_run("r-1").status == "running"


def test_unwritable_location_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LedgerUnavailable) as err:
        SqliteLedger.from_url(f"sqlite:///{blocker}/ledger.db")
    msg = str(err.value)
    assert str(blocker) in msg and "disk full or the folder read-only" in msg and "\n" not in msg


def test_not_a_database_is_ledger_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(LedgerUnavailable, match=r"junk\.db"):
        SqliteLedger(path)


def test_bad_urls() -> None:
    with pytest.raises(UserInputError):
        SqliteLedger.from_url("sqlite://")
    with pytest.raises(UserInputError):
        SqliteLedger.from_url("postgres://x/y")


def test_several_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SqliteLedger(path).create_run(_run("r-1"))
    script = textwrap.dedent(f"""
        import sys
        from lambdanet.ledgers.sqlite import SqliteLedger
        from lambdanet.ports import EpochRow
        w = int(sys.argv[1])
        ledger = SqliteLedger({str(path)!r})
        for e in range(w * 50 + 1, w * 50 + 51):
            ledger.upsert_epochs("r-1", [EpochRow("r-1", e, float(e), 0.1, 0.0)])
        print(ledger.claim("once", f"w{{w}}"))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w)], stdout=subprocess.PIPE, text=True)
             for w in range(3)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert sorted(outs) == ["False", "False", "True"]
    rows = SqliteLedger(path).epochs("r-1")
    assert [r.cost for r in rows] == [float(e) for e in range(1, 151)]


def test_fork_reopens_connection(tmp_path: Path) -> None:
    """A forked child must not reuse the parent's connection; it opens its own."""
    import os

    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.create_run(_run("r-1"))
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            ledger.upsert_epochs("r-1", [EpochRow("r-1", 1, 0.5, 0.1, 0.0)])
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ledger.upsert_epochs("r-1", [EpochRow("r-1", 2, 0.4, 0.1, 0.0)])
    assert [r.cost for r in ledger.epochs("r-1")] == [0.5, 0.4]


# ---- read-only mode (runs list/show, report, models list) ----------------------------------------
def _files(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    import hashlib

    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).digest())
            for p in folder.iterdir()}


def _filled(path: Path) -> None:
    from lambdanet.ports import CallRow

    ledger = SqliteLedger(path)
    ledger.create_run(_run("r-1"))
    ledger.upsert_epochs("r-1", [EpochRow("r-1", 1, 0.6, 0.1, 0.0), EpochRow("r-1", 2, math.nan, 0.1, 0.0)])
    ledger.record_calls("r-1", [CallRow("r-1", 1, 0, 0, 1.0, 2.0, True)])
    ledger.claim("s3://b/k", "r-1")
    ledger.close()  # the last connection: checkpoints and removes the -wal/-shm files


def test_read_only_reads_everything_and_writes_nothing(tmp_path: Path) -> None:
    from lambdanet.errors import RunNotFound

    path = tmp_path / "ledger.db"
    _filled(path)
    before = _files(tmp_path)
    assert sorted(before) == ["ledger.db"]
    ledger = adapters.open_ledger(f"sqlite:///{path}?mode=ro")
    assert isinstance(ledger, SqliteLedger) and ledger.read_only and ledger.url.endswith("?mode=ro")
    assert [r.run_id for r in ledger.list_runs()] == ["r-1"] and ledger.get_run("r-1").status == "running"
    rows = ledger.epochs("r-1")
    assert rows[0].cost == 0.6 and math.isnan(rows[1].cost)
    assert [c.worker for c in ledger.calls("r-1")] == [0]
    assert ledger.claimed_by("s3://b/k") == "r-1" and ledger.get_lease("r-1") is None
    with pytest.raises(RunNotFound):
        ledger.get_run("r-2")
    writes = [lambda: ledger.create_run(_run("r-2")), lambda: ledger.update_run("r-1", status="failed"),
              lambda: ledger.upsert_epochs("r-1", [EpochRow("r-1", 3, 0.5, 0.1, 0.0)]),
              lambda: ledger.claim("k2", "r-1"), lambda: ledger.acquire_lease("r-1", "h", "e", 60.0)]
    for write in writes:
        with pytest.raises(LedgerUnavailable, match="open read-only"):
            write()
    ledger.close()
    assert _files(tmp_path) == before  # same bytes, same mtime, no -wal / -shm files
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM epochs").fetchone()[0] == 2


def test_read_only_sees_a_live_writers_commits(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    writer = SqliteLedger(path)
    writer.create_run(_run("r-1"))
    reader = SqliteLedger(path, read_only=True)
    assert [r.run_id for r in reader.list_runs()] == ["r-1"]  # read through the live WAL
    writer.upsert_epochs("r-1", [EpochRow("r-1", 1, 0.6, 0.1, 0.0)])
    writer.create_run(_run("r-2"))
    assert [r.run_id for r in reader.list_runs()] == ["r-2", "r-1"] and len(reader.epochs("r-1")) == 1
    writer.close()
    assert not list(tmp_path.glob("ledger.db-*"))  # the writer still cleans up after a reader
    assert [r.run_id for r in reader.list_runs()] == ["r-2", "r-1"]


def test_read_only_missing_database_is_an_empty_ledger_and_creates_nothing(tmp_path: Path) -> None:
    from lambdanet.errors import RunNotFound

    path = tmp_path / "no" / "such" / "ledger.db"
    ledger = SqliteLedger.from_url(f"sqlite:///{path}?mode=ro")
    assert ledger.list_runs() == [] and ledger.epochs("r-1") == [] and ledger.calls("r-1") == []
    with pytest.raises(RunNotFound, match="no run 'r-1'"):
        ledger.get_run("r-1")
    ledger.close()
    assert not (tmp_path / "no").exists()
    _filled(path)  # the file appears later: the same read-only ledger now reads it
    assert [r.run_id for r in ledger.list_runs()] == ["r-1"]


def test_read_only_urls_and_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lambdanet.services import Services, read_only_ledger_url
    from lambdanet.settings import Settings

    for bad, says in (("sqlite:///x.db?mode=rwc", "use mode=ro (read-only) or mode=rw"),
                      ("sqlite:///x.db?journal=off", "option(s) journal unknown (known: mode)"),
                      ("sqlite:///x.db?mode=ro&mode=rw", "option(s) mode more than once")):
        with pytest.raises(UserInputError) as err:
            SqliteLedger.from_url(bad)
        assert says in str(err.value)
    assert not SqliteLedger.from_url(f"sqlite:///{tmp_path / 'rw.db'}?mode=rw").read_only
    assert read_only_ledger_url("sqlite:///a/b.db") == "sqlite:///a/b.db?mode=ro"
    assert read_only_ledger_url("sqlite:///:memory:") == "sqlite:///:memory:"
    assert read_only_ledger_url("dynamodb://t?region=eu-west-1") == "dynamodb://t?region=eu-west-1"
    home = tmp_path / "home"
    monkeypatch.setenv("LAMBDANET_HOME", str(home))
    monkeypatch.delenv("LAMBDANET_LEDGER", raising=False)
    services = Services.open(Settings.from_env(), read_only=True)
    assert isinstance(services.ledger, SqliteLedger) and services.ledger.read_only
    assert services.ledger.list_runs() == []
    services.close()
    assert not (home / "ledger.db").exists()
