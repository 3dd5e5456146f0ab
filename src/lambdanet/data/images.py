"""Decode and resize images safely (uploads, photos, image folders) with Pillow.

>>> arr = photo_to_array(data, (32, 32, 3))      # what a model sees: uint8 (32, 32, 3)
>>> img = decode_image(data)                     # RGB PIL image, EXIF orientation applied
>>> img = fit_image(img, (32, 32))               # short side resized, centre cropped
>>> arr = prepare_image(img, (64, 64, 3))        # uint8 (64, 64, 3), bilinear stretch (legacy)

**The resize policy** (``fit = "center_crop"``, torchvision's usual evaluation transform,
``Resize(S)`` + ``CenterCrop(S)`` for a square size S): the image is scaled, keeping its aspect
ratio, so that it just covers ``(H, W)`` — for a square size its short side becomes S and its
long side ``int(S * long / short)``, as torchvision computes it — with Pillow's bilinear
filter (antialiased when shrinking), then the centre ``H x W`` is cut out (offsets
``int(round((h - H) / 2))``, as torchvision's ``CenterCrop``). A JPEG at least twice as large as
that in both directions is first decoded at 1/2, 1/4 or 1/8 scale (Pillow's ``draft``, libjpeg's
DCT scaling; never below the size needed). :func:`photo_to_array` is that whole path — decode,
EXIF orientation, colour mode, fit — and it is the one every image goes through: image folders
for training (:mod:`lambdanet.data.folders`), ``lambdanet predict``, ``lambdanet serve`` (the
photo page, ``/predict``, the v2 route) and the serving Lambda, so a photo gives the model the
same pixels whichever way it comes in.

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


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, fit_to: tuple[int, int] | None = None) -> Image.Image:
    """Decode image bytes into an RGB, EXIF-transposed Pillow image; :class:`ImageError` if unusable.

    ``fit_to`` = (H, W): the image is about to be fitted to that size, so a large JPEG may be
    decoded at a reduced scale (see the module doc); the result is still at least as large as
    :func:`fit_image` needs."""
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
            if fit_to is not None and src.format == "JPEG":
                _draft(src, fit_to)
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


# ---- the resize policy ------------------------------------------------------------------------
FIT = "center_crop"  # the one policy: resize (aspect kept) to cover H x W, cut out the centre
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def cover_size(w: int, h: int, height: int, width: int) -> tuple[int, int]:
    """(new_w, new_h) of a ``w x h`` image scaled, aspect kept, to just cover ``height x width``.

    The binding side becomes exactly its target and the other ``int(target * other / binding)``
    (torchvision's ``Resize`` arithmetic: for a square target S, the short side becomes S)."""
    if height * w >= width * h:  # height / h >= width / w: the height binds
        return max(width, int(height * w / h)), height
    return width, max(height, int(width * h / w))


def _draft(src: Image.Image, fit_to: tuple[int, int]) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result still covers ``fit_to``."""
    height, width = fit_to
    w, h = src.size
    orientation = src.getexif().get(0x0112, 1)
    if orientation in _TRANSPOSED:  # the stored pixels are on their side: fit the stored frame
        height, width = width, height
    need_w, need_h = cover_size(w, h, height, width)
    src.draft(None, (need_w, need_h))  # picks the largest scale that keeps the image >= this size


def fit_image(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The resize policy (module doc): scale to cover ``size`` = (H, W) keeping the aspect ratio,
    bilinear, then crop the centre H x W. An image already H x W is returned as it is."""
    height, width = (int(v) for v in size)
    w, h = img.size
    if (w, h) == (width, height):
        return img
    new_w, new_h = cover_size(w, h, height, width)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top = round((new_h - height) / 2.0)  # torchvision's CenterCrop offsets
    left = round((new_w - width) / 2.0)
    if (new_w, new_h) != (width, height):
        img = img.crop((left, top, left + width, top + height))
    return img


def to_array(img: Image.Image, channels: int) -> np.ndarray:
    """An RGB image -> uint8 (H, W, channels), channels 3 or 1 (grey, Pillow's ITU-R 601 luma)."""
    if channels not in (1, 3):
        raise ImageError(f"{channels} channels; expected 1 or 3")
    img = to_rgb(img)
    if channels == 1:
        return np.asarray(img.convert("L"), dtype=np.uint8)[:, :, np.newaxis]  # (H, W, 1)
    return np.asarray(img, dtype=np.uint8)  # (H, W, 3)


def photo_to_array(data: bytes, input_shape: tuple[int, int, int], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> the model input uint8 (H, W, C): decode (EXIF orientation, any mode
    to RGB, bombs refused), fit to (H, W) with the resize policy, C = 3 or 1."""
    h, w, c = (int(v) for v in input_shape)
    if c not in (1, 3):
        raise ImageError(f"input shape {tuple(input_shape)} has {c} channels; expected 1 or 3")
    img = decode_image(data, max_pixels=max_pixels, fit_to=(h, w))
    return to_array(fit_image(img, (h, w)), c)


def prepare_image(img: Image.Image, input_shape: tuple[int, int, int]) -> np.ndarray:
    """Stretch to ``input_shape`` = (H, W, C) with bilinear resampling -> uint8 (H, W, C).

    The pre-0.x behaviour (the aspect ratio is not kept), kept for callers that want exactly
    that; models take their inputs through :func:`photo_to_array` / :func:`fit_image`."""
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
    """Read and decode an image file -> uint8 (H, W, 3); fitted to ``input_shape`` = (H, W, C) with
    the resize policy if given (:func:`photo_to_array`: what a model sees of that file)."""
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
        if input_shape is None:
            return np.asarray(decode_image(data, max_pixels=max_pixels), dtype=np.uint8)
        return photo_to_array(data, input_shape, max_pixels=max_pixels)
    except ImageError as exc:
        raise ImageError(f"{p.name}: {exc}") from None
