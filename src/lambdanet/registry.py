"""The model registry: numbered, immutable versions of named models and movable aliases.

Usage::

    registry = ModelRegistry(adapters.open_objects("/home/me/.lambdanet/objects"))
    mv = registry.register("itsacat", {"W1": W1, "b1": b1, …}, {"kind": "mlp", …})   # -> version 1, 2, …
    registry.set_alias("itsacat", "staging", mv.version)
    registry.promote("itsacat", "staging", "production")      # blue/green: production -> staging's version
    registry.rollback("itsacat", "production")                # undo the alias's last move
    registry.load("itsacat")            # production alias if set, else the latest version
    registry.load("itsacat:3"); registry.load("itsacat@staging")
    registry.export_itsacat_h5("itsacat:3", Path("params.h5"))

Layout on any :class:`ObjectStore`::

    models/<name>/versions/<n>/claim.json            the version number is taken (written first)
    models/<name>/versions/<n>/weights.safetensors   safetensors.numpy bytes (never pickle)
    models/<name>/versions/<n>/model.json            metadata, written LAST: the version is visible
    models/<name>/aliases.json                       {"aliases": {"production": 2}, "history": […]}

**Racing registrations.** A version number is claimed by creating ``claim.json`` only if it is
absent. Stores that offer ``put_if_absent(key, data) -> bool`` (the folder store: a complete
temporary file hard-linked into place, which fails if the key exists; S3 can do it with a
conditional ``If-None-Match: *`` put) make this exact across threads, processes and machines:
the loser sees ``False`` and tries the next number. For a store without it, the registry falls
back to write-then-read-back of a random token (best effort: two writers in the same
millisecond window can still collide), serialised by a lock within one process. A writer that
dies after claiming leaves a gap in the numbering, never a half-visible version.

Aliases are one JSON document replaced whole (the store's put is atomic), so a reader sees the
old or the new alias, never a mix; concurrent ``set_alias`` calls from several processes are
last-writer-wins. Loaded versions are cached in memory keyed by (name, version) — versions are
immutable — and their arrays are read-only.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from lambdanet.errors import LambdanetError, ModelNotFound, ObjectNotFound, UserInputError
from lambdanet.ports.objects import ObjectStore

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
RESERVED_ALIASES = frozenset({"latest"})
HISTORY_LIMIT = 100


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its metadata (model.json) and weights (read-only arrays)."""

    name: str
    version: int
    metadata: dict[str, Any]
    weights: dict[str, np.ndarray]

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise UserInputError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias):
        raise UserInputError(
            f"invalid alias {alias!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter"
        )
    return alias


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, sort_keys=True, indent=1).encode()


class ModelRegistry:
    """Numbered versions and aliases of named models on an :class:`ObjectStore`."""

    def __init__(self, objects: ObjectStore, cache_size: int = 8) -> None:
        self.objects = objects
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int], ModelVersion] = OrderedDict()
        self._lock = threading.RLock()

    # ---- keys ----------------------------------------------------------------------------------
    @staticmethod
    def _vkey(name: str, version: int, leaf: str) -> str:
        return f"models/{name}/versions/{version}/{leaf}"

    @staticmethod
    def _akey(name: str) -> str:
        return f"models/{name}/aliases.json"

    def _version_numbers(self, name: str, visible_only: bool) -> list[int]:
        prefix = f"models/{name}/versions/"
        found: set[int] = set()
        for key in self.objects.list(prefix):
            number, _, leaf = key[len(prefix):].partition("/")
            if number.isdigit() and (not visible_only or leaf == "model.json"):
                found.add(int(number))
        return sorted(found)

    # ---- listing -------------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Names with at least one visible version, sorted."""
        names = {
            key.split("/")[1]
            for key in self.objects.list("models/")
            if key.endswith("/model.json") and key.count("/") == 4
        }
        return sorted(names)

    def versions(self, name: str) -> list[int]:
        """Visible versions of ``name`` (ascending); [] for an unknown model."""
        return self._version_numbers(check_name(name), visible_only=True)

    def aliases(self, name: str) -> dict[str, int]:
        return dict(self._alias_doc(check_name(name))["aliases"])

    def _alias_doc(self, name: str) -> dict[str, Any]:
        try:
            doc = json.loads(self.objects.get(self._akey(name)))
        except ObjectNotFound:
            return {"aliases": {}, "history": []}
        except ValueError as exc:
            raise ModelNotFound(f"the aliases of model '{name}' are unreadable ({exc}); set them again") from exc
        return {"aliases": {str(k): int(v) for k, v in doc.get("aliases", {}).items()},
                "history": list(doc.get("history", []))}

    def describe(self, name: str) -> str:
        """One line for error messages: what exists of ``name`` (or which models exist)."""
        versions = self.versions(name)
        if not versions:
            models = self.models()
            known = f"models: {', '.join(models)}" if models else "the registry is empty; train one first"
            return f"no model '{name}' in the registry ({known})"
        text = f"model '{name}' has versions {', '.join(str(v) for v in versions)}"
        aliases = self.aliases(name)
        if aliases:
            text += " and aliases " + ", ".join(f"{a}→{v}" for a, v in sorted(aliases.items()))
        return text

    # ---- register ------------------------------------------------------------------------------
    def register(self, name: str, weights: dict[str, np.ndarray], metadata: dict[str, Any]) -> ModelVersion:
        """Store a new version of ``name``; returns it with its number (1, 2, …)."""
        check_name(name)
        blob, arrays = _encode_weights(name, weights)
        if not isinstance(metadata, dict):
            raise UserInputError(f"model metadata must be a JSON object, not {type(metadata).__name__}")
        meta = copy.deepcopy(metadata)
        meta["name"] = name
        meta.setdefault("created_at", time.time())
        try:
            _dumps(meta)
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"model metadata for '{name}' is not JSON-serialisable: {exc}") from exc

        version = self._claim_next(name)
        meta["version"] = version
        self.objects.put(self._vkey(name, version, "weights.safetensors"), blob)
        self.objects.put(self._vkey(name, version, "model.json"), _dumps(meta))  # last: now visible
        mv = ModelVersion(name, version, meta, arrays)
        self._remember(mv)
        return self._copy(mv)

    def _claim_next(self, name: str) -> int:
        claimed = self._version_numbers(name, visible_only=False)
        candidate = (claimed[-1] if claimed else 0) + 1
        put_if_absent = getattr(self.objects, "put_if_absent", None)
        for _ in range(10_000):
            key = self._vkey(name, candidate, "claim.json")
            token = _dumps({"token": uuid.uuid4().hex, "pid": os.getpid(), "at": time.time()})
            if put_if_absent is not None:
                if put_if_absent(key, token):
                    return candidate
            elif self._claim_fallback(key, token):
                return candidate
            candidate += 1
        raise LambdanetError(f"could not claim a version number for model '{name}'")

    def _claim_fallback(self, key: str, token: bytes) -> bool:
        """Best-effort claim for stores without put_if_absent: write, wait, read back."""
        with self._lock:
            if self.objects.exists(key):
                return False
            self.objects.put(key, token)
            time.sleep(0.02 + secrets.randbelow(30) / 1000)
            try:
                return self.objects.get(key) == token
            except ObjectNotFound:
                return False

    # ---- resolve / load ------------------------------------------------------------------------
    def resolve(self, ref: str) -> tuple[str, int]:
        """``name`` (production alias, else latest), ``name:3``, ``name@alias`` -> (name, version)."""
        if not isinstance(ref, str) or not ref.strip():
            raise UserInputError("empty model reference; use NAME, NAME:VERSION or NAME@ALIAS")
        ref = ref.strip()
        if "@" in ref:
            name, _, alias = ref.partition("@")
            check_name(name)
            check_alias(alias)
            aliases = self.aliases(name)
            if alias in aliases:
                version = aliases[alias]
            elif alias == "latest":
                version = self._latest(name)
            else:
                raise ModelNotFound(f"{self.describe(name)}; no alias '{alias}'")
            if not self.objects.exists(self._vkey(name, version, "model.json")):
                raise ModelNotFound(f"alias {name}@{alias} points to missing version {version}; "
                                    f"{self.describe(name)}")
            return name, version
        if ":" in ref:
            name, _, number = ref.partition(":")
            check_name(name)
            if not number.isdigit() or int(number) < 1:
                raise UserInputError(f"invalid model version {number!r} in {ref!r}; versions are 1, 2, 3, …")
            version = int(number)
            if not self.objects.exists(self._vkey(name, version, "model.json")):
                raise ModelNotFound(f"{self.describe(name)}; no version {version}")
            return name, version
        name = check_name(ref)
        production = self.aliases(name).get("production")
        if production is not None and self.objects.exists(self._vkey(name, production, "model.json")):
            return name, production
        return name, self._latest(name)

    def _latest(self, name: str) -> int:
        versions = self.versions(name)
        if not versions:
            raise ModelNotFound(self.describe(name))
        return versions[-1]

    def metadata(self, name: str, version: int) -> dict[str, Any]:
        check_name(name)
        with self._lock:
            cached = self._cache.get((name, int(version)))
        if cached is not None:
            return copy.deepcopy(cached.metadata)
        return self._read_metadata(name, int(version))

    def _read_metadata(self, name: str, version: int) -> dict[str, Any]:
        try:
            raw = self.objects.get(self._vkey(name, version, "model.json"))
        except ObjectNotFound as exc:
            raise ModelNotFound(f"{self.describe(name)}; no version {version}") from exc
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            raise ModelNotFound(f"model {name}:{version} has unreadable metadata ({exc})") from exc
        return meta  # type: ignore[no-any-return]

    def load(self, ref: str) -> ModelVersion:
        """The version ``ref`` names (see :meth:`resolve`), weights as read-only arrays."""
        name, version = self.resolve(ref)
        with self._lock:
            cached = self._cache.get((name, version))
            if cached is not None:
                self._cache.move_to_end((name, version))
                return self._copy(cached)
        meta = self._read_metadata(name, version)
        try:
            blob = self.objects.get(self._vkey(name, version, "weights.safetensors"))
            arrays = st_load(blob)
        except ObjectNotFound as exc:
            raise ModelNotFound(f"model {name}:{version} has no weights file") from exc
        except Exception as exc:  # safetensors raises its own error types
            if isinstance(exc, LambdanetError):
                raise
            raise ModelNotFound(f"model {name}:{version} has unreadable weights ({exc})") from exc
        for arr in arrays.values():
            arr.flags.writeable = False
        mv = ModelVersion(name, version, meta, arrays)
        self._remember(mv)
        return self._copy(mv)

    def _remember(self, mv: ModelVersion) -> None:
        with self._lock:
            self._cache[(mv.name, mv.version)] = mv
            self._cache.move_to_end((mv.name, mv.version))
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    @staticmethod
    def _copy(mv: ModelVersion) -> ModelVersion:
        """A caller's view: its own dicts, the same (read-only) arrays."""
        return ModelVersion(mv.name, mv.version, copy.deepcopy(mv.metadata), dict(mv.weights))

    # ---- aliases -------------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at ``version`` (replaces aliases.json whole: readers switch atomically)."""
        check_name(name)
        check_alias(alias)
        if alias in RESERVED_ALIASES:
            raise UserInputError(f"'{alias}' is reserved (NAME@latest always means the newest version)")
        if isinstance(version, bool) or not isinstance(version, int | np.integer):
            raise UserInputError(f"invalid model version {version!r}; versions are 1, 2, 3, …")
        version = int(version)
        if not self.objects.exists(self._vkey(name, version, "model.json")):
            raise ModelNotFound(f"{self.describe(name)}; no version {version}")
        with self._lock:
            doc = self._alias_doc(name)
            previous = doc["aliases"].get(alias)
            doc["aliases"][alias] = version
            doc["history"].append({"alias": alias, "version": version, "previous": previous, "at": time.time()})
            doc["history"] = doc["history"][-HISTORY_LIMIT:]
            self.objects.put(self._akey(name), _dumps(doc))

    def remove_alias(self, name: str, alias: str) -> None:
        check_name(name)
        check_alias(alias)
        with self._lock:
            doc = self._alias_doc(name)
            if alias not in doc["aliases"]:
                raise ModelNotFound(f"{self.describe(name)}; no alias '{alias}'")
            previous = doc["aliases"].pop(alias)
            doc["history"].append({"alias": alias, "version": None, "previous": previous, "at": time.time()})
            doc["history"] = doc["history"][-HISTORY_LIMIT:]
            self.objects.put(self._akey(name), _dumps(doc))

    def promote(self, name: str, source: str = "staging", target: str = "production") -> int:
        """Move ``target`` to the version ``source`` points at; returns that version."""
        check_name(name)
        check_alias(source)
        aliases = self.aliases(name)
        if source not in aliases:
            raise ModelNotFound(f"{self.describe(name)}; no alias '{source}' to promote")
        version = aliases[source]
        self.set_alias(name, target, version)
        return version

    def rollback(self, name: str, alias: str = "production") -> int:
        """Undo the last move of ``alias`` (point it back where it was); returns that version."""
        check_name(name)
        check_alias(alias)
        history = [h for h in self._alias_doc(name)["history"] if h.get("alias") == alias]
        if not history or history[-1].get("previous") is None:
            raise ModelNotFound(f"{self.describe(name)}; alias '{alias}' has no earlier version to roll back to")
        previous = int(history[-1]["previous"])
        self.set_alias(name, alias, previous)
        return previous

    # ---- export --------------------------------------------------------------------------------
    def export_itsacat_h5(self, ref: str, out: Path) -> Path:
        """Write itsacat's params.h5 (datasets W1..WL, b1..bL) atomically; returns ``out``."""
        import h5py

        mv = self.load(ref)
        kind = mv.metadata.get("kind", "mlp")
        if kind != "mlp":
            raise UserInputError(f"model {mv.ref} is a {kind} model; the itsacat-h5 format holds MLPs only")
        layers = sorted(int(k[1:]) for k in mv.weights if re.fullmatch(r"W[1-9][0-9]*", k))
        if not layers or layers != list(range(1, len(layers) + 1)) or any(f"b{i}" not in mv.weights
                                                                          for i in layers):
            raise UserInputError(f"model {mv.ref} does not hold W1..WL and b1..bL (has {sorted(mv.weights)})")
        out = Path(out).expanduser()
        tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(tmp, "w") as fh:
                for i in layers:
                    fh.create_dataset(f"W{i}", data=mv.weights[f"W{i}"])  # (n_i, n_{i-1})
                    fh.create_dataset(f"b{i}", data=mv.weights[f"b{i}"])  # (n_i, 1)
            os.replace(tmp, out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UserInputError(f"cannot write {out}: {exc.strerror or exc}") from exc
        return out


def _encode_weights(name: str, weights: dict[str, np.ndarray]) -> tuple[bytes, dict[str, np.ndarray]]:
    """safetensors bytes of ``weights`` and read-only copies of the arrays."""
    if not isinstance(weights, dict) or not weights:
        raise UserInputError(f"model '{name}' has no weights to register")
    arrays: dict[str, np.ndarray] = {}
    for key, value in weights.items():
        arr = np.ascontiguousarray(np.asarray(value))
        if not isinstance(key, str) or not key or arr.dtype.kind not in "biuf":
            raise UserInputError(f"weight {key!r} of model '{name}' must be a named numeric array")
        arr = arr.copy()
        arr.flags.writeable = False
        arrays[key] = arr
    try:
        blob = st_save(arrays)
    except Exception as exc:
        raise UserInputError(f"cannot encode the weights of model '{name}': {exc}") from exc
    return blob, arrays

