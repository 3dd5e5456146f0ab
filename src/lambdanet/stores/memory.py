"""The in-process tensor store (``memory://`` and ``memory://NAME``) — the embedded default.

Usage::

    store = MemoryStore.from_url("memory://")          # the process-wide default namespace
    other = MemoryStore.from_url("memory://tests-1")   # a separate namespace
    store.put("ln:r:1:0:3:w0", A)                      # keeps a read-only copy (no encoding)
    store.put_shared("ln:r:1:0:4:w0", A)               # keeps a read-only view: A must stay as it is
    store.pop_blocking("ln:r:1:0:3:go", timeout_s=30)  # waits on a threading.Condition

Every client opened with the same URL in one process shares one namespace (arrays, counters,
lists, byte values), guarded by one :class:`threading.Condition`; blocked pops
(``pop_blocking``, and ``pop_first`` over several lists) are woken by ``push``, never by
polling. Arrays are stored as read-only copies and ``get`` returns them without copying
(callers must not write into them). It lives in one process only: the
``process`` and ``lithops`` executors need ``redis://``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Self

import numpy as np

from lambdanet.adapters import parse_url


class _Namespace:
    """The shared state behind every client of one ``memory://NAME``."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.arrays: dict[str, np.ndarray] = {}
        self.counters: dict[str, int] = {}
        self.lists: dict[str, deque[bytes]] = {}
        self.blobs: dict[str, bytes] = {}
        self.expiry: dict[str, float] = {}  # blob key -> time.monotonic() at which it vanishes

    def blob(self, key: str) -> bytes | None:
        """The blob under ``key`` unless it expired (an expired one is dropped); hold ``cond``."""
        until = self.expiry.get(key)
        if until is not None and time.monotonic() >= until:
            self.blobs.pop(key, None)
            del self.expiry[key]
        return self.blobs.get(key)

    def drop(self, key: str) -> int:
        n = 0
        for table in (self.arrays, self.counters, self.lists, self.blobs):
            if table.pop(key, None) is not None:
                n += 1
        self.expiry.pop(key, None)
        return n


_NAMESPACES: dict[str, _Namespace] = {}
_NS_LOCK = threading.Lock()


def _namespace(name: str) -> _Namespace:
    with _NS_LOCK:
        ns = _NAMESPACES.get(name)
        if ns is None:
            ns = _NAMESPACES[name] = _Namespace()
        return ns


class MemoryStore:
    """A :class:`lambdanet.ports.TensorStore` in this process's memory."""

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.url = f"memory://{name}" if name != "default" else "memory://"
        self._ns = _namespace(name)
        self.bytes_in = 0
        self.bytes_out = 0

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = parse_url(url, schemes=("memory",), name="memory store", usage="memory:// or memory://NAME")
        name = (parts.netloc + parts.path).strip("/") or "default"
        return cls(name)

    # ---- arrays ---------------------------------------------------------------------------
    def put(self, key: str, array: np.ndarray) -> None:
        arr = np.array(array, copy=True, order="C")
        arr.flags.writeable = False
        with self._ns.cond:
            self._ns.arrays[key] = arr
        self.bytes_in += arr.nbytes

    def put_shared(self, key: str, array: np.ndarray) -> None:
        """Keep a read-only view of ``array`` itself (the :class:`~lambdanet.ports.tensorstore.SharedPut`
        capability): no copy; the caller must not write into it while it may be read."""
        view = array.view()
        view.flags.writeable = False
        with self._ns.cond:
            self._ns.arrays[key] = view
        self.bytes_in += view.nbytes

    def get(self, key: str) -> np.ndarray:
        with self._ns.cond:
            arr = self._ns.arrays.get(key)
        if arr is None:
            raise KeyError(key)
        self.bytes_out += arr.nbytes
        return arr

    def get_many(self, keys: list[str]) -> list[np.ndarray]:
        with self._ns.cond:
            arrays = [self._ns.arrays.get(k) for k in keys]
        out: list[np.ndarray] = []
        for k, arr in zip(keys, arrays, strict=True):
            if arr is None:
                raise KeyError(k)
            self.bytes_out += arr.nbytes
            out.append(arr)
        return out

    # ---- counters, lists, byte values -----------------------------------------------------
    def incr(self, key: str, amount: int = 1) -> int:
        with self._ns.cond:
            value = self._ns.counters.get(key, 0) + int(amount)
            self._ns.counters[key] = value
        return value

    def push(self, key: str, value: bytes, count: int = 1) -> None:
        with self._ns.cond:
            self._ns.lists.setdefault(key, deque()).extend([bytes(value)] * count)
            self._ns.cond.notify_all()

    def pop_blocking(self, key: str, timeout_s: float) -> bytes | None:
        got = self.pop_first([key], timeout_s)
        return None if got is None else got[1]

    def pop_first(self, keys: list[str], timeout_s: float) -> tuple[str, bytes] | None:
        deadline = time.monotonic() + max(0.0, timeout_s)
        ns = self._ns
        with ns.cond:
            while True:
                for key in keys:  # in the caller's order: the first non-empty list wins
                    items = ns.lists.get(key)
                    if items:
                        value = items.popleft()
                        if not items:
                            del ns.lists[key]
                        return key, value
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                ns.cond.wait(left)  # woken by every push (notify_all)

    def set_if_absent(self, key: str, value: bytes) -> bool:
        with self._ns.cond:
            if self._ns.blob(key) is not None:
                return False
            self._ns.blobs[key] = bytes(value)
        self.bytes_in += len(value)
        return True

    def get_bytes(self, key: str) -> bytes | None:
        return self.get_bytes_many([key])[0]

    def set_expiring(self, key: str, value: bytes, ttl_s: float) -> None:
        with self._ns.cond:
            self._ns.blobs[key] = bytes(value)
            self._ns.expiry[key] = time.monotonic() + max(0.0, ttl_s)
        self.bytes_in += len(value)

    def get_bytes_many(self, keys: list[str]) -> list[bytes | None]:
        with self._ns.cond:
            values = [self._ns.blob(k) for k in keys]
        self.bytes_out += sum(len(v) for v in values if v is not None)
        return values

    def delete_prefix(self, prefix: str) -> int:
        ns = self._ns
        with ns.cond:
            keys = {k for table in (ns.arrays, ns.counters, ns.lists, ns.blobs) for k in table
                    if k.startswith(prefix)}
            for k in keys:
                ns.drop(k)
        return len(keys)

    # ---- fused operations the collectives use when a store offers them -------------------
    def arrive(self, part_key: str, part: np.ndarray | None, counter: str, size: int, release: str,
               token: bytes, delete: list[str]) -> int:
        """Write ``part``, increment ``counter``; the ``size``-th arrival deletes ``delete`` and
        pushes ``size`` tokens to ``release`` — all under the namespace lock."""
        if part is not None:
            self.put(part_key, part)
        ns = self._ns
        with ns.cond:
            n = ns.counters.get(counter, 0) + 1
            ns.counters[counter] = n
            if n == size:
                for k in delete:
                    ns.drop(k)
                ns.lists.setdefault(release, deque()).extend([bytes(token)] * size)
                ns.cond.notify_all()
        return n

    def exchange(self, part_key: str, part: np.ndarray | None, counter: str, size: int, release: str,
                 token: bytes, delete: list[str], timeout_s: float, keys: list[str],
                 abort: str, rank: int) -> tuple[str, list[np.ndarray]] | None:
        """``arrive`` then ``wait_and_get`` (one collective step; see ``FusedExchange``). In one
        process nothing retries an arrival, so a counter suffices (``rank`` is not needed)."""
        self.arrive(part_key, part, counter, size, release, token, delete)
        return self.wait_and_get(release, timeout_s, keys, abort)

    def wait_and_get(self, release: str, timeout_s: float, keys: list[str],
                     abort: str) -> tuple[str, list[np.ndarray]] | None:
        """Pop from ``[abort, release]`` (waiting up to ``timeout_s``); after a release, read ``keys``."""
        got = self.pop_first([abort, release], timeout_s)
        if got is None:
            return None
        return (abort, []) if got[0] == abort else (release, self.get_many(keys))

    def delete_keys(self, keys: list[str]) -> int:
        with self._ns.cond:
            return sum(1 for k in keys if self._ns.drop(k))

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (for tests and leak checks)."""
        ns = self._ns
        with ns.cond:
            return sorted({k for table in (ns.arrays, ns.counters, ns.lists, ns.blobs) for k in table
                           if k.startswith(prefix)})

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"MemoryStore({self.url!r})"
