"""Bounded fuzz targets (hypothesis) for the two decoders that face the network:

* the image decoder (:func:`lambdanet.data.images.decode_image` + ``prepare_image``), fed valid
  seed images of many formats (PNG in five modes, JPEG, CMYK JPEG, animated GIF, BMP, WebP,
  TIFF, ICO, PPM, TGA) mutated by bit flips, overwrites, truncations and splices, plus raw bytes;
* the v2 request decoder (``serve.v2._split_body`` + ``_inputs_to_batch``), fed generated
  inference requests (JSON and the binary-data extension) with wrong names, datatypes, shapes,
  lengths, base64 and header lengths, and byte-mutated bodies.

Each answer must be a valid value or ONE 4xx lambdanet error — never another exception; each
target asserts that some examples were decoded and some refused.
Examples per target: ``LAMBDANET_FUZZ_EXAMPLES`` (default 400; ~10 s each on one core);
derandomized unless ``LAMBDANET_FUZZ_RANDOM=1``. The iterations run are counted into
``test-artifacts/reliability-counts.json`` (``fuzz``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import struct
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import both_outcomes
from tests.security.reliability_counts import record

from lambdanet.errors import ImageError, LambdanetError

EXAMPLES = int(os.environ.get("LAMBDANET_FUZZ_EXAMPLES", "400"))
COUNT: Counter[str] = Counter()
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("LAMBDANET_FUZZ_RANDOM") != "1",
                suppress_health_check=list(HealthCheck))
MAX_PIXELS = 1_000_000
SHAPE = (8, 8, 3)


@pytest.fixture(scope="module", autouse=True)
def _record_counts() -> Iterator[None]:
    yield
    record("fuzz", {"image_decoder_iterations": COUNT["image"], "v2_decoder_iterations": COUNT["v2"],
                    "fuzz_rejected": COUNT["image.rejected"] + COUNT["v2.rejected"],
                    "fuzz_accepted": COUNT["image.accepted"] + COUNT["v2.accepted"],
                    "fuzz_by_target": {k: v for k, v in sorted(COUNT.items()) if "." in k},
                    "fuzz_command": "pytest tests/fuzz (LAMBDANET_FUZZ_EXAMPLES sets the iterations per target)"})


def _seeds() -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    out = []
    for img, fmt, kw in [
        (rgb, "PNG", {}), (rgb.convert("RGBA"), "PNG", {}), (rgb.convert("P"), "PNG", {}),
        (rgb.convert("L"), "PNG", {}), (Image.fromarray((np.arange(120, dtype=np.uint16) * 500).reshape(12, 10)),
                                        "PNG", {}),
        (rgb, "JPEG", {"quality": 80}), (rgb.convert("CMYK"), "JPEG", {}), (rgb, "BMP", {}), (rgb, "WEBP", {}),
        (rgb, "TIFF", {}), (rgb, "ICO", {}), (rgb, "PPM", {}), (rgb, "TGA", {}),
        (rgb.convert("P"), "GIF", {"save_all": True, "append_images": [rgb.convert("P").rotate(90)]}),
    ]:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)  # type: ignore[arg-type]  # kw: a dict of save options per format
        out.append(buf.getvalue())
    return out


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "overwrite", "truncate", "splice", "big"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos:pos + len(chunk)] = chunk
        elif op == "truncate":
            del data[pos:]
        elif op == "splice":
            other = draw(st.sampled_from(SEEDS))
            data[pos:] = other[draw(st.integers(0, len(other) - 1)):]
        else:  # a header-sized field set to a huge value (dimensions, lengths, offsets)
            data[pos:pos + 4] = struct.pack(">I", draw(st.sampled_from([0, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])))
    return bytes(data)


@FUZZ
@given(st.one_of(mutated(), st.binary(max_size=300)))
def _image_decoder_examples(blob: bytes) -> None:
    from lambdanet.data.images import decode_image, prepare_image

    COUNT["image"] += 1
    try:
        img = decode_image(blob, max_pixels=MAX_PIXELS)
        arr = prepare_image(img, SHAPE)
    except ImageError as exc:
        COUNT["image.rejected"] += 1
        assert 400 <= exc.http_status < 500 and "\n" not in str(exc) and str(exc)
        return
    COUNT["image.accepted"] += 1
    assert img.mode == "RGB" and 0 < img.size[0] * img.size[1] <= MAX_PIXELS
    assert arr.shape == SHAPE and arr.dtype == np.uint8


def test_fuzz_image_decoder() -> None:
    both_outcomes(COUNT, "image", _image_decoder_examples)


# ---- the v2 decoder ----------------------------------------------------------------------------
SCALARS = st.one_of(st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.none(), st.text(max_size=4))
DIMS = st.one_of(st.integers(-2, 10), st.sampled_from([8, 3, 1, 0, 192, 10**6, 2**31, 2**40]))
B64 = st.one_of(st.sampled_from(SEEDS).map(lambda b: base64.b64encode(b).decode()),
                mutated().map(lambda b: base64.b64encode(b).decode()), st.text(max_size=10),
                st.sampled_from(SEEDS).map(lambda b: {"b64": base64.b64encode(b).decode()}))


@st.composite
def v2_request(draw: st.DrawFn) -> tuple[bytes, str | None]:
    specs = []
    binary = b""
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(["input", "input", "image", "image", "x"]))
        spec: dict[str, Any] = {"name": name,
                                "datatype": draw(st.sampled_from(["UINT8", "FP32", "FP64", "FP16", "BYTES", "INT8",
                                                                  "uint8", ""])),
                                "shape": draw(st.one_of(st.just([1, 8, 8, 3]), st.just([2, 8, 8, 3]), st.just([1]),
                                                        st.lists(DIMS, max_size=5)))}
        how = draw(st.sampled_from(["pixels", "images", "scalars", "binary", "none"]))
        if how == "pixels":
            n = draw(st.sampled_from([192, 384, 0, 5]))
            spec["data"] = draw(st.lists(st.integers(0, 255), min_size=n, max_size=n))
        elif how == "images":
            spec["data"] = draw(st.lists(B64, max_size=2))
        elif how == "scalars":
            spec["data"] = draw(st.lists(st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), max_size=6))
        elif how == "binary":
            blob = draw(st.one_of(st.binary(max_size=400), st.sampled_from(SEEDS).map(
                lambda b: struct.pack("<I", len(b)) + b)))
            spec["parameters"] = {"binary_data_size": draw(st.one_of(st.just(len(blob)), st.integers(-1, 500)))}
            binary += blob
        specs.append(spec)
    doc: dict[str, Any] = {"inputs": specs}
    if draw(st.booleans()):
        doc["outputs"] = draw(st.lists(st.fixed_dictionaries({"name": st.sampled_from(
            ["probabilities", "label", "logits"])}), max_size=2))
    head = json.dumps(doc).encode()
    body = head + binary
    header_len: str | None = str(len(head)) if binary else None
    tweak = draw(st.sampled_from(["none", "none", "flip", "header_len", "cut"]))
    if tweak == "flip" and body:
        pos = draw(st.integers(0, len(body) - 1))
        body = body[:pos] + bytes([body[pos] ^ 0xFF]) + body[pos + 1:]
    elif tweak == "header_len":
        header_len = draw(st.sampled_from(["0", "-1", "abc", str(len(body) + 1), str(len(head) - 1), ""]))
    elif tweak == "cut":
        body = body[: draw(st.integers(0, len(body)))]
    return body, header_len


@st.composite
def valid_v2_request(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A request the decoder must take: N images as JSON pixels, as the binary-data extension, or as
    base64 / length-prefixed BYTES seed images (then maybe mutated like the others)."""
    n = draw(st.integers(1, 2))
    how = draw(st.sampled_from(["pixels", "binary", "b64", "bytes"]))
    binary = b""
    if how == "pixels":
        spec: dict[str, Any] = {"name": "input", "datatype": "UINT8", "shape": [n, *SHAPE],
                                "data": draw(st.lists(st.integers(0, 255), min_size=192 * n, max_size=192 * n))}
    elif how == "binary":
        binary = draw(st.binary(min_size=192 * n, max_size=192 * n))
        spec = {"name": "input", "datatype": "UINT8", "shape": [n, *SHAPE],
                "parameters": {"binary_data_size": len(binary)}}
    else:
        images = draw(st.lists(st.sampled_from(SEEDS), min_size=n, max_size=n))
        if how == "b64":
            spec = {"name": "image", "datatype": "BYTES", "shape": [n],
                    "data": [base64.b64encode(b).decode() for b in images]}
        else:
            binary = b"".join(struct.pack("<I", len(b)) + b for b in images)
            spec = {"name": "image", "datatype": "BYTES", "shape": [n],
                    "parameters": {"binary_data_size": len(binary)}}
    head = json.dumps({"inputs": [spec]}).encode()
    return head + binary, (str(len(head)) if binary else None)


@FUZZ
@given(st.one_of(v2_request(), v2_request(), valid_v2_request()))  # 1 in 3 well-formed
def _v2_decoder_examples(request: tuple[bytes, str | None]) -> None:
    from lambdanet.serve.v2 import _inputs_to_batch, _split_body

    body, header_len = request
    COUNT["v2"] += 1
    served = SimpleNamespace(input_shape=SHAPE)

    async def decode() -> np.ndarray:
        header, binary = _split_body(body, header_len)
        return await _inputs_to_batch(header, binary, served, MAX_PIXELS)  # type: ignore[arg-type]

    try:
        batch = asyncio.run(decode())
    except LambdanetError as exc:
        COUNT["v2.rejected"] += 1
        assert 400 <= exc.http_status < 500, f"{type(exc).__name__} -> {exc.http_status}"
        assert str(exc) and "\n" not in str(exc)
        return
    COUNT["v2.accepted"] += 1
    assert batch.dtype == np.uint8 and batch.ndim == 4 and batch.shape[1:] == SHAPE and batch.shape[0] >= 1


def test_fuzz_v2_decoder() -> None:
    both_outcomes(COUNT, "v2", _v2_decoder_examples)
