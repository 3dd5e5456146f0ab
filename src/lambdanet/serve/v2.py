"""Open Inference Protocol v2 (KServe / Triton REST), over the models of the registry.

Routes: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2`` (server metadata),
``GET /v2/models/{name}[/versions/{v}]`` (model metadata), ``…/ready``, and
``POST /v2/models/{name}[/versions/{v}]/infer``. ``{v}`` is a version number or an alias name.

Inputs (exactly one): ``input`` — UINT8 or FP32 pixel values, shape [N, H, W, C]; or ``image``
— BYTES, [N] encoded PNG/JPEG images (base64 strings or ``{"b64": …}`` in JSON). Either may
travel in the binary-data extension: the JSON header's length in ``Inference-Header-Content-
Length``, then each input's raw bytes (``"parameters": {"binary_data_size": n}``; BYTES
elements as 4-byte little-endian length + bytes). Outputs: ``probabilities`` FP32 [N, C] and
``label`` BYTES [N], in JSON, or binary when asked (``binary_data`` / ``binary_data_output``).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from lambdanet import __version__ as _pkg_version
from lambdanet.errors import UserInputError
from lambdanet.serve.inputs import b64decode, image_input, offload, tensor_input
from lambdanet.serve.models import ServedModel, top_label
from lambdanet.serve.rules import raw_header

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])

_LEN = struct.Struct("<I")
_DTYPES: dict[str, np.dtype[Any]] = {"UINT8": np.dtype("u1"), "FP32": np.dtype("<f4"),
                                     "FP64": np.dtype("<f8"), "FP16": np.dtype("<f2")}


def _ref(name: str, version: str | None) -> str:
    if version is None:
        return name
    return f"{name}:{version}" if version.isdigit() else f"{name}@{version}"


async def _served(request: Request, name: str, version: str | None) -> ServedModel:
    served: ServedModel = await request.app.state.models.get(_ref(name, version))
    request.state.model, request.state.version = served.name, served.version
    return served


@router.get("/health/live", summary="Liveness")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Readiness: the registry answers and holds a model")
async def ready(request: Request) -> Response:
    try:
        await request.app.state.models.get(None)
    except Exception as exc:  # not ready: say why, never a traceback
        return JSONResponse({"ready": False, "error": str(exc).splitlines()[0] if str(exc) else
                             type(exc).__name__}, status_code=503)
    return JSONResponse({"ready": True})


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": "lambdanet", "version": _pkg_version, "extensions": ["binary_tensor_data", "model_repository"]}


def _metadata(request: Request, served: ServedModel) -> dict[str, Any]:
    h, w, c = served.input_shape
    n_classes = len(served.classes)
    versions = [str(v) for v in request.app.state.models.registry.versions(served.name)]
    return {
        "name": served.name,
        "versions": versions,
        "platform": f"lambdanet_{served.metadata.get('kind', 'mlp')}",
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [-1, h, w, c],
             "parameters": {"accepted_datatypes": ["FP32", "UINT8"], "scale": "pixel values 0..255"}},
            {"name": "image", "datatype": "BYTES", "shape": [-1],
             "parameters": {"content": "encoded PNG/JPEG images"}},
        ],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {"version": str(served.version), "classes": served.classes},
    }


@router.get("/models/{name}", summary="Model metadata (default version)")
async def model_metadata(name: str, request: Request) -> dict[str, Any]:
    return _metadata(request, await _served(request, name, None))


@router.get("/models/{name}/versions/{version}", summary="Model metadata")
async def model_version_metadata(name: str, version: str, request: Request) -> dict[str, Any]:
    return _metadata(request, await _served(request, name, version))


@router.get("/models/{name}/ready", summary="Model readiness (default version)")
async def model_ready(name: str, request: Request) -> dict[str, Any]:
    served = await _served(request, name, None)
    return {"name": served.name, "version": str(served.version), "ready": True}


@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness")
async def model_version_ready(name: str, version: str, request: Request) -> dict[str, Any]:
    served = await _served(request, name, version)
    return {"name": served.name, "version": str(served.version), "ready": True}


# ---- infer ------------------------------------------------------------------------------------
def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is not None:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise UserInputError("Inference-Header-Content-Length must be the length of the JSON header")
        n = int(header_length)
        head, binary = body[:n], body[n:]
    else:
        head, binary = body, b""
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise UserInputError(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) or not header["inputs"]:
        raise UserInputError("the inference request needs a non-empty 'inputs' list")
    return header, binary


def _bytes_elements(blob: bytes) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise UserInputError("input 'image': truncated BYTES element length")
        (n,) = _LEN.unpack_from(blob, pos)
        pos += 4
        if pos + n > len(blob):
            raise UserInputError("input 'image': a BYTES element runs past the binary data")
        out.append(blob[pos:pos + n])
        pos += n
    return out


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [x for item in data for x in _flatten(item)]
    return [data]


def _json_images(data: Any) -> list[bytes]:
    images = []
    for item in _flatten(data):
        text = item.get("b64") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise UserInputError("input 'image': each element must be a base64 string or {\"b64\": string}")
        images.append(b64decode(text, "image"))
    return images


async def _inputs_to_batch(header: dict[str, Any], binary: bytes, served: ServedModel,
                           max_pixels: int) -> np.ndarray:
    """The one input of the request -> uint8 (N, H, W, C)."""
    pos = 0
    found: list[tuple[dict[str, Any], bytes | None]] = []
    for spec in header["inputs"]:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise UserInputError("each input needs a 'name', 'datatype', 'shape' and 'data'")
        size = (spec.get("parameters") or {}).get("binary_data_size")
        raw = None
        if size is not None:
            if not isinstance(size, int) or size < 0 or pos + size > len(binary):
                raise UserInputError(f"input {spec['name']!r}: binary_data_size runs past the body")
            raw, pos = binary[pos:pos + size], pos + size
        found.append((spec, raw))
    names = [spec["name"] for spec, _ in found]
    if len(found) != 1 or names[0] not in ("input", "image"):
        raise UserInputError(f"send exactly one input, named 'input' (tensor) or 'image' (BYTES); got {names}")
    spec, raw = found[0]
    datatype = str(spec.get("datatype", "")).upper()
    if raw is None and "data" not in spec:
        raise UserInputError(f"input {spec['name']!r} has no 'data' and no binary_data_size")
    if spec["name"] == "image":
        if datatype != "BYTES":
            raise UserInputError(f"input 'image' must have datatype BYTES, got {datatype!r}")
        blobs = _bytes_elements(raw) if raw is not None else _json_images(spec["data"])
        if not blobs:
            raise UserInputError("input 'image' holds no image")
        total = sum(len(b) for b in blobs)

        def decode_all() -> np.ndarray:
            return np.stack([image_input(b, served.input_shape, max_pixels) for b in blobs])  # (N, H, W, C)

        batch: np.ndarray = await offload(total, decode_all)
        return batch
    if raw is not None:
        if datatype not in _DTYPES:
            raise UserInputError(f"input 'input': datatype {datatype!r} is not supported (use UINT8 or FP32)")
        dtype = _DTYPES[datatype]
        if len(raw) % dtype.itemsize:
            raise UserInputError(f"input 'input': {len(raw)} bytes is not a whole number of {datatype}")
        values = np.frombuffer(raw, dtype=dtype)
    else:
        try:  # flat or nested lists: numpy flattens them in C
            values = np.asarray(spec["data"], dtype=np.float64 if datatype != "UINT8" else None).ravel()
        except (TypeError, ValueError, OverflowError):
            raise UserInputError("input 'input': 'data' must be numbers (nested lists of one shape)") from None
        if values.dtype.kind not in "iuf":
            raise UserInputError("input 'input': 'data' must be numbers")
    return tensor_input(values, datatype, spec.get("shape") or [], served.input_shape)


def _encode_bytes(items: list[str]) -> bytes:
    return b"".join(_LEN.pack(len(e)) + e for e in (s.encode() for s in items))


@router.post("/models/{name}/infer", summary="Inference (default version)")
async def infer(name: str, request: Request) -> Response:
    return await infer_request(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference")
async def infer_version(name: str, version: str, request: Request) -> Response:
    return await infer_request(request, name, version)


async def infer_request(request: Request, name: str, version: str | None) -> Response:
    """The hot path (served by inference.InferenceRoutes without FastAPI's router)."""
    served = await _served(request, name, version)
    options = request.app.state.options
    async with served.batcher.request() as submit:
        body = await request.body()
        header, binary = _split_body(body, raw_header(request.scope, b"inference-header-content-length"))
        batch = await _inputs_to_batch(header, binary, served, options.max_pixels)  # (N, H, W, C)
        probs = np.asarray(await submit(batch), dtype=np.float32)  # (N, n_classes)
    labels, _ = top_label(served.classes, probs)
    wanted = header.get("outputs") or [{"name": "probabilities"}, {"name": "label"}]
    binary_default = bool((header.get("parameters") or {}).get("binary_data_output", False))
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out in wanted:
        out_name = out.get("name") if isinstance(out, dict) else None
        if out_name == "probabilities":
            tensor: dict[str, Any] = {"name": "probabilities", "datatype": "FP32", "shape": list(probs.shape)}
            data: Any = probs.ravel().tolist()
            blob = probs.astype("<f4").tobytes()
        elif out_name == "label":
            tensor = {"name": "label", "datatype": "BYTES", "shape": [len(labels)]}
            data, blob = labels, _encode_bytes(labels)
        else:
            raise UserInputError(f"unknown output {out_name!r}: the outputs are 'probabilities' and 'label'")
        if bool((out.get("parameters") or {}).get("binary_data", binary_default)):
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = data
        outputs.append(tensor)
    payload: dict[str, Any] = {"model_name": served.name, "model_version": str(served.version), "outputs": outputs}
    if "id" in header:
        payload["id"] = header["id"]
    if not blobs:
        return Response(orjson.dumps(payload), media_type="application/json")
    head = orjson.dumps(payload)
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})
