"""The SQLite ledger (the embedded default, ``~/.lambdanet/ledger.db``).

Usage::

    ledger = SqliteLedger.from_url("sqlite:///home/me/.lambdanet/ledger.db")   # or sqlite:///:memory:
    ledger.create_run(RunRecord(run_id="r-1", status="running", kind="mlp", config={}, data="x.h5"))
    ledger.upsert_epochs("r-1", rows)          # one transaction for the whole list

Tables: ``runs`` (config/metrics as JSON text), ``epochs`` (PRIMARY KEY (run_id, epoch),
written with ``INSERT … ON CONFLICT DO UPDATE``), ``calls`` (PRIMARY KEY (run_id, round,
attempt, worker)), ``claims`` (PRIMARY KEY key; a claim is ``INSERT OR IGNORE``) and ``leases``
(PRIMARY KEY run_id; read and written inside one ``BEGIN IMMEDIATE`` transaction).

The database runs in WAL mode with ``synchronous=NORMAL`` (a commit costs well under a
millisecond; a power cut can lose the last commits but never corrupts the file) and a busy
timeout, so several processes can share it. One connection per process, guarded by a lock
(threads share it); each call is one transaction. SQLite stores NaN as NULL: NULL floats read
back as NaN, so a diverged cost survives the round trip. sqlite3 errors become
:class:`LedgerUnavailable` with the path and what to check.

**Read-only** (``SqliteLedger(path, read_only=True)``, ``sqlite:///path.db?mode=ro``; what
``runs list``/``runs show``/``report``/``models list`` use): nothing is ever written, created
or pragma'd — no folder, no schema, no WAL switch, no ``-wal``/``-shm`` files — so the
commands work on a read-only home. Each read opens its own connection: ``mode=ro`` when a
``-wal`` file is there (a writer is live, or died: its commits are read through the WAL), else
``mode=ro&immutable=1`` (the file is fully checkpointed; SQLite would otherwise create the WAL
index files even for a read-only connection). A missing database reads as an empty ledger (no
runs yet). Writes raise :class:`LedgerUnavailable`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, unquote

from lambdanet.adapters import parse_url
from lambdanet.errors import (
    LeaseHeld,
    LedgerUnavailable,
    StaleDriver,
    URLError,
    UserInputError,
)
from lambdanet.ledgers import RUN_FIELDS, check_status, check_update, float_or_nan, run_not_found
from lambdanet.ports.ledger import CallRow, EpochRow, Lease, RunRecord, lease_refused

BUSY_TIMEOUT_MS = 30_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, status TEXT NOT NULL, kind TEXT NOT NULL, config TEXT NOT NULL,
    data TEXT NOT NULL, model TEXT, created_at REAL NOT NULL, started_at REAL, ended_at REAL,
    stop_reason TEXT, error TEXT, metrics TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL, epoch INTEGER NOT NULL, cost REAL, learning_rate REAL, seconds REAL,
    extra TEXT NOT NULL, PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS calls (
    run_id TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL, worker INTEGER NOT NULL,
    started_at REAL, ended_at REAL, ok INTEGER NOT NULL, error TEXT,
    PRIMARY KEY (run_id, round, attempt, worker)
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY, run_id TEXT NOT NULL, claimed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY, holder TEXT NOT NULL, execution TEXT NOT NULL,
    generation INTEGER NOT NULL, expires_at REAL NOT NULL
);
"""

RUN_COLUMNS = RUN_FIELDS
_JSON_FIELDS = ("config", "metrics")
_UPSERT_EPOCH = (
    "INSERT INTO epochs (run_id, epoch, cost, learning_rate, seconds, extra) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id, epoch) DO UPDATE SET cost = excluded.cost, "
    "learning_rate = excluded.learning_rate, seconds = excluded.seconds, extra = excluded.extra"
)


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"the run's {what} is not JSON-serialisable: {exc}") from exc


class SqliteLedger:
    """A :class:`lambdanet.ports.Ledger` in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], read_only: bool = False) -> None:
        self.memory = str(path) == ":memory:"
        self.read_only = read_only and not self.memory
        self.path = ":memory:" if self.memory else str(Path(path).expanduser().resolve())
        self.url = f"sqlite:///{self.path}" if not self.memory else "sqlite:///:memory:"
        if self.read_only:
            self.url += "?mode=ro"
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._inherited: list[sqlite3.Connection] = []
        if not self.read_only:
            with self._lock:
                self._connect()

    @classmethod
    def from_url(cls, url: str, read_only: bool = False) -> Self:
        """``sqlite:///abs/path.db``, ``sqlite:///:memory:``, ``sqlite://rel/path.db``; a
        ``?mode=ro`` query (or ``read_only=True``) opens it read-only (``mode=rw``: the default)."""
        parts = parse_url(url, schemes=("sqlite",), name="SQLite", usage="sqlite:///abs/path.db",
                          options=("mode",))
        mode = parts.options.get("mode", "rw")
        if mode not in ("ro", "rw"):
            raise URLError(f"SQLite URL {url!r}: mode={mode} is not a mode; use mode=ro (read-only) or mode=rw")
        path = unquote(parts.netloc + parts.path)
        if path in ("/:memory:", ":memory:"):
            return cls(":memory:")
        if not path or path == "/":
            raise URLError(f"SQLite URL {url!r} has no file path (use sqlite:///abs/path.db)")
        return cls(path, read_only=read_only or mode == "ro")

    # ---- connection ----------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> LedgerUnavailable:
        return LedgerUnavailable(
            f"cannot use the ledger {self.path}: {exc}; is the disk full or the folder read-only?"
        )

    def _connect(self) -> sqlite3.Connection:
        """The connection of this process (re-opened after a fork or close)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:  # inherited across fork: never touch (or close) it here
            self._inherited.append(self._conn)
            self._conn = None
        try:
            if not self.memory:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._set_up(conn)
        except (sqlite3.Error, OSError) as exc:
            raise self._fail(exc) from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the schema. Switching a new file to WAL takes an exclusive lock that
        SQLite does not wait for (no busy handler), so processes opening a fresh ledger together
        retry it for a while instead of failing."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                if not self.memory:
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute("PRAGMA synchronous = NORMAL")
                conn.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _connect_read_only(self) -> sqlite3.Connection:
        """A fresh connection that cannot write anything (see the module docstring): the file
        read-only (through its WAL when one is there, else immutable), or, when there is no
        file, an empty in-memory ledger."""
        try:
            if not os.path.exists(self.path):
                conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                conn.executescript(SCHEMA)  # no runs yet
                return conn
            wal = os.path.exists(f"{self.path}-wal")
            uri = f"file:{quote(self.path)}?mode=ro" + ("" if wal else "&immutable=1")
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA query_only = ON")
            return conn
        except (sqlite3.Error, OSError) as exc:
            raise LedgerUnavailable(f"cannot read the ledger {self.path}: {exc}") from exc

    @contextmanager
    def _read_only_tx(self, write: bool) -> Iterator[sqlite3.Connection]:
        if write:
            raise LedgerUnavailable(f"the ledger {self.path} is open read-only (mode=ro); "
                                    "this command cannot change it")
        conn = self._connect_read_only()
        try:
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"cannot read the ledger {self.path}: {exc}") from exc
        finally:
            conn.close()

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction (``BEGIN IMMEDIATE`` for writes, so read-modify-write is atomic)."""
        if self.read_only:
            with self._read_only_tx(write) as conn:
                yield conn
            return
        with self._lock:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise self._fail(exc) from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # ---- runs ----------------------------------------------------------------------------------
    def create_run(self, run: RunRecord) -> None:
        check_status(run.status)
        values = {name: getattr(run, name) for name in RUN_COLUMNS}
        if not values["created_at"]:
            values["created_at"] = run.created_at = time.time()
        for name in _JSON_FIELDS:
            values[name] = _json(values[name], name)
        cols = ", ".join(RUN_COLUMNS)
        marks = ", ".join("?" for _ in RUN_COLUMNS)
        with self._tx() as conn:
            try:
                conn.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", [values[c] for c in RUN_COLUMNS])
            except sqlite3.IntegrityError as exc:
                raise UserInputError(f"a run '{run.run_id}' is already in the ledger") from exc

    def update_run(self, run_id: str, **fields: Any) -> None:
        check_update(fields)
        with self._tx() as conn:
            row = conn.execute("SELECT metrics FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise run_not_found(run_id)
            values = dict(fields)
            if "metrics" in values:
                merged = json.loads(row[0])
                merged.update(values["metrics"] or {})
                values["metrics"] = merged
            for name in _JSON_FIELDS:
                if name in values:
                    values[name] = _json(values[name], name)
            if values:
                sets = ", ".join(f"{name} = ?" for name in values)
                conn.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", [*values.values(), run_id])

    @staticmethod
    def _run(row: tuple[Any, ...]) -> RunRecord:
        values = dict(zip(RUN_COLUMNS, row, strict=True))
        for name in _JSON_FIELDS:
            values[name] = json.loads(values[name])
        return RunRecord(**values)

    def get_run(self, run_id: str) -> RunRecord:
        with self._tx(write=False) as conn:
            row = conn.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id = ?",
                               (run_id,)).fetchone()
        if row is None:
            raise run_not_found(run_id)
        return self._run(row)

    def list_runs(self, limit: int = 100) -> list[RunRecord]:
        """Newest first (by created_at, then insertion order)."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (int(limit),),
            ).fetchall()
        return [self._run(r) for r in rows]

    # ---- epochs --------------------------------------------------------------------------------
    def upsert_epochs(self, run_id: str, rows: list[EpochRow]) -> None:
        """Write many epoch rows in one transaction; an epoch written again replaces its row."""
        params = [
            (run_id, int(r.epoch), float(r.cost), float(r.learning_rate), float(r.seconds),
             _json(r.extra, "epoch extra"))
            for r in rows
        ]
        if not params:
            return
        with self._tx() as conn:
            conn.executemany(_UPSERT_EPOCH, params)

    def epochs(self, run_id: str) -> list[EpochRow]:
        with self._tx(write=False) as conn:
            rows = conn.execute(
                "SELECT epoch, cost, learning_rate, seconds, extra FROM epochs WHERE run_id = ? ORDER BY epoch",
                (run_id,),
            ).fetchall()
        return [EpochRow(run_id, int(e), float_or_nan(c), float_or_nan(lr), float_or_nan(s), json.loads(x))
                for e, c, lr, s, x in rows]

    def delete_epochs(self, run_id: str, after: int) -> int:
        with self._tx() as conn:
            return int(conn.execute("DELETE FROM epochs WHERE run_id = ? AND epoch > ?",
                                    (run_id, int(after))).rowcount)

    # ---- calls ---------------------------------------------------------------------------------
    def record_calls(self, run_id: str, rows: list[CallRow]) -> None:
        params = [
            (run_id, int(r.round), int(r.attempt), int(r.worker), float(r.started_at), float(r.ended_at),
             int(bool(r.ok)), r.error)
            for r in rows
        ]
        if not params:
            return
        with self._tx() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO calls (run_id, round, attempt, worker, started_at, ended_at, ok, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                params,
            )

    def calls(self, run_id: str) -> list[CallRow]:
        """Ordered by round, attempt, worker."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                "SELECT round, attempt, worker, started_at, ended_at, ok, error FROM calls "
                "WHERE run_id = ? ORDER BY round, attempt, worker",
                (run_id,),
            ).fetchall()
        return [CallRow(run_id, int(rd), int(a), int(w), float_or_nan(s), float_or_nan(e), bool(ok), err)
                for rd, a, w, s, e, ok, err in rows]

    # ---- claims --------------------------------------------------------------------------------
    def claim(self, key: str, run_id: str) -> bool:
        with self._tx() as conn:
            cur = conn.execute("INSERT OR IGNORE INTO claims (key, run_id, claimed_at) VALUES (?, ?, ?)",
                               (key, run_id, time.time()))
            return cur.rowcount == 1

    def claimed_by(self, key: str) -> str | None:
        with self._tx(write=False) as conn:
            row = conn.execute("SELECT run_id FROM claims WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # ---- the run's lease -----------------------------------------------------------------------
    @staticmethod
    def _lease_row(conn: sqlite3.Connection, run_id: str) -> Lease | None:
        row = conn.execute("SELECT holder, execution, generation, expires_at FROM leases WHERE run_id = ?",
                           (run_id,)).fetchone()
        return None if row is None else Lease(run_id, str(row[0]), str(row[1]), int(row[2]), float(row[3]))

    def acquire_lease(self, run_id: str, holder: str, execution: str, ttl_s: float,
                      steal_from: str | None = None) -> Lease:
        with self._tx() as conn:
            now = time.time()
            current = self._lease_row(conn, run_id)
            refused = lease_refused(current, holder, execution, now, steal_from)
            if refused:
                raise LeaseHeld(refused)
            lease = Lease(run_id, holder, execution, (current.generation if current else 0) + 1, now + ttl_s)
            conn.execute("INSERT INTO leases (run_id, holder, execution, generation, expires_at) "
                         "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET holder = excluded.holder, "
                         "execution = excluded.execution, generation = excluded.generation, "
                         "expires_at = excluded.expires_at",
                         (run_id, holder, execution, lease.generation, lease.expires_at))
            return lease

    def renew_lease(self, run_id: str, lease: Lease, ttl_s: float) -> Lease:
        renewed = Lease(run_id, lease.holder, lease.execution, lease.generation, time.time() + ttl_s)
        with self._tx() as conn:
            cur = conn.execute("UPDATE leases SET expires_at = ? WHERE run_id = ? AND holder = ? AND generation = ?",
                               (renewed.expires_at, run_id, lease.holder, lease.generation))
            if cur.rowcount != 1:
                raise StaleDriver(f"run {run_id}: this driver ({lease.holder}) lost its lease to another one")
        return renewed

    def release_lease(self, run_id: str, lease: Lease) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM leases WHERE run_id = ? AND holder = ? AND generation = ?",
                         (run_id, lease.holder, lease.generation))

    def get_lease(self, run_id: str) -> Lease | None:
        with self._tx(write=False) as conn:
            return self._lease_row(conn, run_id)

    def __repr__(self) -> str:
        return f"SqliteLedger({self.url!r})"
