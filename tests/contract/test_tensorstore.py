"""The TensorStore contract, run against every adapter: ``memory://`` and a real ``redis-server``
on a free loopback port (the ``redis_server`` fixture)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lambdanet import adapters
from lambdanet.errors import StoreUnavailable
from lambdanet.ports import TensorStore
from tests.conftest import RedisServer, free_port


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> Iterator[TensorStore]:
    if request.param == "memory":
        s = adapters.open_store(f"memory://contract-{uuid.uuid4().hex[:8]}")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        s = adapters.open_store(server.url)
    yield s
    s.delete_prefix("t:")
    s.close()


def key() -> str:
    return f"t:{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "int64"])
def test_put_get_roundtrip_keeps_dtype_shape_and_values(store: TensorStore, dtype: str) -> None:
    a = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    k = key()
    store.put(k, a)
    b = store.get(k)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    a[0, 0, 0] = 99  # the store kept a copy
    assert store.get(k)[0, 0, 0] == 0


def test_get_missing_raises_keyerror_and_get_many_keeps_order(store: TensorStore) -> None:
    with pytest.raises(KeyError):
        store.get(key())
    ks = [key() for _ in range(3)]
    for i, k in enumerate(ks):
        store.put(k, np.full((2, i + 1), float(i)))
    got = store.get_many(list(reversed(ks)))
    assert [g.shape for g in got] == [(2, 3), (2, 2), (2, 1)]
    assert [float(g[0, 0]) for g in got] == [2.0, 1.0, 0.0]
    with pytest.raises(KeyError):
        store.get_many([ks[0], key()])


def test_incr_is_atomic_across_threads(store: TensorStore) -> None:
    k = key()
    assert store.incr(k) == 1
    assert store.incr(k, 5) == 6

    def bump() -> None:
        for _ in range(50):
            store.incr(k)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.incr(k, 0) == 206


def test_pop_blocking_times_out_then_is_woken_by_push(store: TensorStore) -> None:
    k = key()
    assert store.pop_blocking(k, timeout_s=0.2) is None
    store.push(k, b"a", count=2)
    assert store.pop_blocking(k, 1.0) == b"a"
    assert store.pop_blocking(k, 1.0) == b"a"
    assert store.pop_blocking(k, 0.1) is None
    got: list[bytes | None] = []
    waiter = threading.Thread(target=lambda: got.append(store.pop_blocking(k, 10.0)))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()  # really blocked
    store.push(k, b"go")
    waiter.join(5)
    assert got == [b"go"]


def test_set_if_absent_once_and_get_bytes(store: TensorStore) -> None:
    k = key()
    assert store.get_bytes(k) is None
    assert store.set_if_absent(k, b"first") is True
    assert store.set_if_absent(k, b"second") is False
    assert store.get_bytes(k) == b"first"


def test_delete_prefix_removes_every_kind_of_key_under_it_only(store: TensorStore) -> None:
    base = key()
    store.put(f"{base}:a", np.zeros(3))
    store.incr(f"{base}:n")
    store.push(f"{base}:l", b"x")
    store.set_if_absent(f"{base}:c", b"1")
    store.put(f"{base}X", np.ones(1))  # shares the text but not the prefix "base:"
    assert store.delete_prefix(f"{base}:") == 4
    with pytest.raises(KeyError):
        store.get(f"{base}:a")
    assert store.incr(f"{base}:n") == 1
    assert store.pop_blocking(f"{base}:l", 0.05) is None
    assert store.get_bytes(f"{base}:c") is None
    assert store.get(f"{base}X")[0] == 1.0


def test_bytes_are_counted(store: TensorStore) -> None:
    i0, o0 = store.bytes_in, store.bytes_out
    k = key()
    store.put(k, np.zeros(1000, dtype=np.float32))
    store.get(k)
    assert store.bytes_in - i0 >= 4000
    assert store.bytes_out - o0 >= 4000


@pytest.mark.redis
def test_unreachable_redis_is_store_unavailable_with_redacted_url() -> None:
    port = free_port()  # nothing listens there
    s = adapters.open_store(f"redis://:s3cret-pw@127.0.0.1:{port}/0")
    assert "s3cret" not in s.url
    with pytest.raises(StoreUnavailable) as err:
        s.put("t:x", np.zeros(1))
    assert "s3cret" not in str(err.value)
    assert f"127.0.0.1:{port}" in str(err.value)


@pytest.mark.redis
def test_redis_password_in_url_is_used(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        import redis

        redis.Redis(port=server.port).config_set("requirepass", "pw-123")
        good = adapters.open_store(f"redis://:pw-123@127.0.0.1:{server.port}/0")
        good.put("t:k", np.ones(2))
        assert good.get("t:k").sum() == 2
        bad = adapters.open_store(f"redis://:wrong@127.0.0.1:{server.port}/0")
        with pytest.raises(StoreUnavailable) as err:
            bad.get("t:k")
        assert "wrong" not in str(err.value)
    finally:
        server.stop()


def test_rediss_url_options_are_accepted() -> None:
    s = adapters.open_store("rediss://:pw@cache.example.invalid:6380/2?ssl_cert_reqs=none")
    assert s.url == "rediss://:***@cache.example.invalid:6380/2?ssl_cert_reqs=none"
    s.close()  # never connected: nothing was sent anywhere


def test_pop_first_takes_from_the_first_non_empty_list_in_the_given_order(store: TensorStore) -> None:
    a, b, c = key(), key(), key()
    assert store.pop_first([a, b, c], timeout_s=0.2) is None  # nothing anywhere: timeout
    assert store.pop_first([a, b], timeout_s=0) is None  # no wait at all
    store.push(b, b"from-b", count=2)
    store.push(c, b"from-c")
    assert store.pop_first([a, c, b], 1.0) == (c, b"from-c")  # order of the call, not of the pushes
    assert store.pop_first([a, b, c], 1.0) == (b, b"from-b")
    store.push(a, b"from-a")
    assert store.pop_first([b, a], 0) == (b, b"from-b")  # both non-empty: the first listed wins
    assert store.pop_first([b, a], 0) == (a, b"from-a")
    assert store.pop_first([a, b, c], 0.05) is None  # every list was drained


def test_pop_first_wakes_a_blocked_waiter_on_any_of_its_lists(store: TensorStore) -> None:
    a, b = key(), key()
    got: list[tuple[str, bytes] | None] = []
    waiter = threading.Thread(target=lambda: got.append(store.pop_first([a, b], 600.0)), daemon=True)
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()  # really blocked
    store.push(b, b"wake")
    waiter.join(10)
    assert not waiter.is_alive(), "pop_first was not woken by a push to its second list"
    assert got == [(b, b"wake")]
    assert store.pop_first([a, b], 0) is None  # the item was consumed, not copied
