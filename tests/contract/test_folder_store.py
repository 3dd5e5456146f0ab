"""What the folder store promises beyond the port: atomic writes under failure, put_if_absent, URLs."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from lambdanet import adapters
from lambdanet.errors import ObjectStoreUnavailable, URLError, UserInputError
from lambdanet.objects import check_key
from lambdanet.objects.folder import TMP_PREFIX, FolderStore


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.startswith(TMP_PREFIX)]


def test_bare_path_and_file_url_open_a_folder_store(tmp_path: Path) -> None:
    a = adapters.open_objects(str(tmp_path / "a"))
    b = adapters.open_objects(f"file://{tmp_path / 'b'}")
    assert isinstance(a, FolderStore) and isinstance(b, FolderStore)
    a.put("k", b"1")
    assert (tmp_path / "a" / "k").read_bytes() == b"1"
    assert b.url == str(tmp_path / "b")
    with pytest.raises(URLError, match="host"):
        FolderStore.from_url("file://example.com/x")


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_failed_put_keeps_the_old_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    store = FolderStore(tmp_path / "s")
    store.put("runs/r-1/checkpoint.json", b"old complete content")
    real_write = os.write

    def failing_write(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data)[:5])  # half the object reaches the disk, then the disk fails
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(ObjectStoreUnavailable) as exc:
        store.put("runs/r-1/checkpoint.json", b"new content that never lands")
    monkeypatch.undo()
    msg = str(exc.value)
    assert "runs/r-1/checkpoint.json" in msg and "\n" not in msg
    assert {errno.ENOSPC: "disk is full", errno.EACCES: "permission denied",
            errno.EROFS: "read-only"}[err] in msg
    assert store.get("runs/r-1/checkpoint.json") == b"old complete content"
    assert _leftovers(tmp_path) == []
    assert store.list() == ["runs/r-1/checkpoint.json"]


def test_failed_rename_keeps_the_old_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FolderStore(tmp_path / "s")
    store.put("a", b"old")

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(ObjectStoreUnavailable, match="read-only"):
        store.put("a", b"new")
    monkeypatch.undo()
    assert store.get("a") == b"old"
    assert _leftovers(tmp_path) == []


def test_temp_files_are_invisible_and_their_names_reserved(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s")
    store.put("d/real", b"1")
    (tmp_path / "s" / "d" / f"{TMP_PREFIX}abc").write_bytes(b"half")
    assert store.list() == ["d/real"]
    assert store.list_sizes() == {"d/real": 1}  # a half-written temporary file is not counted
    with pytest.raises(URLError, match="reserved"):
        store.put(f"d/{TMP_PREFIX}x", b"1")


def test_readers_never_see_a_partial_object(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s")
    versions = [bytes([i]) * 200_000 for i in range(2)]
    store.put("hot", versions[0])
    stop = threading.Event()
    bad: list[int] = []

    def read() -> None:
        while not stop.is_set():
            data = store.get("hot")
            if data not in versions:
                bad.append(len(data))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(40):
        store.put("hot", versions[i % 2])
    stop.set()
    reader.join()
    assert bad == []


def test_put_if_absent_has_one_winner(tmp_path: Path) -> None:
    root = tmp_path / "s"
    results: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        won = FolderStore(root).put_if_absent("models/m/versions/1/claim.json", f"w{i}".encode())
        with lock:
            results.append((i, won))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in results if won]
    assert len(winners) == 1
    assert FolderStore(root).get("models/m/versions/1/claim.json") == f"w{winners[0]}".encode()
    assert _leftovers(root) == []


def test_key_that_collides_with_a_prefix(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s")
    store.put("a/b", b"1")
    with pytest.raises(UserInputError, match="a/b/c"):
        store.put("a/b/c", b"2")
    with pytest.raises(UserInputError, match="prefix"):
        store.put("a", b"3")
    assert store.list() == ["a/b"]


def test_check_key_returns_good_keys() -> None:
    assert check_key("models/itsacat/versions/1/model.json") == "models/itsacat/versions/1/model.json"
    assert check_key(".hidden/x.y-z_1") == ".hidden/x.y-z_1"
    with pytest.raises(URLError, match="'\\\\x7f'"):
        check_key("a\x7fb")
