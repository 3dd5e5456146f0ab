"""Image decoding: EXIF rotation, every colour mode, truncated files, bombs, 0-size, animated
GIFs, non-images; bilinear resizing to the model's input shape."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lambdanet.data.images import decode_image, load_image_file, prepare_image
from lambdanet.errors import ImageError
from tests.conftest import IMAGES


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_with_header(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR claims ``width`` x ``height`` (CRC fixed), to test header checks."""
    data = bytearray(encode(Image.new("L", (1, 1))))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


def img_error(data: bytes, **kw) -> str:
    with pytest.raises(ImageError) as info:
        decode_image(data, **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode_image(encode(img, "JPEG", exif=exif, quality=95))
    assert out.mode == "RGB" and out.size == (20, 40)
    a = np.asarray(out)
    assert a[2, 10, 0] > 200 and a[2, 10, 2] < 60  # the left (red) half is now on top
    assert a[37, 10, 2] > 200 and a[37, 10, 0] < 60


def test_cmyk_becomes_rgb() -> None:
    out = decode_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95))
    r, g, b = np.asarray(out)[4, 4].tolist()
    assert out.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    a16 = np.array([[0, 32896, 65535, 65535]], dtype=np.uint16)
    src = Image.fromarray(a16)
    assert src.mode == "I;16"
    out = decode_image(encode(src))
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out)[0, :, 0], [0, 128, 255, 255])


@pytest.mark.parametrize("mode", ["L", "P", "1", "LA", "RGBA", "I", "F"])
def test_other_modes_become_rgb(mode: str) -> None:
    out = decode_image(encode(Image.new("RGB", (3, 2), (200, 200, 200)).convert(mode), "TIFF"))
    assert out.mode == "RGB" and out.size == (3, 2)


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (255, 0, 0, 255))
    a = np.asarray(decode_image(encode(rgba)))
    assert a[0, 0].tolist() == [255, 255, 255] and a[0, 1].tolist() == [255, 0, 0]


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    a = np.asarray(decode_image(buf.getvalue()))
    assert a.shape == (4, 4, 3) and a[0, 0, 0] > 200 and a[0, 0, 2] < 60


def test_not_an_image_and_empty() -> None:
    assert img_error(b"hello, world") == ("not an image (Pillow cannot identify it); send a JPEG, PNG, GIF, "
                                          "BMP or WebP file")
    assert img_error(b"") == "empty image data; send a JPEG, PNG, GIF, BMP or WebP file"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files(fmt: str) -> None:
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    msg = img_error(data[: len(data) // 2])
    assert msg.startswith("cannot decode the image: the file is truncated") and "send a complete image file" in msg


def test_decompression_bombs_are_refused_from_the_header() -> None:
    # our limit: checked before any pixel is decoded
    assert img_error(png_with_header(8000, 6000)) == ("image is 8000x6000 = 48000000 pixels, above the limit "
                                                      "of 40000000; send a smaller image")
    assert img_error(encode(Image.new("RGB", (20, 10))), max_pixels=100) == (
        "image is 20x10 = 200 pixels, above the limit of 100; send a smaller image")
    # Pillow's own DecompressionBombError (above 2 x Image.MAX_IMAGE_PIXELS) is translated too
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 10
    assert img_error(png_with_header(side, side), max_pixels=10**12) == (
        f"image is larger than the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels; send a "
        f"smaller image")


def test_zero_sized_images() -> None:
    assert img_error(png_with_header(0, 5)) == "image has size 0x5; send an image with pixels"
    assert img_error(png_with_header(7, 0)) == "image has size 7x0; send an image with pixels"


def test_prepare_image_resizes_bilinear_to_h_w() -> None:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    out = prepare_image(img, (30, 40, 3))
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(img.resize((40, 30), Image.Resampling.BILINEAR)))
    gray = prepare_image(img, (8, 8, 1))
    assert gray.shape == (8, 8, 1)


def test_load_image_file(tmp_path: Path) -> None:
    a = load_image_file(IMAGES / "grumpy_cat.jpeg", (64, 64, 3))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8 and 20 < a.mean() < 235
    with pytest.raises(ImageError, match=r"no such file; pass the path of an image"):
        load_image_file(tmp_path / "missing.jpg")
    (tmp_path / "x.jpg").write_text("text")
    with pytest.raises(ImageError, match=r"^x\.jpg: not an image"):
        load_image_file(tmp_path / "x.jpg")
