"""The prediction service: a FastAPI app over a :class:`~lambdanet.registry.ModelRegistry`.

Usage::

    from lambdanet.serve.app import create_app, ServeOptions
    app = create_app(registry, ServeOptions(api_key="s3cret", max_batch_size=32))
    uvicorn.run(app, host="127.0.0.1", port=8000)          # what ``lambdanet serve`` does

Routes: the Open Inference Protocol v2 (:mod:`lambdanet.serve.v2`), ``POST /predict``,
``GET /image?image=URL`` (itsacat), the photo page ``GET /``, ``GET /models``, ``GET /metrics``,
OpenAPI docs at ``/docs``, and the report's dashboard router (``/runs``) when it is installed.
Every error is ``{"error": "one line"}`` with the status of its :mod:`lambdanet.errors` class.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lambdanet import __version__
from lambdanet.errors import LambdanetError
from lambdanet.registry import ModelRegistry
from lambdanet.serve.middleware import ApiKeyMiddleware, BodyLimitMiddleware, MetricsMiddleware, ServeMetrics
from lambdanet.serve.models import ModelManager
from lambdanet.serve.urlguard import AddressPolicy, UrlFetcher

log = logging.getLogger("lambdanet.serve")


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``lambdanet serve`` can set (see ``lambdanet serve --help``)."""

    api_key: str | None = None
    allow_url_fetch: bool = False
    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    batching: bool = True
    inline_forward_ms: float = 2.0  # full batches faster than this run on the event loop
    max_request_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 40_000_000
    fetch_max_bytes: int = 10 * 1024 * 1024
    fetch_timeout_s: float = 5.0
    alias_ttl_s: float = 0.5
    preload: bool = True
    url_policy: AddressPolicy | None = None  # tests only: which addresses /image may contact

    @classmethod
    def from_env(cls, **overrides: Any) -> ServeOptions:
        """Defaults, the API key from ``LAMBDANET_API_KEY``, then ``overrides`` that are not None."""
        base = cls(api_key=os.environ.get("LAMBDANET_API_KEY") or None)
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(base, **given) if given else base


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split()) or "error"}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LambdanetError)
    async def lambdanet_error(request: Request, exc: LambdanetError) -> JSONResponse:
        return _error(exc.http_status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return _error(400, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if exc.status_code != 404 else f"not found: {request.url.path}"
        return _error(exc.status_code, str(message))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")


def _include_dashboard(app: FastAPI) -> None:
    try:
        from lambdanet.serve.dashboard import router as dashboard_router
    except ModuleNotFoundError as exc:
        if exc.name in ("lambdanet.serve.dashboard",):
            return  # the report's dashboard is not installed
        raise
    app.include_router(dashboard_router)


def create_app(registry: ModelRegistry, options: ServeOptions | None = None, **overrides: Any) -> FastAPI:
    """The ASGI app serving ``registry`` (``overrides`` replace fields of ``options``)."""
    options = options or ServeOptions()
    if overrides:
        options = replace(options, **overrides)
    metrics = ServeMetrics()
    models = ModelManager(registry, max_batch_size=options.max_batch_size, max_wait_ms=options.max_wait_ms,
                          batching=options.batching, alias_ttl_s=options.alias_ttl_s,
                          inline_forward_ms=options.inline_forward_ms,
                          on_batch=metrics.observe_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if options.preload:
            try:
                await models.get(None)  # warm the default model; an empty registry is fine
            except LambdanetError as exc:
                log.warning("no default model loaded at start: %s", exc)
        yield
        models.close()

    app = FastAPI(title="lambdanet prediction service", version=__version__, lifespan=lifespan,
                  description="Open Inference Protocol v2, /predict, itsacat's /image, a photo page.")
    app.state.options = options
    app.state.models = models
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.fetcher = UrlFetcher(options.fetch_max_bytes, options.fetch_timeout_s, policy=options.url_policy)
    _install_error_handlers(app)

    from lambdanet.serve import routes, v2

    app.include_router(v2.router)
    app.include_router(routes.router)
    _include_dashboard(app)

    # outermost first at request time: metrics, then the API key, then the body limit
    app.add_middleware(BodyLimitMiddleware, max_bytes=options.max_request_bytes)
    if options.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=options.api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
