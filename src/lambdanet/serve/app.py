"""The prediction service: a FastAPI app over a :class:`~lambdanet.registry.ModelRegistry`.

Usage::

    from lambdanet.serve.app import create_app, ServeOptions
    app = create_app(registry, ServeOptions(api_key="s3cret", max_batch_size=32))
    uvicorn.run(app, host="127.0.0.1", port=8000)          # what ``lambdanet serve`` does

Routes: the Open Inference Protocol v2 (:mod:`lambdanet.serve.v2`), ``POST /predict``,
``GET /image?image=URL`` (itsacat), the photo page ``GET /``, ``GET /models``, ``GET /metrics``,
OpenAPI docs at ``/docs`` (Swagger UI) and ``/redoc``, and the report's dashboard router (``/runs``)
when it is installed. The docs pages load their JavaScript and CSS from the app itself (the
assets the ``fastapi-offline`` package ships, under ``/docs/assets/``), never from a CDN: they work
without internet.
Every error is ``{"error": "one line"}`` with the status of its :mod:`lambdanet.errors` class.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from starlette.exceptions import HTTPException as StarletteHTTPException

from lambdanet import __version__
from lambdanet.errors import LambdanetError
from lambdanet.registry import ModelRegistry
from lambdanet.serve.inference import InferenceRoutes
from lambdanet.serve.middleware import ServingRules
from lambdanet.serve.models import ModelManager
from lambdanet.serve.options import ServeOptions
from lambdanet.serve.rules import ServeMetrics, error_for
from lambdanet.serve.urlguard import UrlFetcher

log = logging.getLogger("lambdanet.serve")


async def _answer_error(request: Request, exc: Exception) -> Response:
    return error_for(exc, request.scope)


def _install_error_handlers(app: FastAPI) -> None:
    """FastAPI's exception handlers answer as the serving rules do (one mapping:
    :func:`lambdanet.serve.rules.error_for`)."""
    for kind in (LambdanetError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, _answer_error)


DOCS_ASSETS = "/docs/assets"


def _install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their assets served from the app (FastAPI's
    "self-hosting JavaScript and CSS for docs"), so they render with no internet."""
    from importlib.resources import files
    from pathlib import Path

    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    folder = Path(str(files("fastapi_offline") / "static"))  # swagger-ui-bundle.js, swagger-ui.css, redoc…
    app.mount(DOCS_ASSETS, StaticFiles(directory=folder), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url, title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + oauth2_redirect,
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png")

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=root + openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)


def _include_dashboard(app: FastAPI) -> None:
    try:
        from lambdanet.serve.dashboard import router as dashboard_router
    except ModuleNotFoundError as exc:
        if exc.name in ("lambdanet.serve.dashboard",):
            return  # the report's dashboard is not installed
        raise
    app.include_router(dashboard_router)


def create_app(registry: ModelRegistry, options: ServeOptions | None = None, *,
               telemetry: TelemetryConfig | None = None, **overrides: Any) -> FastAPI:
    """The ASGI app serving ``registry`` (``overrides`` replace fields of ``options``).
    ``telemetry``: FastAPI's own OpenTelemetry settings (``FastAPI(telemetry=…)``; default: the
    global providers, when one is configured)."""
    options = options or ServeOptions()
    if overrides:
        options = replace(options, **overrides)
    metrics = ServeMetrics()
    models = ModelManager(registry, options, on_batch=metrics.observe_batch)

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
                  description="Open Inference Protocol v2, /predict, itsacat's /image, a photo page.",
                  docs_url=None, redoc_url=None,  # _install_docs serves them, assets included
                  telemetry=telemetry)
    app.state.options = options
    app.state.models = models
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.fetcher = UrlFetcher(options.fetch_max_bytes, options.fetch_timeout_s, policy=options.url_policy)
    _install_error_handlers(app)
    _install_docs(app)

    from lambdanet.serve import routes, v2

    app.include_router(v2.router)
    app.include_router(routes.router)
    _include_dashboard(app)

    inference = None
    if options.direct_inference:
        declared = {route.path: route for route in (*routes.router.routes, *v2.router.routes)
                    if isinstance(route, APIRoute)}
        inference = InferenceRoutes({
            InferenceRoutes.PREDICT: (declared[InferenceRoutes.PREDICT], routes.predict),
            InferenceRoutes.INFER: (declared[InferenceRoutes.INFER], v2.infer_request),
            InferenceRoutes.INFER_VERSION: (declared[InferenceRoutes.INFER_VERSION], v2.infer_request)})
    # the one middleware: every serving rule, for every route (lambdanet.serve.middleware)
    app.add_middleware(ServingRules, metrics=metrics, api_key=options.api_key,
                       max_bytes=options.max_request_bytes, inference=inference)
    return app
