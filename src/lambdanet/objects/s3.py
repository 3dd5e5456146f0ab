"""S3 (or any S3-compatible service: MinIO, LocalStack, moto) as the object store, via s3fs.

Usage::

    store = S3Store.from_url("s3://my-bucket/lambdanet")            # keys live under lambdanet/
    store = S3Store.from_url("s3://b?endpoint_url=http://127.0.0.1:9000&region=eu-west-1")
    store.put("runs/r-1/checkpoint.json", b"{}")    # one PUT (multipart above 5 GiB): atomic
    store.info("training_input/datasets.h5").version  # S3 VersionId, else the ETag

The endpoint comes from ``?endpoint_url=`` or ``AWS_ENDPOINT_URL`` (boto3's own variable);
credentials from boto3's usual chain (environment, profile, instance/Lambda role) — never from
the URL, so URLs stay safe to log. Listings bypass s3fs' cache, so objects written by other
clients (an upload, another worker) are seen at once. Missing keys raise
:class:`ObjectNotFound`; every other S3/network error :class:`ObjectStoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Self

import botocore.exceptions
import s3fs

from lambdanet.adapters import parse_url
from lambdanet.errors import ObjectNotFound, ObjectStoreUnavailable, URLError
from lambdanet.objects import check_key, check_prefix
from lambdanet.ports.objects import ObjectInfo

_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


class S3Store:
    """An :class:`lambdanet.ports.ObjectStore` on ``s3://bucket/prefix``."""

    single_put_max = 5 * 1024**3  # S3's limit for one PutObject
    part_size = 256 * 1024**2  # multipart uploads (S3: 5 MiB to 5 GiB a part, 10,000 parts)

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None) -> None:
        if not bucket:
            raise URLError("S3 URL has no bucket; use s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        base = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.url = base
        client_kwargs: dict[str, Any] = {}
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
        if self.region:
            client_kwargs["region_name"] = self.region
        try:
            self.fs = s3fs.S3FileSystem(client_kwargs=client_kwargs, skip_instance_cache=True)
        except (botocore.exceptions.BotoCoreError, ValueError) as exc:
            raise ObjectStoreUnavailable(f"cannot connect to {self.url}: {_one_line(exc)}") from exc

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``s3://bucket[/prefix][?endpoint_url=…&region=…]``."""
        parts = parse_url(url, schemes=("s3",), name="S3", article="an", usage="s3://bucket/prefix",
                          options=("endpoint_url", "region"))
        prefix = parts.path.strip("/")
        if prefix:
            check_key(prefix)
        return cls(parts.netloc, prefix, endpoint_url=parts.options.get("endpoint_url"),
                   region=parts.options.get("region"))

    # ---- helpers -------------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        """The S3 object key (inside the bucket) of a store key."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _path(self, key: str) -> str:
        return f"{self.bucket}/{self._key(key)}"

    def _fail(self, action: str, key: str, exc: BaseException) -> Exception:
        if isinstance(exc, FileNotFoundError):
            return ObjectNotFound(f"no object '{key}' in {self.url}")
        if isinstance(exc, botocore.exceptions.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND_CODES:
                return ObjectNotFound(f"no object '{key}' in {self.url}")
            if code == "NoSuchBucket":
                return ObjectStoreUnavailable(f"cannot {action} '{key}': bucket '{self.bucket}' does not exist")
        return ObjectStoreUnavailable(f"cannot {action} '{key}' in {self.url}: {_one_line(exc)}")

    @property
    def client(self) -> Any:
        """The boto3/botocore S3 client s3fs uses (for the few calls s3fs 0.4 lacks)."""
        return self.fs.s3

    # ---- the port ------------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        """One PutObject up to :attr:`single_put_max` bytes, a multipart upload above: either way
        the object appears whole or not at all (s3fs' writer would complete a multipart upload
        whose part failed, leaving a truncated object: data snapshots are never rewritten)."""
        s3key = self._key(key)
        body = bytes(data)
        try:
            if len(body) <= self.single_put_max:
                self.client.put_object(Bucket=self.bucket, Key=s3key, Body=body)
            else:
                self._put_multipart(s3key, body)
        except Exception as exc:
            raise self._fail("write", key, exc) from exc
        finally:
            self.fs.invalidate_cache(self._path(key))

    def _put_multipart(self, s3key: str, body: bytes) -> None:
        """Parts of :attr:`part_size`, then CompleteMultipartUpload; any failure aborts the upload."""
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=s3key)["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(body), self.part_size), start=1):
                out = self.client.upload_part(Bucket=self.bucket, Key=s3key, UploadId=upload_id, PartNumber=number,
                                              Body=body[start:start + self.part_size])
                parts.append({"PartNumber": number, "ETag": out["ETag"]})
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=s3key, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=s3key, UploadId=upload_id)
            raise

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if absent (S3 conditional write ``If-None-Match: *``)."""
        s3key = self._key(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=s3key, Body=bytes(data), IfNoneMatch="*")
            return True
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise self._fail("write", key, exc) from exc
        except Exception as exc:
            raise self._fail("write", key, exc) from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return bytes(self.fs.cat(path))
        except Exception as exc:
            raise self._fail("read", key, exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self.info(key)
            return True
        except ObjectNotFound:
            return False

    def info(self, key: str) -> ObjectInfo:
        s3key = self._key(key)
        try:
            out = self.client.head_object(Bucket=self.bucket, Key=s3key)
        except Exception as exc:
            raise self._fail("stat", key, exc) from exc
        version = out.get("VersionId")
        if not version or version == "null":
            version = str(out.get("ETag", "")).strip('"')
        modified = out.get("LastModified")
        return ObjectInfo(key=key, size=int(out.get("ContentLength", 0)), version=version,
                          modified=modified.timestamp() if modified is not None else 0.0)

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` (plain string prefix, as S3), sorted."""
        return list(self.list_sizes(prefix))

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        """``{key: size}`` of the keys starting with ``prefix``, in key order (ListObjectsV2
        carries each object's size: one request per 1,000 keys)."""
        check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        sizes: dict[str, int] = {}
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", []):
                    key = item["Key"][strip:]
                    if key and not key.endswith("/"):
                        sizes[key] = int(item.get("Size", 0))
        except Exception as exc:
            raise self._fail("list", prefix or ".", exc) from exc
        return dict(sorted(sizes.items()))

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        s3key = self._key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=s3key)
        except Exception as exc:
            err = self._fail("delete", key, exc)
            if not isinstance(err, ObjectNotFound):
                raise err from exc
        finally:
            self.fs.invalidate_cache(f"{self.bucket}/{s3key}")

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"
