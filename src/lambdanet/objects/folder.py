"""A local folder as the object store (the embedded default, ``~/.lambdanet/objects``).

Usage::

    store = FolderStore.from_url("/home/me/.lambdanet/objects")   # or file:///abs/path
    store.put("runs/r-1/checkpoint.json", b"{}")                  # atomic replace
    store.put_if_absent("models/x/versions/3/claim", b"token")    # True once (O_EXCL / link)

Writes go to a temporary file in the target's folder, are fsync'ed and then renamed over the
target (``os.replace``), so a reader sees the old or the new object, never half of one, and a
failed write (disk full, read-only folder) leaves the old object untouched. Temporary files
start with ``.lntmp-`` and are invisible to :meth:`list`; keys whose parts start with that
prefix are refused. OS errors become :class:`ObjectStoreUnavailable` with one line.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import uuid
from pathlib import Path
from typing import Self
from urllib.parse import unquote, urlsplit

from lambdanet.errors import ObjectNotFound, ObjectStoreUnavailable, URLError, UserInputError
from lambdanet.objects import check_key, check_prefix
from lambdanet.ports.objects import ObjectInfo

TMP_PREFIX = ".lntmp-"

_HINTS = {
    errno.ENOSPC: "the disk is full; free some space",
    errno.EDQUOT: "the disk quota is exceeded; free some space",
    errno.EACCES: "permission denied; check the folder's permissions",
    errno.EPERM: "operation not permitted; check the folder's permissions",
    errno.EROFS: "the file system is read-only; use a writable folder (LAMBDANET_OBJECTS)",
}


def _unavailable(action: str, key: str, root: Path, exc: OSError) -> ObjectStoreUnavailable:
    hint = _HINTS.get(exc.errno or 0) or (exc.strerror or type(exc).__name__)
    return ObjectStoreUnavailable(f"cannot {action} '{key}' in the object folder {root}: {hint}")


class FolderStore:
    """An :class:`lambdanet.ports.ObjectStore` on a local folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unavailable("create", ".", self.root, exc) from exc
        if not self.root.is_dir():
            raise ObjectStoreUnavailable(f"the object store path {self.root} is not a folder")

    @classmethod
    def from_url(cls, url: str) -> Self:
        """A bare path (``/abs``, ``./rel``, ``~/x``) or ``file:///abs/path``."""
        if "://" not in url:
            return cls(url)
        parts = urlsplit(url)
        if parts.scheme.lower() != "file":
            raise URLError(f"not a folder URL: {url!r} (use a path or file:///abs/path)")
        if parts.netloc not in ("", "localhost"):
            raise URLError(f"file URL {url!r} names a host; use file:///abs/path")
        path = unquote(parts.path)
        if not path:
            raise URLError(f"file URL {url!r} has no path; use file:///abs/path")
        return cls(path)

    # ---- helpers -------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        check_key(key)
        if any(part.startswith(TMP_PREFIX) for part in key.split("/")):
            raise URLError(f"object key {key!r} uses the reserved prefix '{TMP_PREFIX}'")
        return self.root.joinpath(*key.split("/"))

    def _write_temp(self, key: str, path: Path, data: bytes) -> Path:
        """Write ``data`` to a fsync'ed temporary file beside ``path``; return its path."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise UserInputError(
                f"object key '{key}' conflicts with an existing object that is a prefix of it"
            ) from exc
        except OSError as exc:
            raise _unavailable("write", key, self.root, exc) from exc
        tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            _remove_quietly(tmp)
            raise _unavailable("write", key, self.root, exc) from exc
        return tmp

    # ---- the port ------------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path.is_dir():
            raise UserInputError(f"object key '{key}' is a prefix of other objects; choose another key")
        tmp = self._write_temp(key, path, bytes(data) if not isinstance(data, bytes) else data)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            _remove_quietly(tmp)
            raise _unavailable("write", key, self.root, exc) from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data`` only if it does not exist; True if this call created it.

        Atomic across threads and processes: the complete temporary file is hard-linked to the
        key (``link`` fails if the key exists); where links are unsupported, ``O_EXCL``.
        """
        path = self._path(key)
        tmp = self._write_temp(key, path, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise _unavailable("write", key, self.root, exc) from exc
            return self._put_excl(key, path, data)
        finally:
            _remove_quietly(tmp)

    def _put_excl(self, key: str, path: Path, data: bytes) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _unavailable("write", key, self.root, exc) from exc
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(f"no object '{key}' in {self.url}") from exc
        except OSError as exc:
            raise _unavailable("read", key, self.root, exc) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def info(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"no object '{key}' in {self.url}") from exc
        except OSError as exc:
            raise _unavailable("stat", key, self.root, exc) from exc
        if not path.is_file():
            raise ObjectNotFound(f"no object '{key}' in {self.url}")
        return ObjectInfo(key=key, size=st.st_size, version=f"{st.st_mtime_ns}-{st.st_size}",
                          modified=st.st_mtime)

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` (plain string prefix, as S3), sorted."""
        return [key for key, _ in self._walk(prefix)]

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        """``{key: size}`` of the keys starting with ``prefix``, in key order."""
        sizes: dict[str, int] = {}
        for key, path in self._walk(prefix):
            try:
                sizes[key] = path.stat().st_size
            except FileNotFoundError:  # deleted since the walk saw it: not there any more
                continue
            except OSError as exc:
                raise _unavailable("stat", key, self.root, exc) from exc
        return sizes

    def _walk(self, prefix: str) -> builtins.list[tuple[str, Path]]:
        """``(key, path)`` of the files whose key starts with ``prefix``, sorted by key."""
        check_prefix(prefix)
        # walk only the deepest folder the prefix names
        head, _, _ = prefix.rpartition("/")
        base = self.root.joinpath(*head.split("/")) if head else self.root
        if not base.is_dir():
            return []
        found: builtins.list[tuple[str, Path]] = []
        try:
            for dirpath, dirnames, filenames in os.walk(base, onerror=_raise):
                dirnames[:] = [d for d in dirnames if not d.startswith(TMP_PREFIX)]
                rel = Path(dirpath).relative_to(self.root).as_posix()
                for name in filenames:
                    if name.startswith(TMP_PREFIX):
                        continue
                    key = name if rel == "." else f"{rel}/{name}"
                    if key.startswith(prefix):
                        found.append((key, Path(dirpath) / name))
        except OSError as exc:
            raise _unavailable("list", prefix or ".", self.root, exc) from exc
        found.sort()
        return found

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error (as on S3)."""
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError as exc:
            raise UserInputError(f"object key '{key}' is a prefix of other objects, not an object") from exc
        except OSError as exc:
            raise _unavailable("delete", key, self.root, exc) from exc

    def __repr__(self) -> str:
        return f"FolderStore({self.url!r})"


def _raise(exc: OSError) -> None:
    raise exc


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
