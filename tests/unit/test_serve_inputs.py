"""What clients send -> the uint8 (N, H, W, C) batch: raw C×H×W bytes, tensors, base64."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from lambdanet.errors import ImageError, UserInputError
from lambdanet.serve.inputs import b64decode, bytes_input, png_data_url, raw_input, tensor_input


def test_raw_chw_bytes_become_hwc() -> None:
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    chw = hwc.transpose(2, 0, 1).tobytes()  # what the CIFAR-10 Lambda's phone app sent
    np.testing.assert_array_equal(raw_input(chw, (32, 32, 3)), hwc)
    arr, kind = bytes_input(chw, (32, 32, 3), 40_000_000)
    assert kind == "raw"
    np.testing.assert_array_equal(arr, hwc)


def test_other_lengths_are_decoded_as_images() -> None:
    img = Image.new("RGB", (10, 20), (200, 10, 30))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    arr, kind = bytes_input(buf.getvalue(), (32, 32, 3), 40_000_000)
    assert kind == "image" and arr.shape == (32, 32, 3) and tuple(arr[5, 5]) == (200, 10, 30)
    with pytest.raises(ImageError):
        bytes_input(b"\x00" * 3071, (32, 32, 3), 40_000_000)


def test_tensor_input_shapes_and_dtypes() -> None:
    x = np.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3) % 256
    out = tensor_input(x.ravel().astype(np.int64), "UINT8", [2, 4, 4, 3], (4, 4, 3))
    assert out.dtype == np.uint8 and out.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(out, x)
    f = tensor_input(x.ravel().astype(np.float64) + 0.2, "FP32", [2, 4, 4, 3], (4, 4, 3))
    np.testing.assert_array_equal(f, x)  # rounded pixel values
    one = tensor_input(x[0].ravel(), "UINT8", [4, 4, 3], (4, 4, 3))  # a single image without N
    assert one.shape == (1, 4, 4, 3)


@pytest.mark.parametrize("values, datatype, shape, needle", [
    (np.zeros(48), "UINT8", [1, 4, 4, 4], "shape must be"),
    (np.zeros(48), "UINT8", [0, 4, 4, 3], "1 <= N"),
    (np.zeros(0), "UINT8", [2**62, 4, 4, 3], "1 <= N"),
    (np.zeros(47), "UINT8", [1, 4, 4, 3], "needs 48 values"),
    (np.full(48, 256.0), "UINT8", [1, 4, 4, 3], "[0, 255]"),
    (np.full(48, 1.5), "UINT8", [1, 4, 4, 3], "integers"),
    (np.full(48, np.nan), "FP32", [1, 4, 4, 3], "[0, 255]"),
    (np.full(48, -1.0), "FP32", [1, 4, 4, 3], "[0, 255]"),
    (np.zeros(48), "BOOL", [1, 4, 4, 3], "not supported"),
    (np.zeros(48), "UINT8", ["a", 4, 4, 3], "list of integers"),
])
def test_tensor_input_errors(values: np.ndarray, datatype: str, shape: list, needle: str) -> None:
    with pytest.raises(UserInputError) as err:
        tensor_input(values, datatype, shape, (4, 4, 3))
    assert needle in str(err.value)


def test_b64decode_variants() -> None:
    data = bytes(range(256))
    assert b64decode(base64.b64encode(data).decode()) == data
    assert b64decode(base64.urlsafe_b64encode(data).decode().rstrip("=")) == data
    assert b64decode("data:image/png;base64," + base64.b64encode(data).decode()) == data
    for bad in ("!!!", 12, None):
        with pytest.raises(UserInputError):
            b64decode(bad)  # type: ignore[arg-type]


def test_preview_png_round_trips() -> None:
    x = np.random.default_rng(1).integers(0, 256, size=(8, 6, 3), dtype=np.uint8)
    url = png_data_url(x)
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    np.testing.assert_array_equal(back, x)
