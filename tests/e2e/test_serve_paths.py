"""The serving rules answer the same on both paths an inference request can take.

``POST /predict`` and ``POST /v2/models/{name}[/versions/{v}]/infer`` are called straight from
the serving-rules middleware (the direct path, ``lambdanet.serve.inference``), or through
FastAPI's router like every other route (``ServeOptions(direct_inference=False)``, and whenever
FastAPI's own OpenTelemetry instruments the request). Two real uvicorn servers, one per path,
get the same requests: a missing and a wrong API key, a declared and a streamed body over the
limit, an internal error, a model that does not exist, a malformed multipart body, bad JSON, and
good requests. Each answer — status, body, ``WWW-Authenticate`` — must be the same on both, the
metrics must count every request with the same labels on both, and each internal error must be
logged once on both. Which path served what is checked too (the direct path's calls are counted),
so the comparison is never FastAPI against itself.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan, SpanKind
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from lambdanet.objects.folder import FolderStore
from lambdanet.registry import ModelRegistry
from lambdanet.serve.app import create_app
from lambdanet.serve.inference import InferenceRoutes
from tests.support.serving import UvicornThread

KEY = "path-key"
LIMIT = 50_000  # bytes: --max-request-bytes of both servers
SHAPE = (8, 8, 3)
INTERNAL_500 = {"error": "internal error (ZeroDivisionError); see the server log"}


def _register(root: Path) -> ModelRegistry:
    """A tiny MLP (192 -> 4 -> 1, sigmoid), registered as a finished run would (no training)."""
    registry = ModelRegistry(FolderStore(root))
    n_x = int(np.prod(SHAPE))
    rng = np.random.default_rng(0)
    weights = {"W1": (rng.standard_normal((4, n_x)) / np.sqrt(n_x)).astype(np.float32),
               "b1": np.zeros((4, 1), np.float32), "W2": rng.standard_normal((1, 4)).astype(np.float32),
               "b2": np.zeros((1, 1), np.float32)}
    registry.register("tiny", weights, {
        "kind": "mlp", "classes": ["a", "b"], "input_shape": list(SHAPE), "dtype": "float32",
        "preprocessing": {"resize": "bilinear", "scale": 255.0, "mean": None, "std": None},
        "architecture": {"layer_dims": [n_x, 4, 1], "activations": ["relu", "sigmoid"]}})
    return registry


def _with_a_bug(app: FastAPI) -> FastAPI:
    """Model ``explode`` raises ZeroDivisionError in the handler: an internal error."""
    models = app.state.models
    real_get = models.get

    async def get(ref: str | None) -> object:
        if ref is not None and ref.split(":")[0] == "explode":
            raise ZeroDivisionError("a bug")
        return await real_get(ref)

    models.get = get
    return app


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(int(np.prod(SHAPE)), dtype=np.uint8).reshape(SHAPE)).save(buf, format="PNG")
    return buf.getvalue()


def _chunks(total: int) -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
    for _ in range(total // 8192 + 1):
        yield b"\0" * 8192


TENSOR = {"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, *SHAPE], "data": [7] * int(np.prod(SHAPE))}]}
GOOD = {"X-API-Key": KEY}
PNG = {"content-type": "image/png"}


def _requests() -> list[tuple[str, str, dict[str, Any], bool]]:
    """(what, path, httpx arguments, refused before dispatch) — every rule on every inference route."""
    png = _png()
    out: list[tuple[str, str, dict[str, Any], bool]] = []
    for path in ("/predict?model=tiny", "/v2/models/tiny/infer", "/v2/models/tiny/versions/1/infer"):
        body = {"content": png, "headers": PNG} if path.startswith("/predict") else {"json": TENSOR}
        keyed = {**body, "headers": {**body.get("headers", {}), **GOOD}}
        out += [
            ("ok", path, keyed, False),
            ("missing key", path, body, True),
            ("wrong key", path, {**body, "headers": {**body.get("headers", {}), "X-API-Key": "guess"}}, True),
            ("bearer key", path, {**body, "headers": {**body.get("headers", {}), "Authorization": f"Bearer {KEY}"}},
             False),
            ("declared too big", path, {"content": b"\0" * (LIMIT + 1), "headers": {**PNG, **GOOD}}, True),
            ("streamed too big", path, {"content": _chunks(LIMIT), "headers": {**PNG, **GOOD}}, False),
            ("internal error", path.replace("tiny", "explode"), keyed, False),
            ("no such model", path.replace("tiny", "nope"), keyed, False),
        ]
    out += [
        ("bad multipart", "/predict?model=tiny", {"content": b"--x\r\n", "headers": {
            "content-type": "multipart/form-data", **GOOD}}, False),  # no boundary: Starlette's 400
        ("bad JSON", "/v2/models/tiny/infer", {"content": b"{oops", "headers": {**GOOD}}, False),
        ("bad tensor", "/v2/models/tiny/infer", {"json": {"inputs": []}, "headers": GOOD}, False),
    ]
    return out


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _request_counts(client: httpx.Client) -> Counter[tuple[tuple[str, str], ...]]:
    metrics = _samples(client.get("/metrics", headers=GOOD).text)
    return Counter({labels: int(v) for (name, labels), v in metrics.items() if name == "lambdanet_requests_total"})


class Served:
    """What one server answered and counted, and how often its direct path ran."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, str, int, Any, str | None]] = []
        self.counted: Counter[tuple[tuple[str, str], ...]] = Counter()
        self.direct_calls = 0
        self.logged: list[type[BaseException] | None] = []


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Served]:
    """Both servers, each given every request of :func:`_requests`; by path name."""
    registry = _register(tmp_path_factory.mktemp("paths") / "objects")
    apps = {"direct": create_app(registry, api_key=KEY, max_request_bytes=LIMIT),
            "fastapi": create_app(registry, api_key=KEY, max_request_bytes=LIMIT, direct_inference=False)}
    out = {name: Served() for name in apps}
    by_app = {id(app): out[name] for name, app in apps.items()}
    real_serve = InferenceRoutes.serve

    async def counting_serve(scope: Any, receive: Any, send: Any, found: Any) -> None:
        by_app[id(scope["app"])].direct_calls += 1
        await real_serve(scope, receive, send, found)

    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = logged.append  # type: ignore[method-assign]
    logging.getLogger("lambdanet.serve").addHandler(handler)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(InferenceRoutes, "serve", staticmethod(counting_serve))
            for name, app in apps.items():
                record = out[name]
                with UvicornThread(_with_a_bug(app)) as server, \
                        httpx.Client(base_url=server.url, timeout=30) as client:
                    before = _request_counts(client)
                    del logged[:]
                    for what, path, kwargs, _ in _requests():
                        r = client.post(path, **kwargs)
                        body = r.json() if r.headers.get("content-type") == "application/json" else r.text
                        record.answers.append((what, path, r.status_code, body, r.headers.get("www-authenticate")))
                    record.counted = _request_counts(client) - before
                    record.counted[(("model", ""), ("route", "/metrics"), ("status", "200"), ("version", ""))] -= 1
                    record.logged = [r.exc_info[0] if r.exc_info else None for r in logged]
    finally:
        logging.getLogger("lambdanet.serve").removeHandler(handler)
    return out


def test_every_rule_answers_the_same_on_both_paths(served: dict[str, Served]) -> None:
    direct, fastapi = served["direct"].answers, served["fastapi"].answers
    assert len(direct) == len(fastapi) == len(_requests())
    for one, other in zip(direct, fastapi, strict=True):
        assert one == other, f"direct path: {one}\nFastAPI path: {other}"


def test_the_answers_are_the_rules(served: dict[str, Served]) -> None:
    """The shared answers are the right ones (both paths skipping a rule would also be 'the same')."""
    for what, path, status, body, challenge in served["direct"].answers:
        expected = {"ok": 200, "bearer key": 200, "missing key": 401, "wrong key": 401, "declared too big": 413,
                    "streamed too big": 413, "internal error": 500, "no such model": 404, "bad multipart": 400,
                    "bad JSON": 400, "bad tensor": 400}[what]
        assert status == expected, (what, path, status, body)
        assert (challenge == "Bearer") == (status == 401), (what, path, challenge)
        if status != 200:
            assert set(body) == {"error"} and "\n" not in body["error"], (what, path, body)
        if status == 401:
            assert body["error"].startswith("missing API key" if what == "missing key" else "wrong API key")
        if status == 413:
            assert f"{LIMIT}-byte limit" in body["error"], body
        if status == 500:
            assert body == INTERNAL_500


def test_the_metrics_count_every_request_alike_on_both_paths(served: dict[str, Served]) -> None:
    direct, fastapi = served["direct"].counted, served["fastapi"].counted
    assert +direct == +fastapi
    assert sum(direct.values()) == len(_requests())
    routes = {(dict(k)["route"], dict(k)["status"]) for k in +direct}
    assert {("unrouted", "401"), ("unrouted", "413"), ("/predict", "200"), ("/predict", "500"), ("/predict", "404"),
            ("/predict", "413"), ("/v2/models/{name}/infer", "200"), ("/v2/models/{name}/infer", "500"),
            ("/v2/models/{name}/versions/{version}/infer", "200"), ("/v2/models/{name}/infer", "400")} <= routes
    assert direct[(("model", "tiny"), ("route", "/predict"), ("status", "200"), ("version", "1"))] == 2


def test_internal_errors_are_logged_once_on_both_paths(served: dict[str, Served]) -> None:
    for name in ("direct", "fastapi"):
        assert served[name].logged == [ZeroDivisionError] * 3, name


def test_each_server_took_its_path(served: dict[str, Served]) -> None:
    dispatched = sum(1 for *_, refused in _requests() if not refused)
    assert served["direct"].direct_calls == dispatched
    assert served["fastapi"].direct_calls == 0


# ---- FastAPI's own OpenTelemetry -----------------------------------------------------------------
class _Span(NonRecordingSpan):
    def __init__(self, name: str, kind: SpanKind) -> None:
        super().__init__(INVALID_SPAN_CONTEXT)
        self.name, self.kind, self.attributes = name, kind, {}

    def update_name(self, name: str) -> None:
        self.name = name

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Any) -> None:
        self.attributes.update(attributes)


class _Tracer(trace.NoOpTracer):
    def __init__(self, spans: list[_Span]) -> None:
        self.spans = spans

    def start_span(self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL,
                   *args: Any, **kwargs: Any) -> _Span:
        span = _Span(name, kind)
        self.spans.append(span)
        return span


class RecordingProvider(trace.TracerProvider):
    """The spans FastAPI starts, by name and kind, with the attributes it sets."""

    def __init__(self) -> None:
        self.spans: list[_Span] = []

    def get_tracer(self, *args: Any, **kwargs: Any) -> _Tracer:
        return _Tracer(self.spans)


def test_while_fastapi_traces_inference_goes_through_its_router(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With FastAPI's OpenTelemetry on, inference requests take FastAPI's router (their spans
    carry the route), pass the same rules, and answer as the direct path does."""
    registry = _register(tmp_path / "objects")
    provider = RecordingProvider()
    direct_calls = []
    real_serve = InferenceRoutes.serve

    async def counting_serve(*args: Any) -> None:
        direct_calls.append(args)
        await real_serve(*args)

    monkeypatch.setattr(InferenceRoutes, "serve", staticmethod(counting_serve))
    answers = {}
    for name, telemetry in (("direct", None), ("traced", {"tracer_provider": provider})):
        app = create_app(registry, telemetry=telemetry, api_key=KEY)  # type: ignore[arg-type]
        with UvicornThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            answers[name] = [
                (r.status_code, r.json()) for r in (
                    client.post("/predict?model=tiny", content=_png(), headers={**PNG, **GOOD}),
                    client.post("/v2/models/tiny/versions/1/infer", json=TENSOR, headers=GOOD),
                    client.post("/v2/models/tiny/infer", json=TENSOR))]  # no key: 401
        if name == "direct":
            assert len(direct_calls) == 2 and not provider.spans
            direct_calls.clear()
    assert answers["traced"] == answers["direct"]
    assert [a[0] for a in answers["traced"]] == [200, 200, 401]
    assert not direct_calls
    server_spans = [(s.name, s.attributes.get("http.route"), s.attributes.get("http.response.status_code"))
                    for s in provider.spans if s.kind == SpanKind.SERVER]
    assert server_spans == [("POST /predict", "/predict", 200),
                            ("POST /v2/models/{name}/versions/{version}/infer",
                             "/v2/models/{name}/versions/{version}/infer", 200),
                            ("POST", None, 401)]  # refused by the rules before any routing
