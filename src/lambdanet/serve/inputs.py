"""Turn what clients send into the uint8 (N, H, W, C) batch a predictor takes.

Three shapes of input, all preprocessed exactly as in training (the /255 and any normalisation
happen inside the predictor):

- an encoded image (PNG, JPEG, …): :func:`lambdanet.data.images.photo_to_array` — decoded with
  EXIF orientation, bombs refused, fitted to the model's input by the resize policy (short side
  resized, centre cropped; the model's recorded ``preprocessing.fit``), the very function that
  turns an image folder into training arrays;
- the raw uint8 C×H×W bytes of the model's input (the CIFAR-10 Lambda's format; 3×32×32 = 3072
  bytes), recognised by their exact length;
- a v2 tensor named ``input`` (UINT8, or FP32 pixel values in [0, 255]) of shape (N, H, W, C).
"""

from __future__ import annotations

import base64
import binascii
import io
import math

import numpy as np

from lambdanet.data.images import photo_to_array
from lambdanet.errors import ImageError, UserInputError

Shape = tuple[int, int, int]
MAX_BATCH = 4096  # images per request


def b64decode(text: str, what: str = "data") -> bytes:
    """Standard or URL-safe base64 (a ``data:…;base64,`` prefix is allowed) -> bytes."""
    if not isinstance(text, str):
        raise UserInputError(f"'{what}' must be a base64 string")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = "".join(text.split())
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UserInputError(f"'{what}' is not valid base64: {exc}") from None


def image_input(data: bytes, input_shape: Shape, max_pixels: int) -> np.ndarray:
    """Encoded image bytes -> uint8 (H, W, C) as training on an image folder makes it."""
    if not data:
        raise ImageError("the image is empty: send the bytes of a PNG or JPEG file")
    return photo_to_array(data, input_shape, max_pixels=max_pixels)


def raw_input(data: bytes, input_shape: Shape) -> np.ndarray:
    """Raw uint8 C×H×W bytes -> uint8 (H, W, C)."""
    h, w, c = input_shape
    chw = np.frombuffer(data, dtype=np.uint8).reshape(c, h, w)  # (C, H, W)
    return np.ascontiguousarray(chw.transpose(1, 2, 0))  # (H, W, C)


def bytes_input(data: bytes, input_shape: Shape, max_pixels: int) -> tuple[np.ndarray, str]:
    """Raw C×H×W bytes when the length matches exactly, else an encoded image.

    Returns the (H, W, C) uint8 array and ``"raw"`` or ``"image"``.
    """
    h, w, c = input_shape
    if len(data) == h * w * c:
        return raw_input(data, input_shape), "raw"
    return image_input(data, input_shape, max_pixels), "image"


def tensor_input(values: np.ndarray, datatype: str, shape: list[int], input_shape: Shape) -> np.ndarray:
    """A v2 ``input`` tensor (flat or nested values) -> uint8 (N, H, W, C)."""
    h, w, c = input_shape
    try:
        dims = [int(d) for d in shape]
    except (TypeError, ValueError, OverflowError):
        raise UserInputError(f"input 'input': shape must be a list of integers, got {shape!r}") from None
    if len(dims) == 3:
        dims = [1, *dims]
    if len(dims) != 4 or dims[1:] != [h, w, c] or not 1 <= dims[0] <= MAX_BATCH:
        raise UserInputError(f"input 'input': shape must be [N, {h}, {w}, {c}] with 1 <= N <= {MAX_BATCH}, "
                             f"got {shape!r}")
    needed = math.prod(dims)  # Python ints: no int64 wrap-around
    if values.size != needed:
        raise UserInputError(f"input 'input': shape {dims} needs {needed} values, got {values.size}")
    dt = datatype.upper()
    if dt == "UINT8":
        if values.dtype != np.uint8:
            if not np.all((values >= 0) & (values <= 255)) or not np.all(values == np.round(values)):
                raise UserInputError("input 'input': UINT8 values must be integers in [0, 255]")
            values = values.astype(np.uint8)
        return values.reshape(dims)
    if dt in ("FP32", "FP64", "FP16"):
        f = values.astype(np.float32, copy=False)
        if not np.all(np.isfinite(f)) or f.min() < 0 or f.max() > 255:
            raise UserInputError("input 'input': float pixel values must lie in [0, 255] "
                                 "(the model divides by 255 itself)")
        return np.rint(f).astype(np.uint8).reshape(dims)
    raise UserInputError(f"input 'input': datatype {datatype!r} is not supported (use UINT8 or FP32)")


def png_data_url(image: np.ndarray) -> str:
    """uint8 (H, W, C) -> ``data:image/png;base64,…`` (the preview of what the model saw)."""
    from PIL import Image

    arr = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


INLINE_BYTES = 64 * 1024  # decode smaller payloads on the event loop (a thread hop costs more)


async def offload(size: int, fn, *args):  # type: ignore[no-untyped-def]
    """Run CPU-bound ``fn(*args)`` inline for small payloads, in a thread for big ones."""
    import asyncio

    if size <= INLINE_BYTES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)
