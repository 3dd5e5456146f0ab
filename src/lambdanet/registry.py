"""The model registry: numbered, immutable versions of named models and movable aliases.

Usage::

    registry = ModelRegistry(adapters.open_objects("/home/me/.lambdanet/objects"))
    mv = registry.register("itsacat", {"W1": W1, "b1": b1, …}, {"kind": "mlp", …})   # -> version 1, 2, …
    registry.set_alias("itsacat", "staging", mv.version)
    registry.promote("itsacat", "staging", "production")      # blue/green: production -> staging's version
    registry.rollback("itsacat", "production")                # undo the alias's last move
    registry.load("itsacat")            # production alias, else the newest trained version (not a tune trial)
    registry.load("itsacat:3"); registry.load("itsacat@staging")
    registry.export_itsacat_h5("itsacat:3", Path("params.h5"))

Layout on any :class:`ObjectStore`::

    models/<name>/versions/<n>/claim.json            the version number is taken (written first)
    models/<name>/versions/<n>/weights.safetensors   safetensors.numpy bytes (never pickle)
    models/<name>/versions/<n>/model.json            metadata, written LAST: the version is visible
    models/<name>/aliases.json                       {"aliases": {"production": 2}, "history": […]}

**Racing registrations.** A version number is claimed by creating ``claim.json`` only if it is
absent with the object store's ``put_if_absent(key, data) -> bool`` (the folder store: a complete
temporary file hard-linked into place, which fails if the key exists; S3: a conditional
``If-None-Match: *`` put), exact across threads, processes and machines: the loser sees
``False`` and tries the next number. A writer that
dies after claiming leaves a gap in the numbering, never a half-visible version.

**Metadata** is parsed ONCE, here: :class:`ModelMetadata` (a frozen pydantic model) checks the
types of model.json's fields when a version is registered (a bad one is refused,
:class:`~lambdanet.errors.UserInputError`, and never written) and when it is loaded. A stored
version whose model.json is not JSON or fails the check — or whose weights are missing or
unreadable — raises :class:`~lambdanet.errors.ModelCorrupt` (HTTP 500, exit 3), never
:class:`~lambdanet.errors.ModelNotFound` (404: no such model, version or alias).
``ModelVersion.meta`` is the typed metadata, ``ModelVersion.metadata`` the raw JSON object.

**What a bare NAME means** (:meth:`ModelRegistry.default_version`): the ``production`` alias when it
exists; else the newest version that is not a ``lambdanet tune`` trial (a trial's run marks its
version with :data:`TRIAL_KEY` in model.json); else, when every version is a trial, the ``staging``
alias (the study's best). ``NAME@latest`` is the newest version whatever registered it.

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
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from lambdanet.errors import LambdanetError, ModelCorrupt, ModelNotFound, ObjectNotFound, UserInputError
from lambdanet.ports.objects import ObjectStore

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
RESERVED_ALIASES = frozenset({"latest"})
TRIAL_KEY = "tune_trial"  # model.json of a tune trial's version: {"study": NAME, "trial": N}; never a bare default
HISTORY_LIMIT = 100


def _class_name(value: Any) -> Any:
    """Class names are strings; numbers (``0``, ``1``) are accepted and written as ``"0"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")


FIT: Literal["center_crop"] = "center_crop"  # lambdanet.data.images' resize policy (the registry imports no Pillow)


class Preprocessing(_Frozen):
    """How a photo becomes the network's input: decoded (EXIF orientation, RGB), fitted to
    ``input_shape`` by the resize policy ``fit`` with the ``resize`` filter, then ``x / scale``,
    ``- mean``, ``/ std`` per channel.

    ``fit`` is the policy of :mod:`lambdanet.data.images`: ``center_crop`` (scale to cover the
    input size keeping the aspect ratio, cut out the centre — what training on an image folder
    does). :meth:`ModelRegistry.register` writes it into every new model.json; a model.json
    without it (registered before it existed) is served the same way; any other value is refused
    (the version is corrupt for this lambdanet: it would be served with a policy it was not
    trained with)."""

    resize: str = "bilinear"
    fit: Literal["center_crop"] = FIT
    scale: Annotated[float, Field(gt=0)] = 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @field_validator("scale", mode="before")
    @classmethod
    def _scale_default(cls, value: Any) -> Any:
        return 255.0 if value is None else value


class Architecture(_Frozen):
    """An MLP's ``layer_dims`` (n_x, n_1, …, n_L) and ``activations`` (one per layer), or a CNN's
    ``model`` (a :mod:`lambdanet.torchnet.models` name)."""

    layer_dims: tuple[Annotated[int, Field(gt=0)], ...] | None = None
    activations: tuple[str, ...] | None = None
    model: str | None = None


class ModelMetadata(_Frozen):
    """model.json, typed. Only ``kind`` is required; every other field is checked when present
    (what a kind needs — an MLP's layer_dims, a CNN's architecture.model — the predictors check).

    Written by the engine (``engine/strategies/mlp_common.finish``), ``torchnet.export
    .model_metadata`` and the registry itself (``name``, ``version``, ``created_at``).
    """

    kind: Literal["mlp", "cnn"]
    name: str | None = None
    version: Annotated[int, Field(ge=1)] | None = None
    classes: tuple[Annotated[str, BeforeValidator(_class_name)], ...] = ()
    input_shape: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)],
                       Annotated[int, Field(gt=0)]] | None = None  # (H, W, C)
    dtype: str = "float32"
    preprocessing: Preprocessing = Preprocessing()
    architecture: Architecture = Architecture()
    metrics: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    created_at: float | None = None

    @field_validator("dtype")
    @classmethod
    def _float_dtype(cls, value: str) -> str:
        try:
            ok = np.dtype(value).kind == "f"
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"must be a float dtype such as float32 or float64, got {value!r}")
        return value

    @field_validator("input_shape", mode="before")
    @classmethod
    def _three_dims(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) != 3:
            raise ValueError(f"must be [H, W, C] (3 positive integers), got {len(value)} values")
        return value

    @field_validator("preprocessing", "architecture", "metrics", "config", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any) -> Any:
        return {} if value is None else value

    @classmethod
    def check(cls, raw: Any) -> ModelMetadata:
        """Parse ``raw`` (a JSON object); :class:`ValueError` with one line naming each bad field."""
        if not isinstance(raw, dict):
            raise ValueError(f"model.json must hold a JSON object, not {type(raw).__name__}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ValueError(_validation_line(exc)) from None

    @classmethod
    def parse(cls, raw: Any, ref: str) -> ModelMetadata:
        """Parse the stored metadata of version ``ref``; :class:`ModelCorrupt` if it is invalid."""
        try:
            return cls.check(raw)
        except ValueError as exc:
            raise ModelCorrupt(f"model {ref} is corrupt: model.json: {exc}; {_fix(ref)}") from None


def _fix(ref: str) -> str:
    name, _, version = ref.partition(":")
    return f"register it again (lambdanet train) or delete models/{name}/versions/{version}/"


def _validation_line(exc: ValidationError) -> str:
    """``kind: Field required; input_shape: …`` — every problem, one line."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "model.json"
        text = f"{where}: {err['msg'].removeprefix('Value error, ')}"
        if err["type"] not in ("missing", "value_error") and "input" in err:
            got = repr(err["input"])
            text += f" (got {got[:60] + '…' if len(got) > 60 else got})"
        parts.append(text)
    return "; ".join(parts)


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its metadata (model.json) and weights (read-only arrays).

    ``metadata`` is the raw JSON object (each caller gets its own copy); ``meta`` the same parsed
    once into a frozen :class:`ModelMetadata` (parsed here if not given; :class:`ModelCorrupt`
    if invalid).
    """

    name: str
    version: int
    metadata: dict[str, Any]
    weights: dict[str, np.ndarray]
    meta: ModelMetadata = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.meta is None:
            object.__setattr__(self, "meta", ModelMetadata.parse(self.metadata, self.ref))

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
        self._trials: dict[tuple[str, int], bool] = {}  # (name, version) -> a tune trial's (versions are immutable)

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
        if meta.get("preprocessing") is None:
            meta["preprocessing"] = {}
        if isinstance(meta["preprocessing"], dict):  # the policy it was trained with, recorded
            meta["preprocessing"].setdefault("fit", FIT)
        meta.setdefault("created_at", time.time())
        meta.pop("version", None)
        try:
            meta = json.loads(_dumps(meta))  # exactly what model.json will hold
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"model metadata for '{name}' is not JSON-serialisable: {exc}") from exc
        try:
            ModelMetadata.check(meta)
        except ValueError as exc:
            raise UserInputError(f"model metadata for '{name}': {exc}") from None

        version = self._claim_next(name)
        meta["version"] = version
        typed = ModelMetadata.parse(meta, f"{name}:{version}")
        self.objects.put(self._vkey(name, version, "weights.safetensors"), blob)
        self.objects.put(self._vkey(name, version, "model.json"), _dumps(meta))  # last: now visible
        mv = ModelVersion(name, version, meta, arrays, typed)
        self._remember(mv)
        return self._copy(mv)

    def _claim_next(self, name: str) -> int:
        claimed = self._version_numbers(name, visible_only=False)
        candidate = (claimed[-1] if claimed else 0) + 1
        for _ in range(10_000):
            key = self._vkey(name, candidate, "claim.json")
            token = _dumps({"token": uuid.uuid4().hex, "pid": os.getpid(), "at": time.time()})
            if self.objects.put_if_absent(key, token):
                return candidate
            candidate += 1
        raise LambdanetError(f"could not claim a version number for model '{name}'")

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
        return name, self.default_version(name)[0]

    def default_version(self, name: str) -> tuple[int, str]:
        """The version a bare ``name`` means and why (see the module docstring): ``(3, "production
        alias")``, ``(5, "newest version not from a tune trial")`` or ``(2, "staging alias: every
        version is a tune trial")``; ModelNotFound when there is none."""
        aliases = self.aliases(check_name(name))
        production = aliases.get("production")
        if production is not None and self.objects.exists(self._vkey(name, production, "model.json")):
            return production, "production alias"
        versions = self.versions(name)
        for version in reversed(versions):
            if not self._is_trial(name, version):
                return version, "newest version not from a tune trial"
        staging = aliases.get("staging")
        if staging is not None and staging in versions:
            return staging, "staging alias: every version is a tune trial"
        if versions:
            raise ModelNotFound(f"{self.describe(name)}; every version is a tune trial and none is staged yet: "
                                f"name one ({name}:{versions[-1]}, {name}@latest)")
        raise ModelNotFound(self.describe(name))

    def _is_trial(self, name: str, version: int) -> bool:
        key = (name, version)
        with self._lock:
            known = self._trials.get(key)
        if known is None:
            try:
                known = isinstance(self.metadata(name, version).get(TRIAL_KEY), dict)
            except ModelNotFound:
                return True  # gone meanwhile: not a default
            except ModelCorrupt:
                return False  # unreadable: it stays the default, and loading it says what is wrong
            with self._lock:
                self._trials[key] = known
        return known

    def _latest(self, name: str) -> int:
        versions = self.versions(name)
        if not versions:
            raise ModelNotFound(self.describe(name))
        return versions[-1]

    def metadata(self, name: str, version: int) -> dict[str, Any]:
        """The raw model.json of ``name:version`` (checked: :class:`ModelCorrupt` if invalid)."""
        check_name(name)
        with self._lock:
            cached = self._cache.get((name, int(version)))
        if cached is not None:
            return copy.deepcopy(cached.metadata)
        return self._read_metadata(name, int(version))[0]

    def _read_metadata(self, name: str, version: int) -> tuple[dict[str, Any], ModelMetadata]:
        """model.json of a visible version, raw and parsed; ModelNotFound if there is none,
        ModelCorrupt if it is not JSON or fails :class:`ModelMetadata`."""
        try:
            raw = self.objects.get(self._vkey(name, version, "model.json"))
        except ObjectNotFound as exc:
            raise ModelNotFound(f"{self.describe(name)}; no version {version}") from exc
        ref = f"{name}:{version}"
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            raise ModelCorrupt(f"model {ref} is corrupt: model.json is not valid JSON ({exc}); {_fix(ref)}") from None
        return meta, ModelMetadata.parse(meta, ref)

    def load(self, ref: str) -> ModelVersion:
        """The version ``ref`` names (see :meth:`resolve`), weights as read-only arrays."""
        name, version = self.resolve(ref)
        with self._lock:
            cached = self._cache.get((name, version))
            if cached is not None:
                self._cache.move_to_end((name, version))
                return self._copy(cached)
        meta, typed = self._read_metadata(name, version)
        try:
            blob = self.objects.get(self._vkey(name, version, "weights.safetensors"))
            arrays = st_load(blob)
        except ObjectNotFound:
            raise ModelCorrupt(f"model {name}:{version} is corrupt: its weights.safetensors is missing; "
                               f"{_fix(f'{name}:{version}')}") from None
        except Exception as exc:  # safetensors raises its own error types
            if isinstance(exc, LambdanetError):
                raise
            raise ModelCorrupt(f"model {name}:{version} is corrupt: unreadable weights ({exc}); {_fix(ref)}") from None
        for arr in arrays.values():
            arr.flags.writeable = False
        mv = ModelVersion(name, version, meta, arrays, typed)
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
        return ModelVersion(mv.name, mv.version, copy.deepcopy(mv.metadata), dict(mv.weights), mv.meta)

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
        kind = mv.meta.kind
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

