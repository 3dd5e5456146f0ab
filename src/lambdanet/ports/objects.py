"""The ObjectStore port: a flat key → bytes store (a folder, an S3 prefix).

Usage::

    objects = adapters.open_objects("/home/me/.lambdanet/objects")   # or s3://bucket/prefix
    objects.put("runs/r-1/checkpoint.json", b"{…}")   # atomic: readers see old or new, never half
    objects.get("runs/r-1/checkpoint.json")           # ObjectNotFound if absent
    objects.list("runs/r-1/")                          # keys under a prefix, sorted
    objects.list_sizes("datasets/")                    # {key: size in bytes} in one listing
    objects.info("training_input/datasets.h5")         # size, version/etag, mtime

Keys are relative, '/'-separated; a key with '..', a leading '/', a backslash or an empty part
is refused with :class:`lambdanet.errors.URLError` (see :func:`lambdanet.objects.check_key`).
Vendor/OS errors become :class:`lambdanet.errors.ObjectStoreUnavailable` (disk full,
permissions, network).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    version: str  # S3 VersionId or ETag; for a folder "mtime_ns-size"
    modified: float  # unix time


@runtime_checkable
class ObjectStore(Protocol):
    url: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def info(self, key: str) -> ObjectInfo: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        """``{key: size in bytes}`` of the keys :meth:`list` returns, from ONE listing (no request
        per key): what ``lambdanet gc`` counts."""
        ...

    def delete(self, key: str) -> None: ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist; True if this call created it. Exact across
        threads, processes and machines (a hard link on a folder, ``If-None-Match: *`` on S3):
        the registry claims version numbers with it."""
        ...
