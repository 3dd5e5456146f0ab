"""A run's objects in the object store: its data set and its checkpoints.

Layout::

    runs/<run_id>/data.npz                          the data, written once by the driver
                                                    (uint8 images + int64 labels, no pickle)
    runs/<run_id>/checkpoints/round-00003.safetensors   params + optimizer state after round 3
    runs/<run_id>/checkpoint.json                   the pointer, written after the file:
        {"round": 3, "epochs_done": 3000, "file": "runs/…/round-00003.safetensors",
         "stop_reason": null, "last_cost": 0.093}
    runs/<run_id>/checkpoints/round-00004-e0003412.safetensors
                                                    an in-round checkpoint a retry of round 4 starts
                                                    from (written by the driver, never named by the
                                                    pointer; pruned with the other files)

A checkpoint is visible only once its pointer names it, so a driver killed while writing one
leaves the previous checkpoint in force. Older checkpoint files are deleted (the last two
kept). Readers in workers cache the data set and the last state per process.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from lambdanet import adapters
from lambdanet.data.dataset import Dataset
from lambdanet.errors import DataError, ObjectNotFound
from lambdanet.ports.objects import ObjectStore

State = dict[str, np.ndarray]
KEEP = 2

_LOCK = threading.Lock()
_LOAD_LOCK = threading.Lock()
_OBJECTS: dict[str, ObjectStore] = {}
_DATA: dict[tuple[str, str], Dataset] = {}
_STATES: dict[tuple[str, str], State] = {}


def data_key(run_id: str) -> str:
    return f"runs/{run_id}/data.npz"


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
def write_data(objects: ObjectStore, run_id: str, ds: Dataset) -> int:
    """Write the data set once as ``runs/<id>/data.npz``; returns its size in bytes."""
    arrays: dict[str, np.ndarray] = {"x_train": ds.x_train, "y_train": ds.y_train}
    if ds.x_test is not None and ds.y_test is not None:
        arrays.update(x_test=ds.x_test, y_test=ds.y_test)
    meta = json.dumps({"classes": list(ds.classes), "source": ds.source}).encode()
    arrays["meta"] = np.frombuffer(meta, dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    blob = buf.getvalue()
    objects.put(data_key(run_id), blob)
    return len(blob)


def read_data(objects: ObjectStore, run_id: str) -> Dataset:
    """The run's data set (cached per process)."""
    cache_key = (objects.url, run_id)
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
            ds = _load_data(objects, run_id)
            with _LOCK:
                _DATA[cache_key] = ds
                while len(_DATA) > 4:
                    _DATA.pop(next(iter(_DATA)))
    return ds


def _load_data(objects: ObjectStore, run_id: str) -> Dataset:
    blob = objects.get(data_key(run_id))
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
        raise DataError(f"{data_key(run_id)} is not a lambdanet run data file ({exc})") from exc
    return ds


# ---- checkpoints ----------------------------------------------------------------------------
def read_pointer(objects: ObjectStore, run_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(objects.get(pointer_key(run_id)))  # type: ignore[no-any-return]
    except ObjectNotFound:
        return None


def write_checkpoint(objects: ObjectStore, run_id: str, round_no: int, epochs_done: int, state: State,
                     **info: Any) -> dict[str, Any]:
    """Write the state file, then the pointer; drop checkpoint files older than the last KEEP."""
    key = checkpoint_key(run_id, round_no)
    objects.put(key, st_save({k: np.ascontiguousarray(v) for k, v in state.items()}))
    pointer = {"round": round_no, "epochs_done": epochs_done, "file": key, **info}
    objects.put(pointer_key(run_id), json.dumps(pointer).encode())
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
