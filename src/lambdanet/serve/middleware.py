"""The server's one ASGI middleware: every HTTP request passes the serving rules here, once, and
is then dispatched — to the direct inference routes, or to FastAPI's router.

Usage (what :func:`lambdanet.serve.app.create_app` does)::

    app.add_middleware(ServingRules, metrics=metrics, api_key="s3cret", max_bytes=16 << 20,
                       inference=InferenceRoutes({...}))

The request's hops from the socket to the forward pass are drawn in the docs (Serving internals,
"The hot path"). Inference requests take the direct routes unless FastAPI's own OpenTelemetry
instruments the request — known from FastAPI's public ``fastapi.telemetry.get_telemetry_data()``,
which is not None exactly then: they take FastAPI's router, so their spans carry the route and
FastAPI's operation spans. Plain ASGI (no BaseHTTPMiddleware task per request).
"""

from __future__ import annotations

import time

from fastapi.telemetry import get_telemetry_data
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lambdanet.serve.inference import InferenceRoutes
from lambdanet.serve.rules import (
    ServeMetrics,
    api_key_refusal,
    error_for,
    length_refusal,
    limited_receive,
    request_labels,
    send_json,
)


class ServingRules:
    """Applies every serving rule to every HTTP request, whichever path serves it: the API key
    and the declared body size are checked before dispatch (a refusal is never routed: metrics
    label ``unrouted``), the body stream is limited, an exception that reaches here is answered by
    :func:`~lambdanet.serve.rules.error_for` (unless the response has started), and the request
    is counted and timed with the status it was answered. ``inference``: the direct inference
    routes (None: every request goes through FastAPI's router)."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, api_key: str | None, max_bytes: int,
                 inference: InferenceRoutes | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.api_key = api_key.encode() if api_key else None
        self.max_bytes = max_bytes
        self.inference = inference

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False
        scope.setdefault("state", {})  # handlers set the model and version labels in it

        async def answered(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = int(message["status"]), True
            await send(message)

        try:
            refusal = api_key_refusal(scope, self.api_key) or length_refusal(scope, self.max_bytes)
            if refusal is not None:
                await send_json(answered, refusal[0], {"error": refusal[1]}, refusal[2])
                return
            limited = limited_receive(receive, self.max_bytes)
            found = self.inference.match(scope) if self.inference is not None else None
            if found is not None and get_telemetry_data() is None:
                await InferenceRoutes.serve(scope, limited, answered, found)
            else:
                await self.app(scope, limited, answered)
        except Exception as exc:
            if started:
                raise
            await error_for(exc, scope)(scope, receive, answered)
        finally:
            self.metrics.observe_request(request_labels(scope, status), time.perf_counter() - start)
