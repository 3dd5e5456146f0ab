"""The ObjectStore contract: every adapter in FACTORIES["objects"] must pass these."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lambdanet.errors import ObjectNotFound, ObjectStoreUnavailable, URLError
from lambdanet.objects.s3 import S3Store
from lambdanet.ports import ObjectStore

BAD_KEYS = ["", "/abs", "a/../b", "..", "a/./b", "a\\b", "a//b", "a/", "a\x00b", "a\nb", "a\tb"]


def test_is_an_object_store(objects: ObjectStore) -> None:
    assert isinstance(objects, ObjectStore)
    assert isinstance(objects.url, str) and objects.url


def test_put_get_exists(objects: ObjectStore) -> None:
    assert objects.exists("runs/r-1/checkpoint.json") is False
    objects.put("runs/r-1/checkpoint.json", b'{"epoch": 3}')
    assert objects.get("runs/r-1/checkpoint.json") == b'{"epoch": 3}'
    assert objects.exists("runs/r-1/checkpoint.json") is True
    assert objects.exists("runs/r-1") is False  # a prefix is not an object


def test_overwrite_replaces_and_changes_version(objects: ObjectStore) -> None:
    objects.put("a/b.txt", b"old")
    first = objects.info("a/b.txt")
    objects.put("a/b.txt", b"newer content")
    second = objects.info("a/b.txt")
    assert objects.get("a/b.txt") == b"newer content"
    assert (first.size, second.size) == (3, 13)
    assert first.version != second.version
    assert second.key == "a/b.txt"
    assert abs(second.modified - time.time()) < 24 * 3600


def test_binary_round_trip(objects: ObjectStore) -> None:
    blob = bytes(range(256)) * 4097  # ~1 MiB, every byte value, not a multiple of 4096
    objects.put("bin/blob", blob)
    objects.put("bin/empty", b"")
    assert objects.get("bin/blob") == blob
    assert objects.get("bin/empty") == b""
    assert objects.info("bin/blob").size == len(blob)
    assert objects.info("bin/empty").size == 0


def test_list_prefix_sorted(objects: ObjectStore) -> None:
    keys = ["runs/r-2/x", "runs/r-1/b", "runs/r-1/a/deep.json", "runs/r10/c", "models/m/aliases.json", "top"]
    for k in keys:
        objects.put(k, k.encode())
    assert objects.list() == sorted(keys)
    assert objects.list("") == sorted(keys)
    assert objects.list("runs/r-1/") == ["runs/r-1/a/deep.json", "runs/r-1/b"]
    assert objects.list("runs/r") == ["runs/r-1/a/deep.json", "runs/r-1/b", "runs/r-2/x", "runs/r10/c"]
    assert objects.list("runs/r1") == ["runs/r10/c"]
    assert objects.list("models/") == ["models/m/aliases.json"]
    assert objects.list("nothing/") == []
    assert objects.list("to") == ["top"]


def test_delete(objects: ObjectStore) -> None:
    objects.put("d/x", b"1")
    objects.put("d/y", b"2")
    objects.delete("d/x")
    assert objects.exists("d/x") is False
    assert objects.list("d/") == ["d/y"]
    with pytest.raises(ObjectNotFound):
        objects.get("d/x")
    objects.delete("d/x")  # deleting a missing key is not an error


def test_missing_key_errors(objects: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="no/such/key"):
        objects.get("no/such/key")
    with pytest.raises(ObjectNotFound, match="no/such/key"):
        objects.info("no/such/key")


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys_are_refused(objects: ObjectStore, key: str) -> None:
    with pytest.raises(URLError):
        objects.put(key, b"x")
    with pytest.raises(URLError):
        objects.get(key)
    with pytest.raises(URLError):
        objects.exists(key)
    with pytest.raises(URLError):
        objects.delete(key)


def test_bad_list_prefixes_are_refused(objects: ObjectStore) -> None:
    for prefix in ("/abs", "../up", "a/../b", "a\\b", "a//"):
        with pytest.raises(URLError):
            objects.list(prefix)


def test_many_keys_in_one_folder(objects: ObjectStore) -> None:
    keys = [f"runs/r-1/checkpoints/epoch-{i:05d}.safetensors" for i in range(30)]
    for k in keys:
        objects.put(k, k.encode())
    assert objects.list("runs/r-1/checkpoints/") == keys
    assert [objects.get(k) for k in keys] == [k.encode() for k in keys]


def test_list_sizes_matches_the_bytes_put(objects: ObjectStore) -> None:
    blobs = {"datasets/aa.npz": b"x" * 70_001, "datasets/ab.npz": b"", "runs/r-1/data.json": b'{"a": 1}',
             "datasets-not/x": b"12"}
    for key, blob in blobs.items():
        objects.put(key, blob)
    assert objects.list_sizes("datasets/") == {"datasets/aa.npz": 70_001, "datasets/ab.npz": 0}
    assert list(objects.list_sizes("")) == objects.list() == sorted(blobs)
    assert objects.list_sizes("") == {k: len(v) for k, v in blobs.items()}
    objects.put("datasets/aa.npz", b"short")  # a replaced object: its new size
    objects.delete("datasets/ab.npz")
    assert objects.list_sizes("datasets/") == {"datasets/aa.npz": 5}
    assert objects.list_sizes("nothing/") == {}
    with pytest.raises(URLError):
        objects.list_sizes("../up")


def _small_parts(objects: ObjectStore) -> None:
    """S3: multipart uploads from 6 MiB on, in 5 MiB parts (S3's smallest), as a 5 GiB put would."""
    if isinstance(objects, S3Store):
        objects.single_put_max = 6 * 2**20
        objects.part_size = 5 * 2**20


def test_a_put_bigger_than_one_request_reads_back_whole(objects: ObjectStore) -> None:
    _small_parts(objects)
    blob = np.random.default_rng(0).integers(0, 256, 11 * 2**20 + 17, dtype=np.uint8).tobytes()  # 3 parts on S3
    objects.put("datasets/big.npz", blob)
    assert objects.get("datasets/big.npz") == blob
    assert objects.list_sizes("datasets/") == {"datasets/big.npz": len(blob)}


def test_a_multipart_upload_that_fails_leaves_no_object(objects: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part that fails aborts the upload: no truncated object appears (s3fs' writer completed
    the upload with the parts it had), the old object stays, no upload is left open."""
    if not isinstance(objects, S3Store):
        pytest.skip("the folder store's failed writes are tested in test_folder_store.py")
    _small_parts(objects)
    objects.put("datasets/old.npz", b"old")
    real = objects.client.upload_part
    calls: list[int] = []

    def second_part_fails(**kw: object) -> object:
        calls.append(int(str(kw["PartNumber"])))
        if kw["PartNumber"] == 2:
            raise ConnectionResetError("connection reset by peer")
        return real(**kw)

    monkeypatch.setattr(objects.client, "upload_part", second_part_fails)
    blob = bytes(11 * 2**20)
    for key in ("datasets/new.npz", "datasets/old.npz"):
        with pytest.raises(ObjectStoreUnavailable, match="connection reset"):
            objects.put(key, blob)
    assert calls == [1, 2, 1, 2]  # the fault happened, in both uploads
    assert objects.exists("datasets/new.npz") is False
    assert objects.get("datasets/old.npz") == b"old"
    open_uploads = objects.client.list_multipart_uploads(Bucket=objects.bucket).get("Uploads", [])
    assert [u["Key"] for u in open_uploads] == []
