"""The Redis tensor store (``redis://`` and ``rediss://``) — for process and cloud workers.

Usage::

    store = RedisStore.from_url("redis://127.0.0.1:6379/0")
    store = RedisStore.from_url("rediss://:secret@cache.example.com:6380/0?ssl_cert_reqs=none")
    store = RedisStore.from_url("rediss://…?ssl_ca_certs=/etc/ssl/ca.pem")

Arrays are stored as :mod:`lambdanet.tensors` blobs (raw bytes + JSON header, never pickle).
``pop_blocking`` is ``BLPOP``, ``pop_first`` one ``BLPOP`` over several lists (Redis serves the
first non-empty one in the order given), ``incr`` is ``INCRBY``, ``set_if_absent`` is ``SET NX``,
``get_many`` is one ``MGET``, ``delete_prefix`` is ``SCAN MATCH`` + ``UNLINK``. For the
collectives, ``exchange`` (:class:`lambdanet.ports.tensorstore.FusedExchange`) sends a Lua
script (SET part, INCR, and for the last arrival UNLINK + RPUSH of the release tokens),
``BLPOP [abort, release]`` and ``MGET`` in one pipeline: a collective step is ONE
round trip (``arrive`` / ``wait_and_get`` are its two halves). Any
connection or protocol error becomes :class:`StoreUnavailable` naming the URL with its password
redacted. Query options (``ssl_cert_reqs``, ``ssl_ca_certs``, ``socket_connect_timeout``, …) are
passed to redis-py. A dropped connection is retried twice within ~0.3 s, then reported.

Waits and retries. redis-py reads every reply with a socket timeout (``SOCKET_TIMEOUT_S``) and, on
a timeout, sends the command again (its ``Retry``) — for a pipeline, the WHOLE pipeline. So no
command here ever blocks the server longer than ``WAIT_SLICE_S`` (well below the socket
timeout): a longer wait is a loop of ``BLPOP``s of at most one slice each. And the one
non-idempotent step of a collective, the arrival, is made idempotent per rank: a rank is
``SADD``-ed to the step's arrival set and the release tokens are pushed only by the call whose
``SADD`` completed the set — a retried arrival counts once. (Before this, a peer more than the
5 s default socket timeout late made the early ranks' pipelines run twice: the step counter
reached K without it and they read its missing part.) ``set_expiring`` is ``SET PX``
(heartbeats), ``get_bytes_many`` one ``MGET``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Self, TypeVar

import numpy as np
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from lambdanet import tensors
from lambdanet.adapters import parse_url, redact
from lambdanet.errors import StoreUnavailable, URLError

T = TypeVar("T")
_GLOB = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})

SOCKET_TIMEOUT_S = 30.0  # a reply slower than this is a dead connection (redis-py then retries)
WAIT_SLICE_S = 2.0  # the longest any one command blocks the server (BLPOP): far below the socket timeout

# KEYS: part, arrival set, release list, keys to delete…; ARGV: has_part, part, size, token, rank.
# Idempotent per rank: a retried script (redis-py re-sends a pipeline after a read timeout) finds
# its rank in the set already and neither counts again nor pushes the release a second time.
_ARRIVE = """
if ARGV[1] == '1' then redis.call('SET', KEYS[1], ARGV[2]) end
local added = redis.call('SADD', KEYS[2], ARGV[5])
local n = redis.call('SCARD', KEYS[2])
if added == 1 and n == tonumber(ARGV[3]) then
  if #KEYS > 3 then redis.call('UNLINK', unpack(KEYS, 4)) end
  for i = 1, n do redis.call('RPUSH', KEYS[3], ARGV[4]) end
end
return n
"""


def connect(url: str) -> redis.Redis:
    """A redis-py client for ``url`` with lambdanet's settings (a 5 s connect timeout, a dropped
    connection retried twice within ~0.3 s); a malformed URL is a one-line :class:`URLError`.
    Nothing is sent until the first command. Also the Optuna journal's client."""
    # the query options are redis-py's (ssl_cert_reqs, socket_timeout, …): it reads them itself
    parts = parse_url(url, schemes=("redis", "rediss"), name="Redis", usage="redis://host:port/db or rediss://…",
                      options=None)
    if not parts.hostname:
        raise URLError(f"Redis URL {redact(url)!r} has no host (use redis://host:port/db)")
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=SOCKET_TIMEOUT_S,
                                    health_check_interval=0,
                                    retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), 2))
    except (ValueError, TypeError) as exc:
        raise URLError(f"bad Redis URL {redact(url)!r}: {exc}") from None


def call(fn: Callable[[], T], shown_url: str, what: str) -> T:
    """``fn()``, with redis-py's errors as :class:`StoreUnavailable` naming ``what`` ("the tensor
    store") at ``shown_url`` (already redacted)."""
    try:
        return fn()
    except redis.AuthenticationError as exc:
        raise StoreUnavailable(f"Redis at {shown_url} refused the password: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StoreUnavailable(f"cannot reach {what} {shown_url} ({exc}); is redis-server running?") from exc
    except redis.RedisError as exc:
        raise StoreUnavailable(f"{what} {shown_url} failed: {exc}") from exc




class RedisStore:
    """A :class:`lambdanet.ports.TensorStore` on a Redis server."""

    def __init__(self, client: redis.Redis, url: str) -> None:
        self._r = client
        self._arrive = client.register_script(_ARRIVE)
        # no BLPOP may outlast the socket timeout (a URL option may lower it): at most half of it
        read_timeout = client.connection_pool.connection_kwargs.get("socket_timeout") or SOCKET_TIMEOUT_S
        self.wait_slice_s = max(0.01, min(WAIT_SLICE_S, float(read_timeout) / 2))
        self.url = redact(url)
        self.bytes_in = 0
        self.bytes_out = 0

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(connect(url), url)

    def _call(self, fn: Callable[[], T]) -> T:
        return call(fn, self.url, "the tensor store")

    def _slice(self, deadline: float) -> float:
        """The next BLPOP's timeout: what is left until ``deadline``, at most one slice, never 0
        (BLPOP's 0 means "forever"; Redis >= 6 takes fractions)."""
        return max(0.01, min(self.wait_slice_s, deadline - time.monotonic()))

    # ---- arrays ---------------------------------------------------------------------------
    def put(self, key: str, array: np.ndarray) -> None:
        blob = tensors.encode(array)
        self._call(lambda: self._r.set(key, blob))
        self.bytes_in += len(blob)

    def get(self, key: str) -> np.ndarray:
        blob: Any = self._call(lambda: self._r.get(key))
        if blob is None:
            raise KeyError(key)
        self.bytes_out += len(blob)
        return tensors.decode(blob)

    def get_many(self, keys: list[str]) -> list[np.ndarray]:
        if not keys:
            return []
        blobs: Any = self._call(lambda: self._r.mget(keys))
        return self._decode_all(keys, blobs)

    # ---- counters, lists, byte values -----------------------------------------------------
    def incr(self, key: str, amount: int = 1) -> int:
        return int(self._call(lambda: self._r.incrby(key, amount)))

    def push(self, key: str, value: bytes, count: int = 1) -> None:
        if count > 0:
            self._call(lambda: self._r.rpush(key, *([value] * count)))

    def pop_blocking(self, key: str, timeout_s: float) -> bytes | None:
        got = self.pop_first([key], timeout_s)
        return None if got is None else got[1]

    def pop_first(self, keys: list[str], timeout_s: float) -> tuple[str, bytes] | None:
        if timeout_s <= 0:  # no wait: LPOP each list in order
            for key in keys:
                item: Any = self._call(partial(self._r.lpop, key))
                if item is not None:
                    return key, bytes(item)
            return None
        # one BLPOP over every key (Redis serves the first non-empty list in the order given), in
        # slices: a BLPOP longer than the socket timeout would be cut and re-sent by redis-py
        deadline = time.monotonic() + timeout_s
        while True:
            wait = self._slice(deadline)
            res: Any = self._call(partial(self._r.blpop, keys, timeout=wait))
            if res is not None:
                return res[0].decode(), bytes(res[1])
            if time.monotonic() >= deadline:
                return None

    def set_expiring(self, key: str, value: bytes, ttl_s: float) -> None:
        self._call(lambda: self._r.set(key, value, px=max(1, int(ttl_s * 1000))))
        self.bytes_in += len(value)

    def get_bytes_many(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        values: Any = self._call(lambda: self._r.mget(keys))
        out = [None if v is None else bytes(v) for v in values]
        self.bytes_out += sum(len(v) for v in out if v is not None)
        return out

    def set_if_absent(self, key: str, value: bytes) -> bool:
        done = self._call(lambda: self._r.set(key, value, nx=True))
        if done:
            self.bytes_in += len(value)
        return bool(done)

    def get_bytes(self, key: str) -> bytes | None:
        value: Any = self._call(lambda: self._r.get(key))
        if value is not None:
            self.bytes_out += len(value)
        return None if value is None else bytes(value)

    def delete_prefix(self, prefix: str) -> int:
        def run() -> int:
            n = 0
            batch: list[bytes] = []
            for key in self._r.scan_iter(match=prefix.translate(_GLOB) + "*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    n += int(self._r.unlink(*batch))
                    batch = []
            if batch:
                n += int(self._r.unlink(*batch))
            return n

        return self._call(run)

    # ---- fused operations the collectives use (one round trip each) ---------------------
    def arrive(self, part_key: str, part: np.ndarray | None, counter: str, size: int, release: str,
               token: bytes, delete: list[str], rank: int = 0) -> int:
        """One collective arrival in ONE round trip (a Lua script): write the part, add ``rank``
        to the arrival set ``counter``; the arrival that completes ``size`` ranks deletes
        ``delete`` and pushes ``size`` tokens. Idempotent per rank. Returns the ranks arrived."""
        blob = tensors.encode(part) if part is not None else b""
        keys = [part_key, counter, release, *delete]
        args = ["1" if part is not None else "0", blob, size, token, rank]
        n = int(self._call(lambda: self._arrive(keys=keys, args=args)))
        self.bytes_in += len(blob)
        return n

    def exchange(self, part_key: str, part: np.ndarray | None, counter: str, size: int, release: str,
                 token: bytes, delete: list[str], timeout_s: float, keys: list[str],
                 abort: str, rank: int) -> tuple[str, list[np.ndarray]] | None:
        """``arrive`` + ``wait_and_get`` in ONE round trip: the script, ``BLPOP [abort, release]``
        and ``MGET`` go in one pipeline; Redis runs a connection's commands in order, so the
        ``BLPOP`` waits for the last arrival's tokens (or an abort) and the ``MGET`` for the
        ``BLPOP``. (``EVAL`` with the script text: never a NOSCRIPT after a server restart.) A
        wait longer than ``WAIT_SLICE_S`` goes on with ``wait_and_get`` slices."""
        blob = tensors.encode(part) if part is not None else b""
        script_keys = [part_key, counter, release, *delete]

        def arrive(pipe: Any) -> None:
            pipe.eval(_ARRIVE, len(script_keys), *script_keys, "1" if part is not None else "0", blob, size, token,
                      rank)

        deadline = time.monotonic() + timeout_s
        out = self._pop_then_get(release, self._slice(deadline), keys, abort, first=arrive)
        self.bytes_in += len(blob)
        if out is None and time.monotonic() < deadline:
            return self.wait_and_get(release, deadline - time.monotonic(), keys, abort)
        return out

    def _pop_then_get(self, release: str, timeout_s: float, keys: list[str], abort: str,
                      first: Callable[[Any], None] | None = None) -> tuple[str, list[np.ndarray]] | None:
        """One pipeline: ``first(pipe)`` (exchange's arrival), ``BLPOP [abort, release]``, then
        ``MGET keys``; Redis runs a connection's commands in order, so the ``MGET`` waits for the
        ``BLPOP``."""

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            if first is not None:
                first(pipe)
            pipe.blpop([abort, release], timeout=max(0.01, min(timeout_s, self.wait_slice_s)))
            if keys:
                pipe.mget(keys)
            return pipe.execute()

        res = self._call(run)
        popped, blobs = (res[-2], res[-1]) if keys else (res[-1], [])
        return self._released(popped, blobs, keys, abort)

    def _released(self, popped: Any, blobs: list[Any], keys: list[str],
                  abort: str) -> tuple[str, list[np.ndarray]] | None:
        """What a ``BLPOP [abort, release]`` + ``MGET keys`` pair means: None (timeout), the abort
        (the MGET's blobs are ignored: the step never completed), or the release and the arrays."""
        if popped is None:
            return None
        fired = popped[0].decode()
        return (abort, []) if fired == abort else (fired, self._decode_all(keys, blobs))

    def _decode_all(self, keys: list[str], blobs: list[Any]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for k, blob in zip(keys, blobs, strict=True):
            if blob is None:
                raise KeyError(k)
            self.bytes_out += len(blob)
            out.append(tensors.decode(blob))
        return out

    def wait_and_get(self, release: str, timeout_s: float, keys: list[str],
                     abort: str) -> tuple[str, list[np.ndarray]] | None:
        """Pop from ``[abort, release]`` (blocking up to ``timeout_s``), then read ``keys`` — both
        in one pipeline: Redis runs a connection's commands in order, so the ``MGET`` waits for
        the ``BLPOP``. None if nothing came in time; ``(abort, [])`` if the abort list fired.
        Waits of more than ``WAIT_SLICE_S`` are several pipelines of one slice each."""
        deadline = time.monotonic() + timeout_s
        while True:
            out = self._pop_then_get(release, self._slice(deadline), keys, abort)
            if out is not None or time.monotonic() >= deadline:
                return out

    def delete_keys(self, keys: list[str]) -> int:
        return int(self._call(lambda: self._r.unlink(*keys))) if keys else 0

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (for tests and leak checks)."""
        found = self._call(lambda: list(self._r.scan_iter(match=prefix.translate(_GLOB) + "*")))
        return sorted(k.decode() for k in found)

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self._r.close()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r})"
