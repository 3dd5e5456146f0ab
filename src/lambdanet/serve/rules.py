"""The serving rules, each written once: the API key, the request size limit, the Prometheus
metrics, and the mapping of errors to HTTP answers.

Usage (what :class:`lambdanet.serve.middleware.ServingRules` does for every HTTP request)::

    refusal = api_key_refusal(scope, key) or length_refusal(scope, max_bytes)   # 401 / 400 / 413
    receive = limited_receive(receive, max_bytes)          # raises PayloadTooLarge past the limit
    response = error_for(exc, scope)                       # any exception -> {"error": …} + status
    metrics.observe_request(request_labels(scope, status), seconds)

These functions are called from one place per request, the
:class:`~lambdanet.serve.middleware.ServingRules` middleware, whichever way the request is then
dispatched (FastAPI's router, or the direct inference routes of
:mod:`lambdanet.serve.inference`); :func:`error_for` is also what the app registers as FastAPI's
exception handlers, so errors that FastAPI's own exception middleware catches answer the same.

- **API key** (:func:`api_key_refusal`): ``X-API-Key: K`` or ``Authorization: Bearer K`` on
  every route but ``/v2/health/*``, the photo page and its static files (they hold no data; the
  page asks for the key and sends it with its API calls) and ``OPTIONS``; compared in constant
  time. Refused: 401 with ``WWW-Authenticate: Bearer``.
- **Body limit** (:func:`length_refusal`, :func:`limited_receive`): a declared
  ``Content-Length`` over the limit is refused before the body is read (413; a malformed one:
  400); a streamed body is stopped as soon as it passes the limit (413).
- **Metrics** (:class:`ServeMetrics`, :func:`request_labels`): every request counted and timed,
  labelled by model, version (set by handlers in ``request.state``), route template and status,
  in a private ``CollectorRegistry`` per app.
- **Errors** (:func:`error_for`): every error is ``{"error": "one line"}`` with the status of its
  :mod:`lambdanet.errors` class, Starlette's ``HTTPException`` status (404: ``not found: PATH``),
  400 for FastAPI's validation errors, and 500 for anything else (logged with its traceback;
  the answer names only the exception's type).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from lambdanet.errors import LambdanetError, PayloadTooLarge

Json = dict[str, Any]
Headers = list[tuple[bytes, bytes]]
Refusal = tuple[int, str, Headers]  # status, message, extra headers
log = logging.getLogger("lambdanet.serve")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PUBLIC_PREFIXES = ("/v2/health/",)
PUBLIC_PATHS = frozenset({"/", "/index.html", "/static/app.js", "/static/style.css"})
UNROUTED = "unrouted"


# ---- answers -------------------------------------------------------------------------------------
def error_response(status: int, message: str) -> Response:
    """Every error the server answers: ``{"error": "one line"}`` with its status."""
    return Response(orjson.dumps({"error": " ".join(str(message).split()) or "error"}), status_code=status,
                    media_type="application/json")


async def send_json(send: Send, status: int, payload: Json, headers: Headers | None = None) -> None:
    body = orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def raw_header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes, as ASGI gives them), latin-1 as
    Starlette decodes it; without building a ``Headers`` object."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


# ---- errors --------------------------------------------------------------------------------------
def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def error_for(exc: BaseException, scope: Scope) -> Response:
    """The answer to an exception raised while handling the request of ``scope``."""
    if isinstance(exc, LambdanetError):  # PayloadTooLarge included: 413
        return error_response(exc.http_status, str(exc))
    if isinstance(exc, RequestValidationError):
        return error_response(400, _validation_message(exc))
    if isinstance(exc, HTTPException):  # the router's 404 / 405, a malformed multipart body …
        if exc.status_code == 404:
            return error_response(404, f"not found: {URL(scope=scope).path}")
        return error_response(exc.status_code, str(exc.detail))
    log.exception("unexpected error on %s %s", scope.get("method", ""), scope.get("path", ""), exc_info=exc)
    return error_response(500, f"internal error ({type(exc).__name__}); see the server log")


# ---- the API key ---------------------------------------------------------------------------------
def api_key_of(headers: Headers) -> str | None:
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return None


def api_key_message(given: str | None) -> str:
    reason = "missing" if given is None else "wrong"
    return f"{reason} API key: send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'"


def api_key_refusal(scope: Scope, api_key: bytes | None) -> Refusal | None:
    """(401, why, headers) when ``api_key`` is set, the route is guarded and the request does not
    carry the key; else None."""
    if api_key is None:
        return None
    path = scope["path"]
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or scope["method"] == "OPTIONS":
        return None
    given = api_key_of(scope["headers"])
    if given is None or not hmac.compare_digest(given.encode(), api_key):
        return 401, api_key_message(given), [(b"www-authenticate", b"Bearer")]
    return None


# ---- the body limit ------------------------------------------------------------------------------
def too_big_message(max_bytes: int) -> str:
    return f"the request body is over the {max_bytes}-byte limit (--max-request-bytes)"


def length_refusal(scope: Scope, max_bytes: int) -> Refusal | None:
    """(400, why, []) for a malformed Content-Length, (413, why, []) for one over ``max_bytes``,
    else None."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit():
                return 400, "bad Content-Length header", []
            if int(value) > max_bytes:
                return 413, too_big_message(max_bytes), []
    return None


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


# ---- metrics -------------------------------------------------------------------------------------
def request_labels(scope: Scope, status: int) -> tuple[str, str, str, str]:
    """(model, version, route, status) of a finished request. The route is the matched route's
    template (``/v2/models/{name}/infer``), else ``unrouted`` (404s, and the 401s, 413s and 400s
    refused before dispatch) — never the raw path, which would let clients create unbounded
    label values."""
    state = scope.get("state") or {}
    path = getattr(scope.get("route"), "path", None)
    return (str(state.get("model", "")), str(state.get("version", "")), str(path) if path else UNROUTED,
            str(status))


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
