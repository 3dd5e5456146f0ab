"""The serving function (AWS Lambda): the same app behind API Gateway, through Mangum.

Deploy with the handler ``lambdanet.functions.serving_function.handler`` and the environment
``LAMBDANET_REGISTRY=s3://bucket/prefix`` (any object-store URL works; tests use a folder) and
optionally ``LAMBDANET_API_KEY``. API Gateway REST API (payload v1) and HTTP API (payload v2)
events are both understood; binary bodies arrive base64-encoded and are decoded by Mangum.

The app and its model cache are built on the first event and kept for the life of the warm
container. Micro-batching is off: a Lambda container handles one event at a time. Photos are
fitted to the model's input exactly as ``lambdanet serve`` and training on an image folder do
(:func:`lambdanet.data.images.photo_to_array`: EXIF orientation, short side resized, centre
cropped — the version's recorded ``preprocessing.fit``).
"""

from __future__ import annotations

from typing import Any

from lambdanet.errors import ConfigError

_handler: Any = None


def build_handler(registry_url: str | None = None) -> Any:
    """A Mangum handler over the registry at ``registry_url`` (default ``$LAMBDANET_REGISTRY``)."""
    from mangum import Mangum

    from lambdanet import adapters
    from lambdanet.registry import ModelRegistry
    from lambdanet.serve.app import create_app
    from lambdanet.serve.options import ServeOptions
    from lambdanet.settings import Settings

    url = registry_url or Settings.from_env().registry_url
    if not url:
        raise ConfigError("set LAMBDANET_REGISTRY to the registry's object-store URL (s3://bucket/prefix)")
    registry = ModelRegistry(adapters.open_objects(url))
    options = ServeOptions.from_env(batching=False, preload=False)
    app = create_app(registry, options)
    return Mangum(app, lifespan="off", text_mime_types=["application/json", "text/html", "text/plain"])


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda function handler."""
    global _handler
    if _handler is None:
        _handler = build_handler()
    result: dict[str, Any] = _handler(event, context)
    return result
