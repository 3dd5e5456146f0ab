"""The TensorStore port: where workers exchange arrays and synchronise.

Usage::

    store = adapters.open_store("redis://127.0.0.1:6379/0")
    store.put("ln:run1:3:0:17:w0", activations)      # raw bytes + JSON header, never pickle
    n = store.incr("ln:run1:3:0:17:count")           # atomic counter, returns the new value
    store.push("ln:run1:3:0:17:release", b"1")       # append to a list (wakes a blocked pop)
    token = store.pop_blocking("ln:run1:3:0:17:release:w1", timeout_s=30.0)  # None on timeout
    key, token = store.pop_first(["ln:run1:3:0:abort", "ln:run1:3:0:17:go"], 30.0) or ("", b"")
    a = store.get("ln:run1:3:0:17:w0")               # KeyError if absent
    store.delete_prefix("ln:run1:3:0:")               # drop every key of a finished attempt

Waiting is done only through :meth:`pop_blocking` / :meth:`pop_first` (a condition variable in
memory, ``BLPOP`` in Redis), never by sleeping and polling. ``pop_first`` waits on several lists
at once and takes from the first non-empty one in the order given — the collectives wait on an
attempt's abort list *and* a step's release list, abort first, so an abort always wins.

A store may also offer :class:`FusedExchange` (a whole collective step in one round trip:
Redis) and :class:`SharedPut` (keep a reference instead of a copy: the in-process memory
store); the collectives check them with ``isinstance`` and otherwise use the port's primitives.

Arrays cross the store through :mod:`lambdanet.tensors` (``encode``/``decode``).
Implementations count the bytes they move in ``bytes_in``/``bytes_out`` for cost accounting.
Vendor errors become :class:`lambdanet.errors.StoreUnavailable`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class TensorStore(Protocol):
    url: str  # the URL it was opened from, with any password redacted
    bytes_in: int  # bytes written through this client
    bytes_out: int  # bytes read through this client

    def put(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` under ``key`` (overwrites)."""

    def get(self, key: str) -> np.ndarray:
        """Return the array under ``key``; raise ``KeyError`` if there is none."""

    def get_many(self, keys: list[str]) -> list[np.ndarray]:
        """Return the arrays under ``keys`` in order (one round trip where the store allows)."""

    def incr(self, key: str, amount: int = 1) -> int:
        """Atomically add ``amount`` to the integer counter ``key`` (0 if absent); return it."""

    def push(self, key: str, value: bytes, count: int = 1) -> None:
        """Append ``value`` ``count`` times to the list ``key``, waking blocked poppers."""

    def pop_blocking(self, key: str, timeout_s: float) -> bytes | None:
        """Remove and return the first item of list ``key``; wait up to ``timeout_s``; None on timeout."""

    def pop_first(self, keys: list[str], timeout_s: float) -> tuple[str, bytes] | None:
        """Wait up to ``timeout_s`` until any list in ``keys`` has an item; pop it from the FIRST
        non-empty list in ``keys`` order and return ``(key, value)``; None on timeout."""

    def set_if_absent(self, key: str, value: bytes) -> bool:
        """Set ``key`` to ``value`` only if it does not exist; True if this call set it."""

    def get_bytes(self, key: str) -> bytes | None:
        """Return the raw bytes under ``key`` (set by ``set_if_absent`` or ``set_expiring``), or None."""

    def set_expiring(self, key: str, value: bytes, ttl_s: float) -> None:
        """Set ``key`` to ``value`` (overwrites); it vanishes ``ttl_s`` seconds after this call
        unless set again (a heartbeat: see :mod:`lambdanet.engine.liveness`)."""

    def get_bytes_many(self, keys: list[str]) -> list[bytes | None]:
        """The raw bytes under ``keys`` in order (None where absent or expired); one round trip."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key (arrays, counters, lists) starting with ``prefix``; return how many."""

    def close(self) -> None:
        """Release connections."""


@runtime_checkable
class FusedExchange(Protocol):
    """Optional capability: one whole collective step (see :mod:`lambdanet.engine.collectives`)."""

    def exchange(self, part_key: str, part: np.ndarray | None, counter: str, size: int, release: str,
                 token: bytes, delete: list[str], timeout_s: float, keys: list[str],
                 abort: str, rank: int) -> tuple[str, list[np.ndarray]] | None:
        """Write ``part`` under ``part_key`` (None: nothing) and record that ``rank`` arrived at
        ``counter``; the arrival that completes ``size`` ranks deletes ``delete`` and pushes
        ``size`` ``token``s to ``release``. The arrival is idempotent per rank: sent twice (a
        client that retries after a read timeout), it counts once and never pushes twice. Then
        wait up to ``timeout_s`` on ``[abort, release]`` (abort first) and pop one item:
        ``(release, the arrays under keys)`` or ``(abort, [])``; None on timeout."""

    def wait_and_get(self, release: str, timeout_s: float, keys: list[str],
                     abort: str) -> tuple[str, list[np.ndarray]] | None:
        """The second half of ``exchange`` alone (a wait that goes on after a timed-out slice)."""


@runtime_checkable
class SharedPut(Protocol):
    """Optional capability of a store in the caller's own memory: keep a reference, not a copy.

    Usage (the collectives, when the caller holds its part still — see ``hold`` in
    :mod:`lambdanet.engine.collectives`)::

        if isinstance(store, SharedPut):
            store.put_shared(key, part)    # readers get a read-only view of ``part`` itself

    The caller promises not to write into ``array`` while anyone may still read the key; a read
    returns a read-only view of the caller's array, so a later write would show through.
    """

    def put_shared(self, key: str, array: np.ndarray) -> None:
        """Store a read-only view of ``array`` under ``key`` (no copy)."""

