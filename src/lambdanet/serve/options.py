"""The server's options, with their defaults written once (``lambdanet serve`` reads them here).

Usage::

    from lambdanet.serve.options import ServeOptions
    options = ServeOptions(api_key="s3cret", max_batch_size=16)
    ServeOptions().max_wait_ms            # the default, as ``lambdanet serve --help`` shows it

Light on purpose (no FastAPI import): the CLI imports it to build its ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lambdanet.serve.urlguard import AddressPolicy


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``lambdanet serve`` can set (see ``lambdanet serve --help``)."""

    api_key: str | None = None
    allow_url_fetch: bool = False
    max_batch_size: int = 32  # images per forward pass
    max_wait_ms: float = 0.0  # 0: never hold a pass for more requests (see serve.batching)
    batching: bool = True
    # batch sizes measured (at model load) faster than this run on the event loop, alone when the
    # model is idle: a thread hand-off would cost as much; slower ones go to the batcher's thread,
    # where concurrent requests batch (figures: docs/benchmarks.md)
    inline_forward_ms: float = 0.25
    max_request_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 40_000_000
    fetch_max_bytes: int = 10 * 1024 * 1024
    fetch_timeout_s: float = 5.0
    alias_ttl_s: float = 0.5
    preload: bool = True
    url_policy: AddressPolicy | None = None  # tests only: which addresses /image may contact
    # POST /predict and …/infer called straight from the serving-rules middleware, without
    # FastAPI's router (lambdanet.serve.inference); False: through the router, as every other route
    direct_inference: bool = True

    @classmethod
    def from_env(cls, **overrides: Any) -> ServeOptions:
        """Defaults, the API key from ``LAMBDANET_API_KEY``, then ``overrides`` that are not None."""
        from lambdanet.settings import Settings

        base = cls(api_key=Settings.from_env().api_key)
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(base, **given) if given else base


DEFAULTS = ServeOptions()
