"""Open Inference Protocol v2 against a real uvicorn server on loopback (models trained for real)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from lambdanet.data.images import load_image_file
from lambdanet.data.readers import load_dataset
from lambdanet.objects.folder import FolderStore
from lambdanet.registry import ModelRegistry
from lambdanet.serve.app import create_app
from tests.conftest import CATVNONCAT, CIFAR10, IMAGES
from tests.e2e.serve_support import numpy_forward
from tests.support.serving import UvicornThread, register_catvnoncat_mlp, register_cifar_mlp

GRUMPY = IMAGES / "grumpy_cat.jpeg"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    reg = ModelRegistry(FolderStore(tmp_path_factory.mktemp("registry")))
    register_catvnoncat_mlp(reg, CATVNONCAT / "datasets.h5")
    register_cifar_mlp(reg, CIFAR10)
    return reg


@pytest.fixture(scope="module")
def client(registry: ModelRegistry) -> Iterator[httpx.Client]:
    with UvicornThread(create_app(registry)) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def catvnoncat() -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset(CATVNONCAT / "datasets.h5")
    return ds.x_train, ds.y_train


def test_health_and_server_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "lambdanet" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_lists_both_inputs_and_outputs(client: httpx.Client) -> None:
    meta = client.get("/v2/models/itsacat").json()
    assert meta["name"] == "itsacat" and meta["versions"] == ["1"]
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert inputs["input"]["shape"] == [-1, 64, 64, 3] and inputs["input"]["datatype"] == "FP32"
    assert inputs["image"] == {**inputs["image"], "datatype": "BYTES", "shape": [-1]}
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["probabilities"]["shape"] == [-1, 2] and outputs["label"]["datatype"] == "BYTES"
    cifar = client.get("/v2/models/cifar/versions/1").json()
    assert {i["name"]: i["shape"] for i in cifar["inputs"]}["input"] == [-1, 32, 32, 3]
    assert cifar["parameters"]["classes"][3] == "cat"
    assert client.get("/v2/models/itsacat/ready").json() == {"name": "itsacat", "version": "1", "ready": True}
    assert client.get("/v2/models/cifar/versions/1/ready").json()["ready"] is True


def test_infer_uint8_tensor_matches_an_independent_forward(client: httpx.Client, registry: ModelRegistry,
                                                         catvnoncat: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = catvnoncat
    batch = x[:40]  # (40, 64, 64, 3)
    body = {"id": "req-1", "inputs": [{"name": "input", "datatype": "UINT8", "shape": list(batch.shape),
                                       "data": batch.ravel().tolist()}]}
    r = client.post("/v2/models/itsacat/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "req-1" and out["model_name"] == "itsacat" and out["model_version"] == "1"
    tensors = {t["name"]: t for t in out["outputs"]}
    probs = np.asarray(tensors["probabilities"]["data"]).reshape(tensors["probabilities"]["shape"])
    expected = numpy_forward(registry.load("itsacat:1"), batch)  # float64, written in the test
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
    labels = tensors["label"]["data"]
    assert labels == [["non-cat", "cat"][int(k)] for k in expected.argmax(1)]
    # the served model was really trained: it fits its training images well above chance
    accuracy = float((probs.argmax(1) == y[:40]).mean())
    assert accuracy >= 0.7


def test_infer_fp32_equals_uint8_and_nested_data(client: httpx.Client,
                                                 catvnoncat: tuple[np.ndarray, np.ndarray]) -> None:
    batch = catvnoncat[0][:3]
    r8 = client.post("/v2/models/itsacat/infer", json={"inputs": [
        {"name": "input", "datatype": "UINT8", "shape": [3, 64, 64, 3], "data": batch.tolist()}]})
    r32 = client.post("/v2/models/itsacat/versions/1/infer", json={"inputs": [
        {"name": "input", "datatype": "FP32", "shape": [3, 64, 64, 3],
         "data": batch.astype(np.float32).ravel().tolist()}]})
    assert r8.status_code == r32.status_code == 200
    assert r8.json()["outputs"] == r32.json()["outputs"]


def test_infer_image_bytes_base64(client: httpx.Client, registry: ModelRegistry) -> None:
    data = GRUMPY.read_bytes()
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                        "data": [base64.b64encode(data).decode(), {"b64": base64.b64encode(data).decode()}]}]}
    r = client.post("/v2/models/itsacat/infer", json=body)
    assert r.status_code == 200, r.text
    probs = np.asarray(r.json()["outputs"][0]["data"]).reshape(2, 2)
    expected = numpy_forward(registry.load("itsacat"),  # the training-time resize, an independent forward
                             load_image_file(GRUMPY, (64, 64, 3))[None])
    np.testing.assert_allclose(probs, np.vstack([expected, expected]), rtol=1e-4, atol=1e-6)


def _binary_request(header: dict, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head)),
                                    "Content-Type": "application/octet-stream"}


def test_infer_binary_extension_image_in_and_binary_out(client: httpx.Client) -> None:
    image = GRUMPY.read_bytes()
    blob = struct.pack("<I", len(image)) + image
    body, headers = _binary_request(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                     "parameters": {"binary_data_size": len(blob)}}],
         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}]}, [blob])
    r = client.post("/v2/models/itsacat/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    header = json.loads(r.content[:n])
    probs_meta, label = header["outputs"]
    assert probs_meta["parameters"]["binary_data_size"] == 8 and "data" not in probs_meta
    probs = np.frombuffer(r.content[n:n + 8], dtype="<f4")
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert label["data"] == [["non-cat", "cat"][int(probs.argmax())]]
    json_probs = client.post("/v2/models/itsacat/infer", json={"inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(image).decode()]}]}
    ).json()["outputs"][0]["data"]
    np.testing.assert_allclose(probs, json_probs, rtol=1e-6)


def test_infer_binary_uint8_tensor_on_cifar(client: httpx.Client) -> None:
    from tests.support.serving import load_cifar_subset

    _, _, x, y = load_cifar_subset(Path(CIFAR10), 2000, 200)
    body, headers = _binary_request(
        {"inputs": [{"name": "input", "datatype": "UINT8", "shape": list(x.shape),
                     "parameters": {"binary_data_size": x.nbytes}}]}, [x.tobytes()])
    r = client.post("/v2/models/cifar/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    probs = np.asarray(r.json()["outputs"][0]["data"]).reshape(200, 10)
    assert float((probs.argmax(1) == y).mean()) > 0.18  # held-out images; chance is 0.10


@pytest.mark.parametrize("body, status, needle", [
    ({"inputs": []}, 400, "non-empty 'inputs'"),
    ({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1], "data": [1]}]}, 400, "exactly one input"),
    ({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 8, 8, 3], "data": [0] * 192}]}, 400,
     "shape must be [N, 64, 64, 3]"),
    ({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 64, 64, 3], "data": [0] * 10}]}, 400,
     "needs 12288 values"),
    ({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 64, 64, 3], "data": [300] * 12288}]}, 400,
     "[0, 255]"),
    ({"inputs": [{"name": "input", "datatype": "INT64", "shape": [1, 64, 64, 3], "data": [0] * 12288}]}, 400,
     "not supported"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}, 400, "base64"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                  "data": [base64.b64encode(b"not an image").decode()]}]}, 400, "not an image"),
])
def test_infer_bad_requests_are_400_json(client: httpx.Client, body: dict, status: int, needle: str) -> None:
    r = client.post("/v2/models/itsacat/infer", json=body)
    assert r.status_code == status
    assert needle in r.json()["error"]


def test_infer_errors_404_and_bad_json(client: httpx.Client) -> None:
    r = client.post("/v2/models/nope/infer", json={"inputs": [{"name": "input"}]})
    assert r.status_code == 404 and "no model 'nope'" in r.json()["error"]
    r = client.get("/v2/models/itsacat/versions/9")
    assert r.status_code == 404 and "no version 9" in r.json()["error"]
    r = client.get("/v2/models/itsacat/versions/canary/ready")
    assert r.status_code == 404 and "no alias 'canary'" in r.json()["error"]
    r = client.post("/v2/models/itsacat/infer", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = client.post("/v2/models/itsacat/infer", content=b"{}", headers={"Inference-Header-Content-Length": "99"})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
