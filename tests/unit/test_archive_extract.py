"""Archives of class folders: what is extracted, and every hostile archive refused before a byte
is written (path traversal, absolute names, links, devices, bombs, no images)."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lambdanet.data.archives import MAX_ARCHIVE_BYTES, check_npz_size, extract_archive, is_archive
from lambdanet.data.readers import load_dataset
from lambdanet.errors import DataError


def png(color: int, size: tuple[int, int] = (12, 9)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (color, color, color)).save(buf, "PNG")
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():  # a unix symlink, as `zip --symlinks` stores it
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tf.addfile(info)
    return path


PHOTOS = {"photos/cat/1.png": png(20), "photos/cat/2.png": png(40, (9, 14)),
          "photos/dog/1.png": png(200), "photos/dog/2.png": png(220),
          "__MACOSX/photos/cat/._1.png": b"\x00\x05\x16\x07resource fork"}


def refused(path: Path, tmp_path: Path, **kw: int) -> str:
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        extract_archive(path, dest, **kw)
    assert list(dest.iterdir()) == []  # nothing written
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path.name}: ")
    return msg


@pytest.mark.parametrize("name", ["p.zip", "p.tar", "p.tar.gz", "p.TGZ"])
def test_class_folders_are_extracted_and_read(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    make_zip(path, PHOTOS) if name.endswith(".zip") else make_tar(path, PHOTOS)
    assert is_archive(name) and not is_archive("x.npz") and not is_archive("x.h5")
    root = extract_archive(path, tmp_path / "dest")
    assert root == tmp_path / "dest" / "photos"  # the one folder that holds the class folders
    ds = load_dataset(path)  # the archive itself is a data set
    assert ds.classes == ["cat", "dog"] and ds.source == str(path)  # __MACOSX is no class
    assert sorted(ds.x_train[:, 0, 0, 0].tolist()) == [20, 40, 200, 220]
    assert ds.x_train.shape[1:] == (32, 32, 3)  # two sizes: the default


@pytest.mark.parametrize(("member", "needle"), [
    ("../evil.png", "escapes the archive (a '..' in its path)"),
    ("photos/../../evil.png", "escapes the archive"),
    ("photos\\..\\..\\evil.png", "escapes the archive"),
    ("/tmp/evil.png", "has an absolute path"),
    ("C:/evil.png", "has an absolute path"),
])
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_paths_that_escape_are_refused(tmp_path: Path, member: str, needle: str, kind: str) -> None:
    members = {**PHOTOS, member: png(1)}
    path = make_zip(tmp_path / "p.zip", members) if kind == "zip" else make_tar(tmp_path / "p.tar", members)
    msg = refused(path, tmp_path)
    assert needle in msg and "nothing was extracted" in msg
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_links_and_devices_are_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "l.zip", PHOTOS, links={"photos/cat/3.png": "/etc/passwd"})
    assert "member 'photos/cat/3.png' is a symbolic link" in refused(z, tmp_path)
    for kind, what in ((tarfile.SYMTYPE, "a symbolic link"), (tarfile.LNKTYPE, "a hard link"),
                       (tarfile.CHRTYPE, "a device or FIFO"), (tarfile.FIFOTYPE, "a device or FIFO")):
        info = tarfile.TarInfo("photos/cat/3.png")
        info.type = kind
        info.linkname = "photos/cat/1.png" if kind == tarfile.LNKTYPE else "/etc/passwd"
        t = make_tar(tmp_path / "l.tar.gz", PHOTOS, [info])
        assert f"member 'photos/cat/3.png' is {what}" in refused(t, tmp_path)


def test_bombs_are_refused_from_the_declared_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_ARCHIVE_BYTES == 1 << 30  # the documented default
    zeros = b"\0" * (3 << 20)  # 3 MiB that deflate to a few KiB
    z = make_zip(tmp_path / "b.zip", {**PHOTOS, "photos/cat/big.png": zeros})
    assert z.stat().st_size < 64 << 10
    msg = refused(z, tmp_path, max_bytes=2 << 20)
    assert "holds at least 3.0 MiB uncompressed, above the limit of 2.0 MiB" in msg
    t = make_tar(tmp_path / "b.tar.gz", {**PHOTOS, "photos/cat/big.png": zeros})
    assert "above the limit of 2.0 MiB" in refused(t, tmp_path, max_bytes=2 << 20)
    monkeypatch.setenv("LAMBDANET_MAX_ARCHIVE_BYTES", str(1 << 20))  # the variable sets the limit
    assert "above the limit of 1.0 MiB (LAMBDANET_MAX_ARCHIVE_BYTES)" in refused(z, tmp_path)
    # an .npz is a zip too: checked before np.load inflates it
    npz = tmp_path / "b.npz"
    np.savez_compressed(npz, x=np.zeros((3 << 20,), np.uint8), y=np.zeros((2,), np.uint8))
    with pytest.raises(DataError, match=r"^b\.npz: its arrays hold 3\.0 MiB uncompressed, above the limit"):
        check_npz_size(npz)


def test_archives_without_images_or_damaged_are_refused(tmp_path: Path) -> None:
    empty = make_zip(tmp_path / "e.zip", {"notes/readme.txt": b"hello", "data.csv": b"1,2"})
    assert refused(empty, tmp_path) == ("e.zip: holds no images (2 file(s), none named .jpg, .jpeg, .jfif, .png, "
                                        ".gif, .bmp, .webp, .tif, .tiff, .ppm, .pgm); archive one folder per "
                                        "class of photos")
    nothing = make_tar(tmp_path / "n.tar", {})
    assert "n.tar: holds no images (0 file(s)" in refused(nothing, tmp_path)
    (tmp_path / "x.zip").write_bytes(b"PK\x03\x04 not really")
    assert "cannot read it as a zip archive" in refused(tmp_path / "x.zip", tmp_path)
    (tmp_path / "x.tar.gz").write_bytes(b"\x1f\x8b not really")
    assert "cannot read it as a tar archive" in refused(tmp_path / "x.tar.gz", tmp_path)
    dup = tmp_path / "d.tar"
    make_tar(dup, {"photos/cat/1.png": png(1), "photos/dog/1.png": png(2)},
             [_file("photos/cat/1.png", png(3))])
    assert "member 'photos/cat/1.png' appears twice" in refused(dup, tmp_path)


def _file(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 0  # tarfile.addfile without a file object: an empty member of that name
    return info
