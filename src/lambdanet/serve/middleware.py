"""The server's ASGI middleware: Prometheus metrics, the API key, the request size limit, and
the direct routes of the two inference endpoints.

The middleware is plain ASGI (no per-request BaseHTTPMiddleware task), so it adds microseconds.

- :class:`MetricsMiddleware` counts every request and records its latency, labelled by model,
  version (set by handlers in ``request.state``), route template and status, in a private
  ``CollectorRegistry`` per app.
- :class:`ApiKeyMiddleware` wants ``X-API-Key: K`` or ``Authorization: Bearer K`` on every route
  but ``/v2/health/*`` and the photo page's static files (which hold no data; the page asks for
  the key and sends it with its API calls).
- :class:`BodyLimitMiddleware` refuses a declared ``Content-Length`` over the limit and stops a
  streamed body as soon as it passes it: 413 ``{"error": …}``.
- :class:`InferenceRoutes` is not a middleware but the front door of ``POST /predict`` and
  ``POST /v2/models/{name}[/versions/{v}]/infer``, called by the app before FastAPI: it does
  the three jobs above for those routes in one call and hands them straight to their handlers
  (FastAPI's router, dependency solving and middleware stack cost about as much CPU as an
  MLP's whole forward pass). Same answers, same metrics labels.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lambdanet.errors import LambdanetError, PayloadTooLarge

Json = dict[str, Any]
log = logging.getLogger("lambdanet.serve")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PUBLIC_PREFIXES = ("/v2/health/",)
PUBLIC_PATHS = frozenset({"/", "/index.html", "/static/app.js", "/static/style.css"})


def error_response(status: int, message: str) -> Response:
    """Every error the server answers: ``{"error": "one line"}`` with its status."""
    return Response(orjson.dumps({"error": " ".join(str(message).split()) or "error"}), status_code=status,
                    media_type="application/json")


async def send_json(send: Send, status: int, payload: Json, headers: list[tuple[bytes, bytes]] | None = None
                    ) -> None:
    body = orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class ServeMetrics:
    """The app's Prometheus collectors, in their own registry (two apps never collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "version", "route", "status"]
        self.requests = Counter("lambdanet_requests", "HTTP requests served.", labels, registry=self.registry)
        self.latency = Histogram("lambdanet_request_duration_seconds", "Request latency in seconds.",
                                 labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("lambdanet_batch_rows", "Images per forward pass.", ["model", "version"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        # labelled children by label values: ``labels()`` takes a lock and builds a key each call
        self._request_children: dict[tuple[str, ...], tuple[Any, Any]] = {}
        self._batch_children: dict[tuple[str, int], Any] = {}

    def observe_request(self, labels: tuple[str, str, str, str], seconds: float) -> None:
        children = self._request_children.get(labels)
        if children is None:
            children = self._request_children[labels] = (self.requests.labels(*labels),
                                                         self.latency.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, model: str, version: int, rows: int) -> None:
        child = self._batch_children.get((model, version))
        if child is None:
            child = self._batch_children[(model, version)] = self.batch_size.labels(model, str(version))
        child.observe(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    @staticmethod
    def _route(scope: Scope) -> str:
        """The matched route's template (``/v2/models/{name}/infer``), else ``unrouted`` (404s,
        401s and 413s answered before routing) — never the raw path, which would let clients
        create unbounded label values."""
        route = scope.get("route")
        path = getattr(route, "path", None)
        return str(path) if path else "unrouted"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        state = scope.setdefault("state", {})

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            labels = (str(state.get("model", "")), str(state.get("version", "")), self._route(scope), str(status))
            self.metrics.observe_request(labels, time.perf_counter() - start)


def api_key_message(given: str | None) -> str:
    reason = "missing" if given is None else "wrong"
    return f"{reason} API key: send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'"


def length_refusal(headers: list[tuple[bytes, bytes]], max_bytes: int) -> tuple[int, str] | None:
    """(400, why) for a malformed Content-Length, (413, why) for one over ``max_bytes``, else None."""
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit():
                return 400, "bad Content-Length header"
            if int(value) > max_bytes:
                return 413, too_big_message(max_bytes)
    return None


def too_big_message(max_bytes: int) -> str:
    return f"the request body is over the {max_bytes}-byte limit (--max-request-bytes)"


def limited_receive(receive: Receive, max_bytes: int) -> Receive:
    """``receive`` that raises :class:`PayloadTooLarge` once the body passes ``max_bytes``."""
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise PayloadTooLarge(too_big_message(max_bytes))
        return message

    return limited


def api_key_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return None


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        given = api_key_of(scope["headers"])
        if given is None or not hmac.compare_digest(given.encode(), self.api_key):
            await send_json(send, 401, {"error": api_key_message(given)}, [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = length_refusal(scope["headers"], self.max_bytes)
        if refused is not None:
            await send_json(send, refused[0], {"error": refused[1]})
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive(receive, self.max_bytes), send_wrapper)
        except PayloadTooLarge as exc:
            if started:
                raise
            await send_json(send, 413, {"error": str(exc)})


Endpoint = Callable[..., Awaitable[Response]]
Found = tuple[Any, Endpoint, tuple[str | None, ...]]  # (the FastAPI route, its handler, path arguments)


def raw_header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes, as ASGI gives them), latin-1 as
    Starlette decodes it; without building a ``Headers`` object."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class InferenceRoutes:
    """The front door of ``POST /predict`` and ``POST /v2/models/{name}[/versions/{version}]/infer``.

    :class:`lambdanet.serve.app.ServeApp` hands these requests here before FastAPI: one plain
    call that does for them what the middleware above does for every other route — the metrics,
    the API key, the body limit, errors as ``{"error": …}`` (an unexpected one: logged, 500) —
    then calls the handler as ``handler(request)`` or ``handler(request, name, version)``.
    FastAPI's router, dependency solving and middleware stack, and a wrapper per ASGI message
    per middleware, together cost about as much CPU as an MLP's whole forward pass. The routes
    stay declared in FastAPI (OpenAPI docs, 405s, and the path taken while FastAPI's own
    OpenTelemetry is on); ``routes`` maps each path template to its FastAPI route (the metrics'
    route label) and its handler.
    """

    PREDICT = "/predict"
    INFER = "/v2/models/{name}/infer"
    INFER_VERSION = "/v2/models/{name}/versions/{version}/infer"

    def __init__(self, routes: dict[str, tuple[Any, Endpoint]], metrics: ServeMetrics, api_key: str | None,
                 max_bytes: int) -> None:
        self.routes = routes
        self.metrics = metrics
        self.api_key = api_key.encode() if api_key else None
        self.max_bytes = max_bytes

    def match(self, scope: Scope) -> Found | None:
        """The route, handler and path arguments of an inference request, else None."""
        if scope["method"] != "POST":
            return None
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if path == self.PREDICT:
            return (*self.routes[self.PREDICT], ())
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            parts = path[len("/v2/models/"):-len("/infer")].split("/")
            if len(parts) == 1 and parts[0]:
                return (*self.routes[self.INFER], (parts[0], None))
            if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
                return (*self.routes[self.INFER_VERSION], (parts[0], parts[2]))
        return None

    def _refusal(self, scope: Scope) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """What ApiKeyMiddleware and BodyLimitMiddleware would answer before routing, if anything."""
        if self.api_key is not None:
            given = api_key_of(scope["headers"])
            if given is None or not hmac.compare_digest(given.encode(), self.api_key):
                return 401, api_key_message(given), [(b"www-authenticate", b"Bearer")]
        refused = length_refusal(scope["headers"], self.max_bytes)
        return None if refused is None else (*refused, [])

    async def serve(self, scope: Scope, receive: Receive, send: Send, found: Found) -> None:
        start = time.perf_counter()
        status = 500
        route_label = "unrouted"  # answered before routing, as the middleware would
        state = scope.setdefault("state", {})
        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                status, message, headers = refusal
                await send_json(send, status, {"error": message}, headers)
                return
            route, handler, args = found
            scope["route"] = route  # what FastAPI's router would set
            route_label = route.path
            response = await self._respond(scope, limited_receive(receive, self.max_bytes), handler, args)
            status = response.status_code
            await response(scope, receive, send)
        finally:
            labels = (str(state.get("model", "")), str(state.get("version", "")), route_label, str(status))
            self.metrics.observe_request(labels, time.perf_counter() - start)

    @staticmethod
    async def _respond(scope: Scope, receive: Receive, handler: Endpoint, args: tuple[str | None, ...]) -> Response:
        try:
            return await handler(Request(scope, receive), *args)
        except LambdanetError as exc:  # PayloadTooLarge included: 413
            return error_response(exc.http_status, str(exc))
        except HTTPException as exc:  # e.g. a malformed multipart body, from Starlette's parser
            return error_response(exc.status_code, str(exc.detail))
        except Exception as exc:  # what the app's catch-all handler answers for every other route
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            return error_response(500, f"internal error ({type(exc).__name__}); see the server log")
