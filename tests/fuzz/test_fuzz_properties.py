"""Property-based tests (hypothesis) of the config parser, the data readers and the request
parsers: whatever comes in, the answer is a valid value or ONE lambdanet error line — never
another exception. Each target where both answers are possible asserts that some examples were
accepted and some refused (a parser that refuses everything must not pass).

The number of examples per property is ``LAMBDANET_PROPERTY_EXAMPLES`` (default 60); the
examples actually run are counted into ``test-artifacts/reliability-counts.json`` (``fuzz``).
"""

from __future__ import annotations

import base64
import json
import os
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tests.conftest import both_outcomes
from tests.security.reliability_counts import record

from lambdanet.config import CNNConfig, MLPConfig, parse_config
from lambdanet.errors import ConfigError, DataError, LambdanetError, UserInputError

EXAMPLES = int(os.environ.get("LAMBDANET_PROPERTY_EXAMPLES", "60"))
COUNT: Counter[str] = Counter()
# derandomized by default: CI gets the same examples every run (a failure is a bug, never a fluke);
# LAMBDANET_FUZZ_RANDOM=1 explores new ones
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    derandomize=os.environ.get("LAMBDANET_FUZZ_RANDOM") != "1",
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def _record_counts() -> Iterator[None]:
    yield
    record("fuzz", {"property_examples": sum(COUNT.values()),
                    "property_examples_by_target": dict(sorted(COUNT.items())),
                    "property_command": "pytest tests/fuzz (LAMBDANET_PROPERTY_EXAMPLES sets the examples)"})


def one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text


# ---- config ----------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
VALID_MLP: dict[str, Any] = {"epochs": 5, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
                             "neurons": {"layer1": 4, "layer2": 1}, "learning_rate": 0.01}
VALID_CNN: dict[str, Any] = {"model": "lenet", "epochs": 1, "batch_size": 8}
KEYS = sorted({*MLPConfig.model_fields, *CNNConfig.model_fields, "layer1", "bogus"})


@st.composite
def near_valid_configs(draw: st.DrawFn) -> Any:
    """A valid MLP/CNN config with a few keys replaced, removed or added (finds deeper paths than
    random JSON)."""
    doc = json.loads(json.dumps(draw(st.sampled_from([VALID_MLP, VALID_CNN]))))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(KEYS))
        action = draw(st.sampled_from(["set", "drop", "nest"]))
        if action == "drop":
            doc.pop(key, None)
        elif action == "nest" and isinstance(doc.get("activations"), dict):
            doc["activations"][draw(st.sampled_from(["layer1", "layer2", "layer3"]))] = draw(JSON)
        else:
            doc[key] = draw(JSON)
    return doc


@SETTINGS
@given(st.one_of(JSON, near_valid_configs(), st.sampled_from([VALID_MLP, VALID_CNN])))
def _parse_config_examples(value: Any) -> None:
    try:
        config = parse_config(value, source="fuzz.json")
    except ConfigError as exc:
        COUNT["parse_config.rejected"] += 1
        one_line(exc)
        assert str(exc).startswith("fuzz.json")
        return
    COUNT["parse_config.accepted"] += 1
    assert isinstance(config, MLPConfig | CNNConfig)
    assert config.epochs > 0


def test_parse_config_validates_or_raises_config_error() -> None:
    both_outcomes(COUNT, "parse_config", _parse_config_examples)


# ---- readers -----------------------------------------------------------------------------------
DTYPES = st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.int8, np.bool_, np.uint16])
#: arrays whose shape may hold 0 anywhere but in the sample axes (see test_zero_size_samples_refused)
ARRAYS = hnp.arrays(dtype=DTYPES, elements=None, shape=st.one_of(
    hnp.array_shapes(min_dims=0, max_dims=1, min_side=0, max_side=5),
    hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=5)))
#: image/flat arrays with at least one sample and a 0 among the sample axes
ZERO_SAMPLES = hnp.arrays(dtype=DTYPES, elements=None, shape=st.tuples(
    st.integers(1, 3), st.sampled_from([(0,), (0, 0, 3), (4, 0, 3), (0, 4, 1)])).map(lambda t: (t[0], *t[1])))
NPZ_KEYS = st.sampled_from(["x", "y", "x_test", "y_test", "classes", "other"])


@st.composite
def _valid_arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """A small valid data set: uint8 images (m, h, w, c) or flat (m, n), labels 0..C-1, maybe a test split."""
    m, c = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    shape = draw(st.sampled_from([(2, 2, 3), (3, 1, 1), (4,)]))
    out = {"x": draw(hnp.arrays(np.uint8, (m, *shape))), "y": np.arange(m) % c}
    if draw(st.booleans()):
        out["x_test"], out["y_test"] = out["x"][:1], out["y"][:1]
    return out


def _mutate(draw: st.DrawFn, arrays: dict[str, np.ndarray], keys: list[str]) -> dict[str, np.ndarray]:
    """Drop, replace or add one array of a valid data set (or none)."""
    action = draw(st.sampled_from(["none", "none", "drop", "replace", "add"]))
    key = draw(st.sampled_from(keys))
    if action == "drop":
        arrays.pop(key, None)
    elif action in ("replace", "add"):
        arrays[key] = draw(ARRAYS)
    return arrays


@st.composite
def near_valid_npz(draw: st.DrawFn) -> dict[str, np.ndarray]:
    return _mutate(draw, draw(_valid_arrays()), ["x", "y", "x_test", "y_test", "classes"])


@st.composite
def near_valid_h5(draw: st.DrawFn) -> dict[str, np.ndarray]:
    a = draw(_valid_arrays())
    h5 = {"train_set_x": a["x"], "train_set_y": a["y"], "list_classes": np.array([b"a", b"b", b"c"])}
    if "x_test" in a:
        h5["test_set_x"], h5["test_set_y"] = a["x_test"], a["y_test"]
    return _mutate(draw, h5, ["train_set_x", "train_set_y", "test_set_x", "test_set_y", "list_classes"])


def _check_dataset(ds: Any) -> None:
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.x_train.shape[0] == ds.y_train.shape[0] > 0
    assert ds.x_train.ndim in (2, 4) and int(np.prod(ds.x_train.shape[1:])) > 0
    assert len(ds.classes) >= 1 and int(ds.y_train.max()) < len(ds.classes)
    if ds.x_test is not None:
        assert ds.x_test.shape[1:] == ds.x_train.shape[1:]
        assert ds.y_test is not None and ds.y_test.shape[0] == ds.x_test.shape[0]


@SETTINGS
@given(st.one_of(st.dictionaries(NPZ_KEYS, ARRAYS, max_size=5), near_valid_npz()))
def _npz_reader_examples(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    from lambdanet.data.readers import load_dataset

    path = tmp_path / "f.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub: a key could be allow_pickle
    try:
        ds = load_dataset(path)
    except DataError as exc:
        COUNT["npz_reader.rejected"] += 1
        one_line(exc)
        return
    COUNT["npz_reader.accepted"] += 1
    _check_dataset(ds)


def test_npz_reader_dataset_or_data_error(tmp_path: Path) -> None:
    both_outcomes(COUNT, "npz_reader", lambda: _npz_reader_examples(tmp_path))


@settings(max_examples=max(EXAMPLES // 3, 10), deadline=None, database=None,
          derandomize=os.environ.get("LAMBDANET_FUZZ_RANDOM") != "1",
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ZERO_SAMPLES)
def test_zero_size_samples_refused(tmp_path: Path, x: np.ndarray) -> None:
    from lambdanet.data.readers import load_dataset

    COUNT["zero_size_samples.rejected"] += 1
    path = tmp_path / "z.npz"
    np.savez(path, x=x, y=np.arange(x.shape[0]) % 2)
    with pytest.raises(DataError):
        load_dataset(path)


H5_KEYS = st.sampled_from(["train_set_x", "train_set_y", "test_set_x", "test_set_y", "list_classes"])


@SETTINGS
@given(st.one_of(st.dictionaries(H5_KEYS, ARRAYS, max_size=5), near_valid_h5()))
def _h5_reader_examples(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    import h5py

    from lambdanet.data.readers import load_dataset

    path = tmp_path / "datasets.h5"
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    try:
        ds = load_dataset(path)
    except DataError as exc:
        COUNT["h5_reader.rejected"] += 1
        one_line(exc)
        return
    COUNT["h5_reader.accepted"] += 1
    _check_dataset(ds)


def test_h5_reader_dataset_or_data_error(tmp_path: Path) -> None:
    both_outcomes(COUNT, "h5_reader", lambda: _h5_reader_examples(tmp_path))


@SETTINGS
@given(st.binary(max_size=600), st.sampled_from([".npz", ".h5"]), st.booleans())
def test_reader_random_bytes(tmp_path: Path, blob: bytes, suffix: str, zip_wrap: bool) -> None:
    """Random bytes as the file — or inside a zip as x.npy/y.npy for the npz reader."""
    from lambdanet.data.readers import load_dataset

    COUNT["random_bytes_reader.rejected"] += 1
    path = tmp_path / f"f{suffix}"
    if zip_wrap and suffix == ".npz":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", b"\x93NUMPY" + blob)
            z.writestr("y.npy", blob)
    else:
        path.write_bytes((b"\x89HDF\r\n\x1a\n" if suffix == ".h5" and zip_wrap else b"") + blob)
    with pytest.raises(DataError) as info:
        load_dataset(path)
    one_line(info.value)


# ---- request parsers -----------------------------------------------------------------------------
@SETTINGS
@given(st.one_of(st.text(max_size=60), st.binary(max_size=45).map(lambda b: base64.b64encode(b).decode()),
                 st.binary(max_size=45).map(lambda b: "data:image/png;base64," + base64.urlsafe_b64encode(b).decode()),
                 st.integers(), st.none()))
def _b64decode_examples(text: Any) -> None:
    from lambdanet.serve.inputs import b64decode

    try:
        out = b64decode(text, "data")
    except UserInputError as exc:
        COUNT["b64decode.rejected"] += 1
        one_line(exc)
        return
    COUNT["b64decode.accepted"] += 1
    assert isinstance(out, bytes)


def test_b64decode_bytes_or_user_error() -> None:
    both_outcomes(COUNT, "b64decode", _b64decode_examples)


DIMS = st.integers(-3, 10) | st.sampled_from([8, 3, 0, 10**6, 2**31, 2**40])


TENSOR_REQUESTS = st.tuples(
    hnp.arrays(st.sampled_from([np.float64, np.int64, np.uint8]), st.integers(0, 400) | st.sampled_from([192, 384]),
               elements=None),
    st.sampled_from(["UINT8", "FP32", "FP64", "FP16", "uint8", "BYTES", "INT64", ""]),
    st.lists(DIMS, max_size=5) | st.just([1, 8, 8, 3]) | st.just([2, 8, 8, 3]))
VALID_TENSORS = st.integers(1, 2).flatmap(lambda n: st.tuples(
    hnp.arrays(np.uint8, 192 * n), st.sampled_from(["UINT8", "FP32", "FP64"]), st.just([n, 8, 8, 3])))


@SETTINGS
@given(st.one_of(TENSOR_REQUESTS, VALID_TENSORS))
def _tensor_input_examples(request: tuple[np.ndarray, str, list[int]]) -> None:
    from lambdanet.serve.inputs import tensor_input

    values, datatype, shape = request
    try:
        batch = tensor_input(values, datatype, shape, (8, 8, 3))
    except UserInputError as exc:
        COUNT["tensor_input.rejected"] += 1
        one_line(exc)
        return
    COUNT["tensor_input.accepted"] += 1
    assert batch.dtype == np.uint8 and batch.shape[1:] == (8, 8, 3) and batch.shape[0] >= 1


def test_tensor_input_batch_or_user_error() -> None:
    both_outcomes(COUNT, "tensor_input", _tensor_input_examples)


@SETTINGS
@given(st.binary(max_size=400) | st.sampled_from([192, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       st.sampled_from([(8, 8, 3), (4, 4, 1), (32, 32, 3)]))
def _bytes_input_examples(blob: bytes, shape: tuple[int, int, int]) -> None:
    from lambdanet.serve.inputs import bytes_input

    try:
        arr, kind = bytes_input(blob, shape, 1_000_000)
    except LambdanetError as exc:
        COUNT["bytes_input.rejected"] += 1
        assert 400 <= exc.http_status < 500
        one_line(exc)
        return
    COUNT["bytes_input.accepted"] += 1
    assert arr.shape == shape and arr.dtype == np.uint8 and kind in ("raw", "image")


def test_bytes_input_array_or_image_error() -> None:
    both_outcomes(COUNT, "bytes_input", _bytes_input_examples)
