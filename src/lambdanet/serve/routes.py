"""The simple HTTP API: ``POST /predict``, itsacat's ``GET /image?image=URL``, the photo page
``GET /`` and ``GET /metrics``.

``/predict`` takes a multipart file upload, a raw image body (``Content-Type: image/*``), or
JSON ``{"data": "<base64>"}`` holding an encoded image or the raw uint8 C×H×W bytes of the
model's input (the CIFAR-10 Lambda's format), and answers
``{"label", "probability", "probabilities", "model", "version"}`` (plus ``"preview"``, a PNG
data URL of the downscaled image the model saw, with ``?preview=1``).
"""

from __future__ import annotations

import asyncio
import html
from importlib import resources
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import QueryParams, UploadFile

from lambdanet.errors import Forbidden, UserInputError
from lambdanet.serve.inputs import b64decode, bytes_input, image_input, offload, png_data_url
from lambdanet.serve.models import ServedModel
from lambdanet.serve.rules import raw_header

router = APIRouter()

MODEL_QUERY = Query(None, description="NAME, NAME:VERSION or NAME@ALIAS; default: the production alias "
                                      "of the only/first model, else its latest version")


def _result(served: ServedModel, probs: np.ndarray) -> dict[str, Any]:
    """One image's (C,) probabilities -> the /predict answer."""
    values = np.asarray(probs, dtype=np.float64).tolist()  # (C,) Python floats
    best = values.index(max(values))  # the first arg-max, as numpy's
    return {"label": served.classes[best], "probability": values[best],
            "probabilities": dict(zip(served.classes, values, strict=True)),
            "model": served.name, "version": served.version}


async def _upload_bytes(request: Request) -> bytes:
    ctype = (raw_header(request.scope, b"content-type") or "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1)
        for value in form.values():
            if isinstance(value, UploadFile):
                data = await value.read()
                await form.close()
                return data
        await form.close()
        raise UserInputError("the multipart form holds no file: send the image as the 'file' field")
    body = await request.body()
    if ctype == "application/json" or (ctype in ("", "text/plain") and body.lstrip()[:1] == b"{"):
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UserInputError(f"the body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or "data" not in doc:
            raise UserInputError('send JSON {"data": "<base64 image or raw C×H×W bytes>"}')
        return b64decode(doc["data"], "data")
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return body
    raise UserInputError(f"unsupported Content-Type {ctype or 'none'!r}: send multipart/form-data, "
                         'JSON {"data": base64} or an image/* body')


_PREDICT_DOC = {
    "parameters": [
        {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "NAME, NAME:VERSION or NAME@ALIAS; default: the production alias of the only/first "
                        "model, else its latest version"},
        {"name": "preview", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
         "description": "add the downscaled image the model saw, as a PNG data URL"},
    ],
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}}}},
        "application/json": {"schema": {"type": "object", "properties": {"data": {
            "type": "string", "description": "base64 of an encoded image or of the raw uint8 C×H×W input"}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    }},
}
_TRUE = frozenset({"1", "true", "yes", "on"})
_QUERIES: dict[bytes, tuple[str | None, bool]] = {}  # query string -> (model, preview)


def _predict_query(query_string: bytes) -> tuple[str | None, bool]:
    """``?model=…&preview=…``, parsed by Starlette once per distinct query string (clients send
    the same few again and again; the cache stays small)."""
    hit = _QUERIES.get(query_string)
    if hit is None:
        params = QueryParams(query_string)
        hit = (params.get("model"), params.get("preview", "").lower() in _TRUE)
        if len(_QUERIES) >= 256:
            _QUERIES.clear()
        _QUERIES[query_string] = hit
    return hit


@router.post("/predict", summary="Classify one image (upload, base64 JSON or raw C×H×W bytes)",
             openapi_extra=_PREDICT_DOC, response_class=JSONResponse)
async def predict(request: Request) -> Response:
    # the hot path: served by inference.InferenceRoutes without FastAPI's router; parameters are
    # read by hand (documented in _PREDICT_DOC): FastAPI's parameter and response validation would
    # cost more than the forward pass of an MLP
    model, preview = _predict_query(request.scope["query_string"])
    served: ServedModel = await request.app.state.models.get(model)
    request.state.model, request.state.version = served.name, served.version
    options = request.app.state.options
    async with served.batcher.request() as submit:
        data = await _upload_bytes(request)
        image, kind = await offload(len(data), bytes_input, data, served.input_shape, options.max_pixels)
        probs = await submit(image[None])  # (1, C)
    result = _result(served, probs[0])
    result["input"] = kind
    if preview:
        result["preview"] = png_data_url(image)
    return Response(orjson.dumps(result), media_type="application/json")


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Image Prediction API</title></head>
<body><h1>The Image Prediction API predicts a {label} image</h1>
<p>model {model}:{version} &middot; probability {probability:.3f}</p></body></html>"""


@router.get("/image", response_class=HTMLResponse, summary="itsacat compatibility: classify the image at a URL")
async def image_from_url(request: Request, image: str = Query(..., description="http(s) URL of an image"),
                         model: str | None = MODEL_QUERY) -> HTMLResponse:
    options = request.app.state.options
    if not options.allow_url_fetch:
        raise Forbidden("fetching images from URLs is off: start the server with --allow-url-fetch")
    served: ServedModel = await request.app.state.models.get(model)
    request.state.model, request.state.version = served.name, served.version
    async with served.batcher.request() as submit:
        data = await request.app.state.fetcher.fetch(image)
        arr = await offload(len(data), image_input, data, served.input_shape, options.max_pixels)
        probs = await submit(arr[None])  # (1, C)
    result = _result(served, probs[0])
    label = str(result["label"]).upper()
    return HTMLResponse(PAGE.format(label=html.escape(label), model=html.escape(served.name),
                                    version=served.version, probability=result["probability"]))


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
@router.get("/index.html", response_class=HTMLResponse, include_in_schema=False)
async def photo_page() -> HTMLResponse:
    text = resources.files("lambdanet.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(text, headers={"Cache-Control": "no-cache"})


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/models", summary="The models and aliases the registry holds")
async def list_models(request: Request) -> JSONResponse:
    registry = request.app.state.models.registry

    def listing() -> list[dict[str, Any]]:
        return [{"name": n, "versions": registry.versions(n), "aliases": registry.aliases(n)}
                for n in registry.models()]

    return JSONResponse({"models": await asyncio.to_thread(listing)})
