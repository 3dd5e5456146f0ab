"""Decode and resize images safely (uploads, photos, image folders) with Pillow.

>>> img = decode_image(data)                     # RGB PIL image, EXIF orientation applied
>>> arr = prepare_image(img, (64, 64, 3))        # uint8 (64, 64, 3), bilinear resize

:func:`decode_image` refuses what is not a usable image with one
:class:`~lambdanet.errors.ImageError` line: empty data, non-images, truncated files, 0-sized
images and decompression bombs (more than ``max_pixels`` pixels, checked from the header before
any pixel is decoded, and Pillow's own ``DecompressionBombWarning``/``Error``). Animated images
give their first frame. Every mode becomes RGB: alpha is composited on white; 16-bit and 32-bit
grayscale (``I;16``, ``I``) and float (``F``) images are scaled to 0..255, not clipped.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lambdanet.errors import ImageError

MAX_PIXELS = 40_000_000
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
                  ZeroDivisionError, MemoryError)


def _bomb(w: int, h: int, max_pixels: int) -> ImageError:
    return ImageError(f"image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels}; "
                      f"send a smaller image")


def _zero_size(data: bytes) -> tuple[int, int] | None:
    """(w, h) from a PNG/GIF header that declares a 0-sized image (Pillow refuses to identify those)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
    elif data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
    else:
        return None
    return (w, h) if w == 0 or h == 0 else None


def _high_bit_to_l(img: Image.Image) -> Image.Image:
    """I;16 / I / F grayscale -> 8-bit L, scaling the value range (not clipping it)."""
    a = np.asarray(img).astype(np.float64)  # (H, W)
    hi = float(a.max()) if a.size else 0.0
    if img.mode == "F" and hi <= 1.0:
        a = a * 255.0  # float images in [0, 1]
    elif hi > 255.0:
        a = a * (255.0 / (65535.0 if hi <= 65535.0 else hi))
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB (alpha composited on white, high bit depths scaled)."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return _high_bit_to_l(img).convert("RGB")
    if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode image bytes into an RGB, EXIF-transposed Pillow image; :class:`ImageError` if unusable."""
    if not data:
        raise ImageError("empty image data; send a JPEG, PNG, GIF, BMP or WebP file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            src = Image.open(io.BytesIO(data))
            w, h = src.size
            if w <= 0 or h <= 0:
                raise ImageError(f"image has size {w}x{h}; send an image with pixels")
            if w * h > max_pixels:
                raise _bomb(w, h, max_pixels)
            if getattr(src, "is_animated", False):
                src.seek(0)  # the first frame
            src.load()
            ImageOps.exif_transpose(src, in_place=True)  # in place: no copy of an upright image
            return to_rgb(src)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
        raise ImageError(f"image is larger than the decompression-bomb limit of {limit} pixels; "
                         f"send a smaller image") from None
    except UnidentifiedImageError:
        if (wh := _zero_size(data)) is not None:
            raise ImageError(f"image has size {wh[0]}x{wh[1]}; send an image with pixels") from None
        raise ImageError("not an image (Pillow cannot identify it); send a JPEG, PNG, GIF, BMP or WebP "
                         "file") from None
    except _DECODE_ERRORS as exc:
        what = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageError(f"cannot decode the image: the file is {what} ({exc.__class__.__name__}: "
                         f"{str(exc)[:80]}); send a complete image file") from None


def prepare_image(img: Image.Image, input_shape: tuple[int, int, int]) -> np.ndarray:
    """Resize to ``input_shape`` = (H, W, C) with bilinear resampling -> uint8 (H, W, C)."""
    h, w, c = (int(v) for v in input_shape)
    if c not in (1, 3):
        raise ImageError(f"input shape {tuple(input_shape)} has {c} channels; expected 1 or 3")
    img = to_rgb(img)
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    if c == 1:
        return np.asarray(img.convert("L"), dtype=np.uint8)[:, :, np.newaxis]  # (H, W, 1)
    return np.asarray(img, dtype=np.uint8)  # (H, W, 3)


def load_image_file(path: str | Path, input_shape: tuple[int, int, int] | None = None,
                    max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read and decode an image file -> uint8 (H, W, 3); resized to ``input_shape`` if given."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file; pass the path of an image") from None
    except IsADirectoryError:
        raise ImageError(f"{p}: is a folder, not an image file") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot read it ({exc.__class__.__name__}: {exc.strerror})") from None
    try:
        img = decode_image(data, max_pixels=max_pixels)
    except ImageError as exc:
        raise ImageError(f"{p.name}: {exc}") from None
    if input_shape is None:
        return np.asarray(img, dtype=np.uint8)
    return prepare_image(img, input_shape)
