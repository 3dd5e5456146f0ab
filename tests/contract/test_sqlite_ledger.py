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
from lambdanet.errors import LedgerUnavailable, UserInputError
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
    with pytest.raises(TypeError, match="colour"):
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
