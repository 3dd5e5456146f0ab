"""The direct routes of the two inference endpoints: ``POST /predict`` and
``POST /v2/models/{name}[/versions/{version}]/infer``, called without FastAPI's router.

Usage (what :class:`lambdanet.serve.middleware.ServingRules` does, after the serving rules)::

    found = inference.match(scope)              # None: not an inference request
    if found is not None:
        await inference.serve(scope, receive, send, found)

These two routes are the server's hot path, and FastAPI's router, dependency solving and route
wrappers cost about a third of the server's CPU per MLP request (measured: docs, Benchmarks,
"Serving: one rule set, two paths"). This module only finds the handler and calls it: the
serving rules (API key, body limit, metrics, errors) are applied by the middleware before and
around this call, by the same code as for every other route (:mod:`lambdanet.serve.rules`).
An exception from a handler propagates to that middleware,
which answers it as FastAPI's exception handlers do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Endpoint = Callable[..., Awaitable[Response]]
Found = tuple[Any, Endpoint, tuple[str | None, ...]]  # (the FastAPI route, its handler, path arguments)


class InferenceRoutes:
    """``routes`` maps each path template (:attr:`PREDICT`, :attr:`INFER`, :attr:`INFER_VERSION`)
    to its FastAPI route (set as ``scope["route"]``, as FastAPI's router would: the metrics'
    route label) and its handler, called as ``handler(request)`` or
    ``handler(request, name, version)``. The routes stay declared in FastAPI too (OpenAPI docs,
    405s, and the path taken when this one is not)."""

    PREDICT = "/predict"
    INFER = "/v2/models/{name}/infer"
    INFER_VERSION = "/v2/models/{name}/versions/{version}/infer"

    def __init__(self, routes: dict[str, tuple[Any, Endpoint]]) -> None:
        self.routes = routes

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

    @staticmethod
    async def serve(scope: Scope, receive: Receive, send: Send, found: Found) -> None:
        """Call the handler and send its response; its exceptions propagate."""
        route, handler, args = found
        scope["route"] = route
        response = await handler(Request(scope, receive), *args)
        await response(scope, receive, send)
