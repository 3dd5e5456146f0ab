"""The models a server holds: references resolved per request, predictors cached per version.

Usage::

    models = ModelManager(registry, ServeOptions(max_batch_size=32))
    served = await models.get("itsacat@production")    # ServedModel(name, version, predictor, batcher)
    probs = await served.batcher.predict(images)

Blue/green: a reference (``itsacat``, ``itsacat@production``) is resolved at most every
``alias_ttl_s`` seconds (aliases.json is re-read, nothing else), while predictors are cached per
``(name, version)`` and never reloaded. Moving an alias therefore switches the next requests to
the new version at once; requests already holding the old version finish on it; no request
fails during the switch. Up to ``max_versions`` versions stay loaded (least recently used out).

A bare ``name`` resolves as everywhere (:meth:`ModelRegistry.default_version
<lambdanet.registry.ModelRegistry.default_version>`: the ``production`` alias, else the newest
version not from a tune trial). At start-up (the first :meth:`ModelManager.get`, which the app's
warm-up makes) the manager logs one line per model name saying which version it resolves to and
why, e.g. ``model catvnoncat -> catvnoncat:7 (newest version not from a tune trial)``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lambdanet.errors import LambdanetError, ModelNotFound
from lambdanet.predictor import Predictor, load_predictor
from lambdanet.registry import ModelRegistry
from lambdanet.serve.batching import MicroBatcher
from lambdanet.serve.options import ServeOptions

# uvicorn's own error log: lines there print with the server's (at its --log-level); silent elsewhere
log = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: int
    predictor: Predictor
    batcher: MicroBatcher
    metadata: dict[str, Any]
    input_shape: tuple[int, int, int]  # (H, W, C), read once from the predictor
    classes: list[str]


class ModelManager:
    """Resolves model references and hands out cached, batching predictors."""

    def __init__(self, registry: ModelRegistry, options: ServeOptions | None = None, *, max_versions: int = 8,
                 on_batch: Callable[[str, int, int], None] | None = None) -> None:
        self.registry = registry
        self.options = options or ServeOptions()
        self.alias_ttl_s = self.options.alias_ttl_s
        self.max_versions = max_versions
        self._on_batch = on_batch
        self._refs: dict[str, tuple[float, str, int]] = {}
        self._default: tuple[float, str] | None = None
        self._served: OrderedDict[tuple[str, int], ServedModel] = OrderedDict()
        self._loading: dict[tuple[str, int], asyncio.Future[ServedModel]] = {}
        self._lock = threading.Lock()
        self._announced = False

    # ---- references ------------------------------------------------------------------------
    def resolutions(self) -> list[str]:
        """One line per model name: the version a bare name resolves to and why."""
        lines = []
        for name in self.registry.models():
            try:
                version, why = self.registry.default_version(name)
                lines.append(f"model {name} -> {name}:{version} ({why})")
            except LambdanetError as exc:
                lines.append(f"model {name} -> none: {exc}")
        return lines

    def announce(self) -> None:
        """Log :meth:`resolutions` once (the first :meth:`get`: the app's start-up warm-up)."""
        if self._announced:
            return
        self._announced = True
        try:
            lines = self.resolutions()
        except LambdanetError as exc:
            log.warning("cannot list the registry's models: %s", exc)
            return
        for line in lines:
            log.info("%s", line)

    def default_name(self) -> str:
        """The only model, else the first by name; cached like aliases."""
        now = time.monotonic()
        if self._default is not None and now - self._default[0] < self.alias_ttl_s:
            return self._default[1]
        names = sorted(self.registry.models())
        if not names:
            raise ModelNotFound("the registry holds no model yet: train one (lambdanet train) first")
        self._default = (now, names[0])
        return names[0]

    def resolve(self, ref: str | None) -> tuple[str, int]:
        """``None`` (default model), ``name``, ``name:3`` or ``name@alias`` -> (name, version)."""
        ref = (ref or "").strip() or self.default_name()
        now = time.monotonic()
        hit = self._refs.get(ref)
        if hit is not None and now - hit[0] < self.alias_ttl_s:
            return hit[1], hit[2]
        name, version = self.registry.resolve(ref)
        with self._lock:
            if len(self._refs) > 1024:
                self._refs.clear()
            self._refs[ref] = (now, name, version)
        return name, version

    # ---- predictors ------------------------------------------------------------------------
    def _load(self, name: str, version: int) -> ServedModel:
        mv = self.registry.load(f"{name}:{version}")
        predictor = load_predictor(mv)

        def on_batch(n: int) -> None:
            if self._on_batch is not None:
                self._on_batch(name, version, n)

        opts = self.options
        batcher = MicroBatcher(predictor.predict_proba, opts.max_batch_size, opts.max_wait_ms,
                               enabled=opts.batching, on_batch=on_batch)
        h, w, c = (int(d) for d in predictor.input_shape)
        batcher.calibrate((h, w, c), opts.inline_forward_ms)
        return ServedModel(name, version, predictor, batcher, dict(mv.metadata), (h, w, c), list(predictor.classes))

    async def get_version(self, name: str, version: int) -> ServedModel:
        """The cached predictor of ``name:version`` (loaded once, in a thread)."""
        key = (name, version)
        served = self._served.get(key)
        if served is not None:
            self._served.move_to_end(key)
            return served
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[key] = pending
            try:
                served = await asyncio.to_thread(self._load, name, version)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # mark retrieved: waiters re-raise it themselves
                raise
            finally:
                self._loading.pop(key, None)
            self._served[key] = served
            pending.set_result(served)
            while len(self._served) > self.max_versions:
                _, old = self._served.popitem(last=False)
                old.batcher.close()
            return served
        return await asyncio.shield(pending)

    async def get(self, ref: str | None) -> ServedModel:
        if not self._announced:
            await asyncio.to_thread(self.announce)
        name, version = await asyncio.to_thread(self.resolve, ref) if self._stale(ref) else self.resolve(ref)
        return await self.get_version(name, version)

    def _stale(self, ref: str | None) -> bool:
        """Whether resolving ``ref`` will touch the registry (then do it off the event loop)."""
        key = (ref or "").strip()
        now = time.monotonic()
        if not key:
            if self._default is None or now - self._default[0] >= self.alias_ttl_s:
                return True
            key = self._default[1]
        hit = self._refs.get(key)
        return hit is None or now - hit[0] >= self.alias_ttl_s

    def loaded(self) -> list[ServedModel]:
        """The versions held now, least recently used first."""
        return list(self._served.values())

    def close(self) -> None:
        for served in self._served.values():
            served.batcher.close()


def top_label(classes: list[str], probs: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(n, C) probabilities -> the arg-max class names and their probabilities."""
    idx = probs.argmax(axis=1)  # (n,)
    return [classes[int(i)] for i in idx], probs[np.arange(len(idx)), idx]
