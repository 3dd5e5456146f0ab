"""Unpack an uploaded ``.zip`` / ``.tar`` / ``.tar.gz`` of class folders, refusing what could
escape it or blow up.

>>> root = extract_archive(Path("photos.zip"), Path(tmp))   # the folder holding the class folders
>>> ds = load_folder(root)

Checked for every member *before anything is written*, each problem one
:class:`~lambdanet.errors.DataError` line naming the archive and the member:

* **paths that escape**: absolute names (``/etc/x``, ``C:/x``), ``..`` components (a ``\\`` counts
  as a separator), NUL bytes;
* **links and special files**: symbolic links and hard links (zip and tar), devices, FIFOs —
  an archive of photos holds plain files and folders only; encrypted zip members;
* **bombs**: more than :data:`MAX_ARCHIVE_MEMBERS` members, or more than
  :data:`MAX_ARCHIVE_BYTES` (1 GiB; ``LAMBDANET_MAX_ARCHIVE_BYTES`` to change it) uncompressed in
  all, added up from the sizes the archive declares (a tar's headers are read one by one and the
  count stops at the limit, so a compressed tar is never inflated past it); a zip member is
  never written past its declared size either;
* **duplicate names**, and an archive that holds **no images** at all (no member named
  ``.jpg``, ``.png``, … outside hidden files and ``__MACOSX/``).

Tar members are extracted with ``tarfile``'s ``filter="data"`` on top of these checks; macOS's
``__MACOSX/`` folders are skipped. When the archive holds one folder that holds the class folders
(``photos/cat/…``, ``photos/dog/…``), that folder is the data set's root.
"""

from __future__ import annotations

import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from lambdanet.errors import DataError
from lambdanet.settings import Settings

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_ARCHIVE_BYTES = 1 << 30  # 1 GiB uncompressed, in all
MAX_ARCHIVE_MEMBERS = 100_000
MAX_BYTES_ENV = Settings.ENV["max_archive_bytes"]
_SKIPPED = ("__MACOSX",)
_CHUNK = 1 << 20


def is_archive(name: str) -> bool:
    """True for ``*.zip``, ``*.tar``, ``*.tar.gz`` and ``*.tgz`` (any case)."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def max_archive_bytes() -> int:
    """:data:`MAX_ARCHIVE_BYTES`, or ``$LAMBDANET_MAX_ARCHIVE_BYTES`` when set (a positive integer)."""
    return Settings.from_env().max_archive_bytes or MAX_ARCHIVE_BYTES


def _size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} bytes"


def member_path(archive: str, name: str) -> PurePosixPath | None:
    """The safe relative path of member ``name``; None for what is skipped (the archive's root,
    ``__MACOSX/``); DataError for a name that could land outside the extraction folder."""
    if "\x00" in name:
        raise DataError(f"{archive}: member {name!r} has a NUL byte in its name; the archive is damaged or "
                        f"hostile, nothing was extracted")
    n = name.replace("\\", "/")
    if n.startswith("/") or re.match(r"^[A-Za-z]:", n):
        raise DataError(f"{archive}: member {name!r} has an absolute path, which would land outside the "
                        f"archive; nothing was extracted (archive the class folders with relative paths)")
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{archive}: member {name!r} escapes the archive (a '..' in its path); nothing was "
                        f"extracted (archive the class folders with relative paths)")
    if not parts or parts[0] in _SKIPPED:
        return None
    return PurePosixPath(*parts)


def _link(archive: str, name: str, what: str) -> DataError:
    return DataError(f"{archive}: member {name!r} is {what}; an archive of photos holds plain files and "
                     f"folders only, nothing was extracted")


def _bomb(archive: str, total: int, limit: int) -> DataError:
    return DataError(f"{archive}: holds at least {_size(total)} uncompressed, above the limit of {_size(limit)} "
                     f"({MAX_BYTES_ENV}); nothing was extracted — upload a smaller archive or resize the photos "
                     f"first")


def _no_images(archive: str, files: int) -> DataError:
    from lambdanet.data.folders import IMAGE_SUFFIXES

    return DataError(f"{archive}: holds no images ({files} file(s), none named {', '.join(IMAGE_SUFFIXES)}); "
                     f"archive one folder per class of photos")


def _is_image(rel: PurePosixPath) -> bool:
    from lambdanet.data.folders import IMAGE_SUFFIXES

    return not rel.name.startswith(".") and rel.suffix.lower() in IMAGE_SUFFIXES


def _too_many(archive: str) -> DataError:
    return DataError(f"{archive}: holds more than {MAX_ARCHIVE_MEMBERS} members; nothing was extracted — "
                     f"split it into smaller archives")


def extract_archive(path: Path, dest: Path, max_bytes: int | None = None) -> Path:
    """Check every member of ``path``, then extract it into ``dest`` (an empty folder); return the
    folder that holds the class folders (see the module doc)."""
    limit = max_archive_bytes() if max_bytes is None else max_bytes
    dest.mkdir(parents=True, exist_ok=True)
    name = path.name
    if name.lower().endswith(".zip"):
        _extract_zip(path, dest, limit)
    else:
        _extract_tar(path, dest, limit)
    return data_root(name, dest)


def _extract_zip(path: Path, dest: Path, limit: int) -> None:
    archive = path.name
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ARCHIVE_MEMBERS:
                raise _too_many(archive)
            plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
            seen: set[PurePosixPath] = set()
            total = 0
            for info in infos:
                rel = member_path(archive, info.filename)
                if rel is None:
                    continue
                mode = info.external_attr >> 16  # the unix mode, when a unix tool made the archive
                if stat.S_ISLNK(mode):
                    raise _link(archive, info.filename, "a symbolic link")
                if info.is_dir():
                    continue
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                    raise _link(archive, info.filename, "not a regular file")
                if info.flag_bits & 0x1:
                    raise DataError(f"{archive}: member {info.filename!r} is encrypted; upload an archive "
                                    f"without a password")
                if rel in seen:
                    raise DataError(f"{archive}: member {info.filename!r} appears twice; nothing was extracted")
                seen.add(rel)
                total += info.file_size
                if total > limit:
                    raise _bomb(archive, total, limit)
                plan.append((info, rel))
            if not any(_is_image(rel) for _, rel in plan):
                raise _no_images(archive, len(plan))
            for info, rel in plan:  # every member checked: now write
                target = dest.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                written = 0
                with zf.open(info) as src, target.open("xb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > info.file_size:  # more than declared: never write past it
                            raise _bomb(archive, written, info.file_size)
                        out.write(chunk)
    except DataError:
        _empty(dest)
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
        _empty(dest)
        raise DataError(f"{archive}: cannot read it as a zip archive ({exc.__class__.__name__}: "
                        f"{str(exc)[:80]}); upload it again") from None


def _extract_tar(path: Path, dest: Path, limit: int) -> None:
    archive = path.name
    try:
        with tarfile.open(path, "r:*") as tf:
            members: list[tarfile.TarInfo] = []
            seen: set[PurePosixPath] = set()
            total = count = 0
            while (m := tf.next()) is not None:  # one header at a time: stops at the limit
                count += 1
                if count > MAX_ARCHIVE_MEMBERS:
                    raise _too_many(archive)
                rel = member_path(archive, m.name)
                if rel is None:
                    continue
                if m.issym() or m.islnk():
                    raise _link(archive, m.name, "a symbolic link" if m.issym() else "a hard link")
                if m.isdir():
                    m.name = rel.as_posix()
                    members.append(m)
                    continue
                if not m.isfile():
                    raise _link(archive, m.name, "a device or FIFO, not a regular file")
                if rel in seen:
                    raise DataError(f"{archive}: member {m.name!r} appears twice; nothing was extracted")
                seen.add(rel)
                total += m.size
                if total > limit:
                    raise _bomb(archive, total, limit)
                m.name = rel.as_posix()
                members.append(m)
            if not any(_is_image(PurePosixPath(m.name)) for m in members if m.isfile()):
                raise _no_images(archive, sum(1 for m in members if m.isfile()))
            tf.extractall(dest, members=members, filter="data")
    except DataError:
        _empty(dest)
        raise
    except (tarfile.TarError, zlib.error, OSError, EOFError, ValueError) as exc:
        _empty(dest)
        raise DataError(f"{archive}: cannot read it as a tar archive ({exc.__class__.__name__}: "
                        f"{str(exc)[:80]}); upload a .zip, .tar or .tar.gz of class folders") from None


def _empty(dest: Path) -> None:
    """Remove whatever an extraction that failed half-way wrote (``dest`` itself stays)."""
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def data_root(archive: str, dest: Path) -> Path:
    """The folder of ``dest`` that holds the class folders: ``dest``, or the single folder it holds
    when that holds folders itself (``photos/cat/…``)."""
    from lambdanet.data.folders import IMAGE_SUFFIXES, _subdirs

    root = dest
    while True:
        subs = _subdirs(root)
        loose = [f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        if len(subs) == 1 and not loose and _subdirs(subs[0]):
            root = subs[0]
            continue
        return root


def check_npz_size(path: Path, max_bytes: int | None = None) -> None:
    """An ``.npz`` is a zip too: refuse one whose arrays add up to more than the archive limit
    (before ``np.load`` inflates any of them). Not a zip: left to the npz reader to say so."""
    limit = max_archive_bytes() if max_bytes is None else max_bytes
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        raise _too_many(path.name)
    total = sum(i.file_size for i in infos)
    if total > limit:
        raise DataError(f"{path.name}: its arrays hold {_size(total)} uncompressed, above the limit of "
                        f"{_size(limit)} ({MAX_BYTES_ENV}); nothing was loaded — upload a smaller data set")
