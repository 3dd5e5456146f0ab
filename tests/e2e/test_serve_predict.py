"""POST /predict, errors, API key, /metrics, /docs and blue/green alias switching, against a real
uvicorn server on loopback with models trained for real."""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from lambdanet.data.images import load_image_file
from lambdanet.objects.folder import FolderStore
from lambdanet.registry import ModelRegistry
from lambdanet.serve.app import create_app
from lambdanet.serve.inference import InferenceRoutes
from tests.conftest import CATVNONCAT, CIFAR10, IMAGES
from tests.e2e.serve_support import numpy_forward
from tests.support.serving import (
    UvicornThread,
    free_port,
    load_cifar_subset,
    register_catvnoncat_mlp,
    register_cifar_mlp,
)

GRUMPY = IMAGES / "grumpy_cat.jpeg"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    reg = ModelRegistry(FolderStore(tmp_path_factory.mktemp("registry")))
    register_catvnoncat_mlp(reg, CATVNONCAT / "datasets.h5")
    register_cifar_mlp(reg, CIFAR10)
    return reg


@pytest.fixture(scope="module")
def client(registry: ModelRegistry) -> Iterator[httpx.Client]:
    app = create_app(registry, max_request_bytes=2_000_000)
    with UvicornThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _expected(registry: ModelRegistry, ref: str, images: np.ndarray) -> np.ndarray:
    """(N, C) from an independent float64 numpy forward of the registered weights."""
    return numpy_forward(registry.load(ref), images)


def _png(img: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **save)
    return buf.getvalue()


# ---- /predict --------------------------------------------------------------------------------
def test_predict_multipart_with_preview(client: httpx.Client, registry: ModelRegistry) -> None:
    upload = {"file": ("grumpy.jpg", GRUMPY.read_bytes(), "image/jpeg")}
    r = client.post("/predict?preview=1&model=itsacat", files=upload)
    assert r.status_code == 200, r.text
    body = r.json()
    seen = load_image_file(GRUMPY, (64, 64, 3))  # (64, 64, 3): what training-time preprocessing gives
    probs = _expected(registry, "itsacat", seen[None])[0]
    assert body["model"] == "itsacat" and body["version"] == 1 and body["input"] == "image"
    assert body["probabilities"] == pytest.approx({"non-cat": probs[0], "cat": probs[1]}, rel=1e-4)
    assert body["label"] == ["non-cat", "cat"][int(probs.argmax())]
    assert body["probability"] == pytest.approx(float(probs.max()), rel=1e-4)
    assert body["preview"].startswith("data:image/png;base64,")
    preview = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["preview"].split(",", 1)[1]))))
    np.testing.assert_array_equal(preview, seen)


def test_predict_base64_json_and_raw_body_agree(client: httpx.Client) -> None:
    data = GRUMPY.read_bytes()
    as_json = client.post("/predict?model=itsacat", json={"data": base64.b64encode(data).decode()})
    as_body = client.post("/predict?model=itsacat:1", content=data, headers={"content-type": "image/jpeg"})
    url_safe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    as_url_safe = client.post("/predict?model=itsacat@latest", json={"data": url_safe})
    assert as_json.status_code == as_body.status_code == as_url_safe.status_code == 200
    assert as_json.json() == as_body.json() == as_url_safe.json()


def test_predict_raw_cifar_bytes(client: httpx.Client, registry: ModelRegistry) -> None:
    _, _, x, y = load_cifar_subset(CIFAR10, 2000, 40)
    expected = _expected(registry, "cifar", x)  # (40, 10) from HWC arrays in process
    labels = []
    for i in range(len(x)):
        chw = x[i].transpose(2, 0, 1).tobytes()  # the CIFAR-10 Lambda's 3×32×32 = 3072 bytes
        r = client.post("/predict?model=cifar", json={"data": base64.b64encode(chw).decode()})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["input"] == "raw" and body["model"] == "cifar"
        assert list(body["probabilities"].values()) == pytest.approx(list(expected[i]), rel=1e-4, abs=1e-6)
        labels.append(body["label"])
    classes = client.get("/v2/models/cifar").json()["parameters"]["classes"]
    accuracy = float(np.mean([classes.index(lab) == t for lab, t in zip(labels, y, strict=True)]))
    assert accuracy > 0.15  # held-out images; chance is 0.10


def test_exif_orientation_is_respected(client: httpx.Client) -> None:
    upright = Image.open(GRUMPY).convert("RGB").resize((96, 72))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # pixels on their side …
    exif = Image.Exif()
    exif[0x0112] = 6  # … and the tag that says "rotate 90° clockwise to display"
    url = "/predict?preview=1&model=itsacat"
    a = client.post(url, content=_png(upright), headers={"content-type": "image/png"}).json()
    b = client.post(url, content=_png(stored, exif=exif), headers={"content-type": "image/png"}).json()
    c = client.post(url, content=_png(stored), headers={"content-type": "image/png"}).json()
    assert a["preview"] == b["preview"]  # the model saw the upright image
    assert a["preview"] != c["preview"]  # (without the tag it would not)


# ---- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, status, needle", [
    ({"json": {"data": "!!!"}}, 400, "base64"),
    ({"json": {"image": "x"}}, 400, '{"data"'),
    ({"content": b"{oops", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": b"plain", "headers": {"content-type": "text/csv"}}, 400, "unsupported Content-Type"),
    ({"content": b"GIF89a broken", "headers": {"content-type": "image/gif"}}, 400, "image"),
    ({"files": {"other": (None, "text only")}}, 400, "no file"),
    ({"content": b"x" * 10, "headers": {"content-type": "image/png"}, "params": {"model": "nope"}}, 404,
     "no model 'nope'"),
    ({"content": b"x", "headers": {"content-type": "image/png"}, "params": {"model": "itsacat:7"}}, 404,
     "no version 7"),
    ({"content": b"x", "headers": {"content-type": "image/png"}, "params": {"model": "itsacat@canary"}}, 404,
     "no alias 'canary'"),
    ({"content": b"x", "headers": {"content-type": "image/png"}, "params": {"model": "../etc"}}, 400,
     "invalid model name"),
])
def test_predict_errors_are_one_line_json(client: httpx.Client, kwargs: dict, status: int, needle: str) -> None:
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error and "\n" not in error


def test_decompression_bomb_is_refused(client: httpx.Client) -> None:
    bomb = _png(Image.new("1", (9000, 9000)))  # 81 Mpx in a few kB
    r = client.post("/predict", content=bomb, headers={"content-type": "image/png"})
    assert r.status_code == 400 and "limit" in r.json()["error"]


def test_413_by_content_length_and_by_streamed_body(client: httpx.Client) -> None:
    r = client.post("/predict", content=b"\0" * 2_000_001, headers={"content-type": "image/png"})
    assert r.status_code == 413 and "2000000-byte limit" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for _ in range(40):
            yield b"\0" * 65536

    r = client.post("/predict", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    assert client.get("/v2/health/live").status_code == 200


def test_unknown_route_and_method(client: httpx.Client) -> None:
    r = client.get("/no/such/route")
    assert r.status_code == 404 and r.json() == {"error": "not found: /no/such/route"}
    r = client.get("/predict")
    assert r.status_code == 405 and r.json()["error"]


def test_503_when_the_registry_is_unreachable(tmp_path: object) -> None:
    from lambdanet.objects.s3 import S3Store

    dead = S3Store.from_url(f"s3://models?endpoint_url=http://127.0.0.1:{free_port()}&region=us-east-1")
    app = create_app(ModelRegistry(dead), preload=False)
    with UvicornThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        for method, path in (("GET", "/v2/models/itsacat"), ("POST", "/predict"),
                             ("POST", "/v2/models/itsacat/infer")):
            r = c.request(method, path, content=b"{}", headers={"content-type": "application/json"})
            assert r.status_code == 503, r.text
            assert "cannot" in r.json()["error"]
        ready = c.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert c.get("/v2/health/live").json() == {"live": True}


def test_a_corrupt_model_version_is_500_not_404(registry: ModelRegistry, tmp_path: object) -> None:
    """A version whose model.json is invalid JSON, or valid JSON with a missing/invalid field, is
    the server's problem: 500 with a one-line message naming the version; unknown models stay 404."""
    import json
    from pathlib import Path

    root = Path(str(tmp_path)) / "objects"
    reg = ModelRegistry(FolderStore(root))
    good = registry.load("itsacat")  # the real trained catvnoncat MLP
    meta = {k: v for k, v in good.metadata.items() if k != "version"}
    for _ in range(3):
        reg.register("broken", dict(good.weights), meta)
    versions = root / "models" / "broken" / "versions"
    (versions / "1" / "model.json").write_bytes(b'{"kind": "mlp", "classes": ["non-cat"')
    (versions / "2" / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "kind"}))
    (versions / "3" / "model.json").write_text(json.dumps({**meta, "preprocessing": {"scale": "big"}}))
    image = {"content": GRUMPY.read_bytes(), "headers": {"content-type": "image/jpeg"}}
    served = ModelRegistry(FolderStore(root))  # a server of its own (no versions cached by the writer)
    with UvicornThread(create_app(served, preload=False)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c:
        for version, needle in ((1, "model.json is not valid JSON"), (2, "kind"), (3, "preprocessing.scale")):
            for method, path, kwargs in (("POST", f"/predict?model=broken:{version}", image),
                                         ("GET", f"/v2/models/broken/versions/{version}", {})):
                r = c.request(method, path, **kwargs)  # type: ignore[arg-type]
                assert r.status_code == 500, (path, r.status_code, r.text)
                error = r.json()["error"]
                assert f"broken:{version}" in error and needle in error and "\n" not in error, error
        for path in ("/predict?model=nope", "/predict?model=broken:9"):
            r = c.post(path, **image)  # type: ignore[arg-type]
            assert r.status_code == 404, r.text


def test_an_unexpected_error_on_an_inference_route_is_a_one_line_500(registry: ModelRegistry) -> None:
    """The inference routes bypass FastAPI's error middleware: a bug there still answers 500
    ``{"error": …}`` (never a traceback), is logged with its traceback, counts in /metrics, and
    the server keeps serving."""
    app = create_app(registry)
    models = app.state.models
    real_get = models.get

    async def get(ref: str | None) -> object:
        if ref == "explode":
            raise ZeroDivisionError("a bug")
        return await real_get(ref)

    models.get = get
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = logged.append  # type: ignore[method-assign]
    logging.getLogger("lambdanet.serve").addHandler(handler)
    try:
        image = {"content": GRUMPY.read_bytes(), "headers": {"content-type": "image/jpeg"}}
        with UvicornThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as c:
            for path in ("/predict?model=explode", "/v2/models/explode/infer"):
                r = c.post(path, **image)  # type: ignore[arg-type]
                assert r.status_code == 500 and r.json() == {
                    "error": "internal error (ZeroDivisionError); see the server log"}, r.text
            assert c.post("/predict?model=itsacat", **image).status_code == 200  # type: ignore[arg-type]
            metrics = _samples(c.get("/metrics").text)
    finally:
        logging.getLogger("lambdanet.serve").removeHandler(handler)
    assert [r.exc_info[0] for r in logged if r.exc_info] == [ZeroDivisionError, ZeroDivisionError]
    for route in ("/predict", "/v2/models/{name}/infer"):
        key = (("model", ""), ("route", route), ("status", "500"), ("version", ""))
        assert metrics[("lambdanet_requests_total", key)] == 1


def _inference_answers(registry: ModelRegistry, through_fastapi: bool) -> tuple[tuple[object, ...], int]:
    """Inference answers, refusals and metrics labels of a server; and how many requests its
    direct inference routes served."""
    app = create_app(registry, api_key="k", direct_inference=not through_fastapi)
    door_calls = []
    real_serve = InferenceRoutes.serve

    async def serve(*args: Any) -> None:
        door_calls.append(args)
        await real_serve(*args)

    image = {"content": GRUMPY.read_bytes(), "headers": {"content-type": "image/jpeg", "X-API-Key": "k"}}
    with pytest.MonkeyPatch.context() as mp, UvicornThread(app) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c:
        mp.setattr(InferenceRoutes, "serve", staticmethod(serve))
        ok = c.post("/predict?model=itsacat", **image)  # type: ignore[arg-type]
        v2 = c.post("/v2/models/itsacat/versions/1/infer", headers={"X-API-Key": "k"}, json={
            "inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 64, 64, 3], "data": [0] * 12288}]})
        missing = c.post("/predict?model=nope", **image)  # type: ignore[arg-type]
        refused = c.post("/predict", content=b"x")  # refused by the rules before any dispatch
        metrics = _samples(c.get("/metrics", headers={"X-API-Key": "k"}).text)
    assert ok.status_code == v2.status_code == 200 and missing.status_code == 404 and refused.status_code == 401
    labels = {(dict(k).get("route"), dict(k).get("status")) for (name, k) in metrics
              if name == "lambdanet_requests_total"}
    return (ok.json(), v2.json(), missing.json(), refused.json(), labels), len(door_calls)


def test_inference_through_fastapi_answers_as_the_front_door(registry: ModelRegistry) -> None:
    """Through FastAPI's router (the path taken while FastAPI's OpenTelemetry is on), inference
    answers as on the direct routes: same answers, same refusals, same metrics labels."""
    front, front_calls = _inference_answers(registry, through_fastapi=False)
    fastapi, fastapi_calls = _inference_answers(registry, through_fastapi=True)
    assert (front_calls, fastapi_calls) == (3, 0)
    assert front == fastapi
    assert {("/predict", "200"), ("/v2/models/{name}/versions/{version}/infer", "200"), ("/predict", "404"),
            ("unrouted", "401")} <= front[4]  # type: ignore[operator]


def test_refusals_before_routing_are_labelled_unrouted(registry: ModelRegistry) -> None:
    app = create_app(registry, api_key="s3cret", max_request_bytes=1000)
    with UvicornThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/predict", content=b"x").status_code == 401
        big = c.post("/v2/models/itsacat/infer", content=b"\0" * 1001, headers={"X-API-Key": "s3cret"})
        assert big.status_code == 413 and "1000-byte limit" in big.json()["error"]
        metrics = _samples(c.get("/metrics", headers={"X-API-Key": "s3cret"}).text)
    for status in ("401", "413"):
        key = (("model", ""), ("route", "unrouted"), ("status", status), ("version", ""))
        assert metrics[("lambdanet_requests_total", key)] == 1, status


# ---- API key, docs, metrics ------------------------------------------------------------------
def test_api_key_guards_every_route_but_health(registry: ModelRegistry) -> None:
    app = create_app(registry, api_key="s3cret")
    image = GRUMPY.read_bytes()
    jpeg = {"content-type": "image/jpeg"}
    with UvicornThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        for method, path in (("POST", "/predict"), ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/v2"),
                             ("GET", "/v2/models/itsacat"), ("GET", "/models"), ("GET", "/nowhere")):
            r = c.request(method, path)
            assert r.status_code == 401, (path, r.text)
            assert "API key" in r.json()["error"]
        assert c.get("/v2/health/live").status_code == 200
        assert c.get("/v2/health/ready").status_code == 200
        wrong = c.post("/predict", content=image, headers={**jpeg, "X-API-Key": "guess"})
        assert wrong.status_code == 401 and wrong.json()["error"].startswith("wrong API key")
        ok = c.post("/predict", content=image, headers={**jpeg, "X-API-Key": "s3cret"})
        bearer = c.post("/predict", content=image, headers={**jpeg, "Authorization": "Bearer s3cret"})
        assert ok.status_code == bearer.status_code == 200 and ok.json() == bearer.json()
        assert c.get("/docs", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_openapi_docs_list_the_routes(client: httpx.Client) -> None:
    assert "swagger" in client.get("/docs").text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/predict", "/image", "/metrics", "/v2/models/{name}/infer",
                 "/v2/models/{name}/versions/{version}/infer", "/v2/health/ready"):
        assert path in paths


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_requests_per_model_version_route_status(client: httpx.Client) -> None:
    key = (("model", "itsacat"), ("route", "/predict"), ("status", "200"), ("version", "1"))
    miss = (("model", ""), ("route", "/predict"), ("status", "404"), ("version", ""))
    before = _samples(client.get("/metrics").text)
    for _ in range(3):
        assert client.post("/predict?model=itsacat", content=GRUMPY.read_bytes(),
                           headers={"content-type": "image/jpeg"}).status_code == 200
    client.post("/predict?model=ghost", content=b"x", headers={"content-type": "image/png"})
    after = _samples(client.get("/metrics").text)
    assert after[("lambdanet_requests_total", key)] - before.get(("lambdanet_requests_total", key), 0) == 3
    count = ("lambdanet_request_duration_seconds_count", key)
    assert after[count] - before.get(count, 0) == 3
    assert after[("lambdanet_requests_total", miss)] - before.get(("lambdanet_requests_total", miss), 0) == 1
    rows = ("lambdanet_batch_rows_sum", (("model", "itsacat"), ("version", "1")))
    assert after[rows] - before.get(rows, 0) == 3  # three images went through forward passes


# ---- blue/green --------------------------------------------------------------------------------
def test_alias_promotion_switches_versions_without_failed_requests(tmp_path: object) -> None:
    from pathlib import Path

    reg = ModelRegistry(FolderStore(Path(str(tmp_path)) / "objects"))
    v1 = register_catvnoncat_mlp(reg, CATVNONCAT / "datasets.h5")
    v2 = reg.register("itsacat", dict(v1.weights), {k: v for k, v in v1.metadata.items() if k != "version"})
    reg.set_alias("itsacat", "production", v1.version)
    reg.set_alias("itsacat", "staging", v2.version)
    body = {"data": base64.b64encode(_png(Image.open(GRUMPY).convert("RGB").resize((64, 64)))).decode()}
    results: list[list[tuple[int, int | None]]] = [[], []]
    stop = threading.Event()

    def client_loop(out: list[tuple[int, int | None]], url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/predict", json=body)
                out.append((r.status_code, r.json().get("version")))

    with UvicornThread(create_app(reg)) as server:
        threads = [threading.Thread(target=client_loop, args=(out, server.url)) for out in results]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while min(len(r) for r in results) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert reg.promote("itsacat", "staging", "production") == v2.version  # blue -> green
        while time.monotonic() < deadline:
            if all(len(r) >= 10 and r[-1][1] == v2.version for r in results):
                break
            time.sleep(0.02)
        seen = [len(r) for r in results]
        while min(len(r) - s for r, s in zip(results, seen, strict=True)) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        for t in threads:
            t.join()
    for out in results:
        assert all(status == 200 for status, _ in out), [s for s in out if s[0] != 200][:3]
        versions = [v for _, v in out]
        assert versions[0] == v1.version and versions[-1] == v2.version
        switch = versions.index(v2.version)
        assert set(versions[switch:]) == {v2.version}  # once switched, never back


def test_default_model_is_the_first_by_name(client: httpx.Client) -> None:
    r = client.post("/predict", content=GRUMPY.read_bytes(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and (r.json()["model"], r.json()["version"]) == ("cifar", 1)
    assert r.json()["label"] in client.get("/v2/models/cifar").json()["parameters"]["classes"]
