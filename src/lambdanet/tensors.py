"""Arrays as raw bytes plus a small JSON header — the only way tensors cross a store.

Layout: 4-byte little-endian header length, the UTF-8 JSON header
``{"dtype": "<f4", "shape": [20, 209]}``, then the C-order array bytes. Never pickle: a store
shared with others must not be able to run code in a worker.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from lambdanet.errors import DataError

ALLOWED_DTYPES = frozenset({"<f2", "<f4", "<f8", "|u1", "<i4", "<i8", "|i1", "<u4", "|b1", "<u2"})
_LEN = struct.Struct("<I")


def encode(array: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(array)
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    arr = arr.astype(dtype, copy=False)
    header = json.dumps({"dtype": dtype.str, "shape": list(arr.shape)}).encode()
    return _LEN.pack(len(header)) + header + arr.tobytes()


def decode(blob: bytes | bytearray | memoryview) -> np.ndarray:
    view = memoryview(blob)
    if len(view) < 4:
        raise DataError("tensor blob too short: not written by lambdanet.tensors.encode")
    (n,) = _LEN.unpack(view[:4])
    try:
        header = json.loads(bytes(view[4 : 4 + n]))
        dtype = np.dtype(header["dtype"])
        shape = tuple(int(s) for s in header["shape"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"tensor blob has a bad header: {exc}") from exc
    if dtype.str not in ALLOWED_DTYPES or any(s < 0 for s in shape):
        raise DataError(f"tensor blob has a disallowed dtype/shape {dtype.str} {shape}")
    body = view[4 + n :]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(body) != expected:
        raise DataError(f"tensor blob holds {len(body)} bytes, header says {expected}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).copy()


def json_safe(value: Any) -> Any:
    """``value`` with NaN/±inf floats as None, numpy scalars as Python numbers and tuples as lists,
    so that strict JSON (a browser's ``JSON.parse``, DynamoDB) accepts it."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value

