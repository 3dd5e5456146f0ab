"""A run's objects in the object store: its data set and its checkpoints.

Layout::

    datasets/<sha256>.npz                           a data snapshot, stored ONCE per content and
                                                    shared by every run on the same data (uint8
                                                    images + int64 labels + class names, no pickle)
    runs/<run_id>/data.json                         the run's reference to its snapshot, written by
        {"snapshot": "datasets/<sha256>.npz",       the driver before the run's ledger row:
         "sha256": "<sha256>", "bytes": 181…,
         "source": "../shared/datasets/cifar10"}
    runs/<run_id>/checkpoints/round-00003.safetensors   params + optimizer state after round 3
    runs/<run_id>/checkpoint.json                   the pointer (:class:`~lambdanet.engine.messages.CheckpointPointer`),
                                                    written after the file:
        {"round": 3, "epochs_done": 3000, "file": "runs/…/round-00003.safetensors",
         "stop_reason": null, "last_cost": 0.093}
    runs/<run_id>/checkpoints/round-00004-e0003412.safetensors
                                                    an in-round checkpoint a retry of round 4 starts
                                                    from (written by the driver, never named by the
                                                    pointer; pruned with the other files)
    runs/<run_id>/data.npz                          a run's own copy of its data (runs started before
                                                    snapshots; still read)

A snapshot's name is the SHA-256 of its content (every array's name, dtype, shape and bytes, and
the class names), not of its zip bytes (which carry timestamps), so a second run on the same data
writes only its reference. Every adapter's ``put`` is atomic, so a snapshot that exists is
complete. :mod:`lambdanet.engine.retention` (``lambdanet runs delete`` / ``lambdanet gc``)
removes the objects of finished runs and the snapshots no run refers to any more.

A checkpoint is visible only once its pointer names it, so a driver killed while writing one
leaves the previous checkpoint in force. Older checkpoint files are deleted (the last two
kept). Readers in workers cache each data snapshot (by its hash) and the last state per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import re
import threading
from typing import TypeVar

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from lambdanet import adapters
from lambdanet.data.dataset import Dataset
from lambdanet.engine.messages import CheckpointPointer
from lambdanet.errors import DataError, ObjectNotFound
from lambdanet.ports.objects import ObjectStore

State = dict[str, np.ndarray]
KEEP = 2
SNAPSHOTS = "datasets/"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HASH_VERSION = b"lambdanet data snapshot v1\n"  # changes if the canonical form ever does

_V = TypeVar("_V")
_LOCK = threading.Lock()
_LOAD_LOCK = threading.Lock()
_OBJECTS: dict[str, ObjectStore] = {}
_DATA: dict[tuple[str, str], Dataset] = {}  # (store url, snapshot sha256 | legacy key) -> data set
_REFS: dict[tuple[str, str], DataRef | None] = {}  # (store url, run id) -> its reference (None: legacy)
_STATES: dict[tuple[str, str], State] = {}


def data_key(run_id: str) -> str:
    """The run's data reference: it exists once the driver has written the run's data."""
    return f"runs/{run_id}/data.json"


def legacy_data_key(run_id: str) -> str:
    """Where runs started before snapshots kept their own copy of the data."""
    return f"runs/{run_id}/data.npz"


def snapshot_key(sha256: str) -> str:
    return f"{SNAPSHOTS}{sha256}.npz"


def pointer_key(run_id: str) -> str:
    return f"runs/{run_id}/checkpoint.json"


def checkpoint_key(run_id: str, round_no: int) -> str:
    return f"runs/{run_id}/checkpoints/round-{round_no:05d}.safetensors"


def in_round_key(run_id: str, round_no: int, epochs_done: int) -> str:
    """The file of an in-round checkpoint of round ``round_no`` after ``epochs_done`` epochs."""
    return f"runs/{run_id}/checkpoints/round-{round_no:05d}-e{epochs_done:07d}.safetensors"


def open_objects(url: str) -> ObjectStore:
    """One object store client per URL and process."""
    with _LOCK:
        store = _OBJECTS.get(url)
        if store is None:
            store = _OBJECTS[url] = adapters.open_objects(url)
        return store


# ---- the data set ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DataRef:
    """A run's reference to its data snapshot (``runs/<id>/data.json``). ``written``: the bytes
    the call that made it wrote to the snapshot (0 when the snapshot was there already); not stored."""

    snapshot: str
    sha256: str
    size: int  # the snapshot's bytes ("bytes" in the JSON)
    source: str
    written: int = 0

    def to_json(self) -> bytes:
        return json.dumps({"snapshot": self.snapshot, "sha256": self.sha256, "bytes": self.size,
                           "source": self.source}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, key: str) -> DataRef:
        """Parse a reference; anything but a snapshot key under ``datasets/`` named by its hash is
        refused (a reference can never point a run at another object)."""
        try:
            doc = json.loads(raw)
            sha, snapshot, size = str(doc["sha256"]), str(doc["snapshot"]), int(doc["bytes"])
            source = str(doc.get("source", ""))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise DataError(f"{key} is not a lambdanet data reference ({type(exc).__name__}: {exc})") from exc
        if not _SHA256.fullmatch(sha) or snapshot != snapshot_key(sha) or size < 0:
            raise DataError(f"{key} names {snapshot!r} ({sha!r}), not a data snapshot; start a new run")
        return cls(snapshot=snapshot, sha256=sha, size=size, source=source)


def _data_arrays(ds: Dataset) -> dict[str, np.ndarray]:
    """What a snapshot holds: the arrays and the class names (as uint8 JSON); no source path,
    so the same data read from two places is one snapshot."""
    arrays: dict[str, np.ndarray] = {"x_train": ds.x_train, "y_train": ds.y_train}
    if ds.x_test is not None and ds.y_test is not None:
        arrays.update(x_test=ds.x_test, y_test=ds.y_test)
    meta = json.dumps({"classes": list(ds.classes)}, sort_keys=True).encode()
    arrays["meta"] = np.frombuffer(meta, dtype=np.uint8)
    return {name: np.ascontiguousarray(a) for name, a in arrays.items()}


def content_hash(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the canonical content: per array in name order, a JSON header
    ``[name, dtype, shape]`` and the C-order bytes (the dtype string carries the byte order)."""
    digest = hashlib.sha256(_HASH_VERSION)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode() + b"\n")
        digest.update(a.reshape(-1).view(np.uint8).data)  # (nbytes,) a view: no copy
    return digest.hexdigest()


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def write_data(objects: ObjectStore, run_id: str, ds: Dataset) -> DataRef:
    """Store the run's data: its snapshot ``datasets/<sha256>.npz`` unless one with that content
    exists, then the run's reference ``runs/<id>/data.json``. ``.written`` says how many snapshot
    bytes this call wrote (0 for a second run on the same data)."""
    arrays = _data_arrays(ds)
    sha = content_hash(arrays)
    key = snapshot_key(sha)
    size, written = _ensure_snapshot(objects, key, arrays)
    ref = DataRef(snapshot=key, sha256=sha, size=size, source=ds.source)
    objects.put(data_key(run_id), ref.to_json())
    # a `lambdanet gc` that listed the references before ours was written may have removed the
    # snapshot meanwhile: look again now that our reference is there, and write it back if so
    if not written and not objects.exists(key):
        size, written = _ensure_snapshot(objects, key, arrays)
        if size != ref.size:
            objects.put(data_key(run_id), dataclasses.replace(ref, size=size).to_json())
    ref = dataclasses.replace(ref, size=size, written=written)
    with _LOCK:  # this process (the driver) reads the data again at the end: no second download
        _REFS[(objects.url, run_id)] = dataclasses.replace(ref, written=0)
        _remember(_DATA, (objects.url, sha), dataclasses.replace(ds, source=""), 4)
    return ref


def _ensure_snapshot(objects: ObjectStore, key: str, arrays: dict[str, np.ndarray]) -> tuple[int, int]:
    """``(size, bytes written)``: the existing snapshot's size, or the new one's."""
    try:
        return objects.info(key).size, 0
    except ObjectNotFound:
        pass
    blob = _npz(arrays)
    objects.put(key, blob)  # atomic on every adapter: a snapshot that exists is whole
    return len(blob), len(blob)


def read_data_ref(objects: ObjectStore, run_id: str) -> DataRef | None:
    """The run's data reference (cached per process: it never changes once the run exists); None
    for a run with its own ``data.npz`` (started before snapshots). ObjectNotFound if neither."""
    cache_key = (objects.url, run_id)
    with _LOCK:
        if cache_key in _REFS:
            return _REFS[cache_key]
    key = data_key(run_id)
    try:
        ref: DataRef | None = DataRef.from_json(objects.get(key), key)
    except ObjectNotFound:
        if not objects.exists(legacy_data_key(run_id)):
            raise
        ref = None
    with _LOCK:
        _remember(_REFS, cache_key, ref, 1024)
    return ref


def read_data(objects: ObjectStore, run_id: str) -> Dataset:
    """The run's data set (each snapshot loaded once per process, by its hash)."""
    ref = read_data_ref(objects, run_id)
    if ref is None:
        return _cached_load(objects, legacy_data_key(run_id), legacy_data_key(run_id), None)
    ds = _cached_load(objects, ref.sha256, ref.snapshot, ref.size)
    return ds if ds.source == ref.source else dataclasses.replace(ds, source=ref.source)


def _cached_load(objects: ObjectStore, cache_id: str, key: str, size: int | None) -> Dataset:
    """``key`` loaded once per process and ``cache_id`` (a snapshot's hash, a legacy run's key)."""
    cache_key = (objects.url, cache_id)
    with _LOCK:
        ds = _DATA.get(cache_key)
    if ds is not None:
        return ds
    # one loader at a time: np.load parses .npy headers with ast.literal_eval, which CPython 3.11
    # cannot run in two threads at once ("AST constructor recursion depth mismatch")
    with _LOAD_LOCK:
        with _LOCK:
            ds = _DATA.get(cache_key)
        if ds is None:
            ds = _load_npz(objects, key, size)
            with _LOCK:
                _remember(_DATA, cache_key, ds, 4)
    return ds


def _load_npz(objects: ObjectStore, key: str, size: int | None) -> Dataset:
    blob = objects.get(key)
    if size is not None and len(blob) != size:
        raise DataError(f"data snapshot {key} has {len(blob)} bytes, its runs' references say {size}: "
                        f"it is damaged; delete it and start the run again")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            has_test = "x_test" in z.files
            ds = Dataset(
                x_train=z["x_train"], y_train=z["y_train"],
                x_test=z["x_test"] if has_test else None, y_test=z["y_test"] if has_test else None,
                classes=list(meta["classes"]), source=str(meta.get("source", "")),
            )
    except (ValueError, KeyError, OSError) as exc:
        raise DataError(f"{key} is not a lambdanet run data file ({exc})") from exc
    return ds


def _remember(cache: dict[tuple[str, str], _V], key: tuple[str, str], value: _V, most: int) -> None:
    """Put ``value`` in ``cache`` (caller holds _LOCK), dropping the oldest entries beyond ``most``."""
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > most:
        cache.pop(next(iter(cache)))


# ---- checkpoints ----------------------------------------------------------------------------
def read_pointer(objects: ObjectStore, run_id: str) -> CheckpointPointer | None:
    key = pointer_key(run_id)
    try:
        raw = objects.get(key)
    except ObjectNotFound:
        return None
    try:
        return CheckpointPointer.from_json(json.loads(raw))
    except ValueError as exc:  # pydantic's ValidationError is one
        raise DataError(f"{key} is not a checkpoint pointer ({exc})") from None


def write_checkpoint(objects: ObjectStore, run_id: str, round_no: int, epochs_done: int, state: State, *,
                     stop_reason: str | None = None, last_cost: float | None = None) -> CheckpointPointer:
    """Write the state file, then the pointer; drop checkpoint files older than the last KEEP."""
    key = checkpoint_key(run_id, round_no)
    objects.put(key, st_save({k: np.ascontiguousarray(v) for k, v in state.items()}))
    pointer = CheckpointPointer(round=round_no, epochs_done=epochs_done, file=key, stop_reason=stop_reason,
                                last_cost=last_cost)
    objects.put(pointer_key(run_id), json.dumps(pointer.to_json()).encode())  # NaN stays NaN: a diverged cost
    with _LOCK:
        _STATES[(objects.url, key)] = state
    files = sorted(objects.list(f"runs/{run_id}/checkpoints/"))
    for old in files[:-KEEP]:
        with contextlib.suppress(ObjectNotFound):
            objects.delete(old)
    return pointer


def write_state(objects: ObjectStore, key: str, state: State) -> str:
    """Write ``state`` as the checkpoint file ``key`` WITHOUT moving the run's pointer (an in-round
    checkpoint a retry starts from); returns ``key``."""
    objects.put(key, st_save({k: np.ascontiguousarray(v) for k, v in state.items()}))
    with _LOCK:
        _STATES[(objects.url, key)] = state
    return key


def read_state(objects: ObjectStore, key: str) -> State:
    """The state in checkpoint file ``key`` (cached per process; treat it as read-only)."""
    cache_key = (objects.url, key)
    with _LOCK:
        state = _STATES.get(cache_key)
    if state is not None:
        return state
    try:
        loaded = st_load(objects.get(key))
        state = {k: loaded[k] for k in sorted(loaded)}  # a stable order in every process
    except ObjectNotFound:
        raise
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise DataError(f"checkpoint {key} cannot be read ({type(exc).__name__}: {exc})") from exc
    with _LOCK:
        _STATES[cache_key] = state
        while len(_STATES) > 4:
            _STATES.pop(next(iter(_STATES)))
    return state
