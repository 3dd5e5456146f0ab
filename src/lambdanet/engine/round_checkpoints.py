"""In-round checkpoints: the workers' state every ``checkpoint_seconds`` inside a round, in the
tensor store, so a failed attempt is retried from its last in-round checkpoint instead of the
round's first epoch.

Keys (``e`` = the absolute number of epochs done, ``a`` = the attempt id)::

    ln:{run}:{round}:ckpt:a{a}:e{e}:w{k}:blob    worker k's shard, one uint8 array (raw bytes of
                                                  every array, back to back)
    ln:{run}:{round}:ckpt:a{a}:e{e}:w{k}:meta    JSON: {"manifest": [[name, dtype, shape], …]}
                                                  plus, worker 0, {"start_epoch", "epochs",
                                                  "costs", "seconds", "extras"} of the attempt so far
    ln:{run}:{round}:ckpt:a{a}:e{e}:n            completion counter (INCR by every worker)
    ln:{run}:{round}:ckpt:latest                 [a, e] of the newest COMPLETE checkpoint

The worker whose INCR returns K moves ``latest`` and deletes the previous complete checkpoint,
so the store holds one complete checkpoint per round (plus the one being written). The keys are
outside the attempt prefix ``ln:{run}:{round}:{attempt}:`` (the attempt cleanup leaves them) and
:func:`lambdanet.engine.rounds.run_round` deletes them when the round ends. No pickle: arrays go
through the store's ``put``/``get``, lists as JSON.

The decision to checkpoint is collective (:meth:`RoundContext.decide
<lambdanet.engine.strategies.base.RoundContext.decide>`): every worker writes the checkpoint of
the same epoch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lambdanet.engine.messages import Extras
from lambdanet.ports.tensorstore import TensorStore

State = dict[str, np.ndarray]


def root(run_id: str, round_no: int) -> str:
    return f"ln:{run_id}:{round_no}:ckpt"


def latest_key(run_id: str, round_no: int) -> str:
    return f"{root(run_id, round_no)}:latest"


def prefix(run_id: str, round_no: int, attempt: int, epochs: int) -> str:
    return f"{root(run_id, round_no)}:a{attempt}:e{epochs}"


def pack(state: State) -> tuple[np.ndarray, list[list[Any]]]:
    """``state`` as ONE uint8 array (every array's bytes, C order, in sorted key order) and its
    manifest ``[[name, dtype, shape], …]`` — one store round trip per worker and checkpoint."""
    manifest: list[list[Any]] = []
    parts: list[np.ndarray] = []
    for name in sorted(state):
        a = np.asarray(state[name])
        if not a.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
            a = a.copy(order="C")
        manifest.append([name, a.dtype.str, list(a.shape)])
        parts.append(a.reshape(-1).view(np.uint8))
    blob = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return blob, manifest


def unpack(blob: np.ndarray, manifest: list[list[Any]]) -> State:
    raw = np.ascontiguousarray(blob).view(np.uint8).reshape(-1)
    out: State = {}
    pos = 0
    for name, dtype, shape in manifest:
        dt = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        out[name] = raw[pos:pos + n].view(dt).reshape(tuple(shape)).copy()
        pos += n
    if pos != raw.size:
        raise ValueError(f"in-round checkpoint blob has {raw.size} bytes, its manifest {pos}")
    return out


def write(store: TensorStore, run_id: str, round_no: int, attempt: int, worker: int, workers: int,
          epochs: int, shard: State, info: Extras | None = None) -> bool:
    """Write worker ``worker``'s part of the checkpoint after ``epochs`` epochs; True when this
    call completed it (the K-th part), which then became the round's newest checkpoint."""
    p = prefix(run_id, round_no, attempt, epochs)
    blob, manifest = pack(shard)
    store.put(f"{p}:w{worker}:blob", blob)
    store.set_if_absent(f"{p}:w{worker}:meta", json.dumps({"manifest": manifest, **(info or {})}).encode())
    if store.incr(f"{p}:n") != workers:
        return False
    key = latest_key(run_id, round_no)
    try:
        old = [int(v) for v in store.get(key)]
    except KeyError:
        old = None
    if old is not None and old[1] > epochs:  # a late writer of an older attempt: keep the newer one
        return True
    store.put(key, np.array([attempt, epochs], dtype=np.int64))
    if old is not None and old != [attempt, epochs]:
        store.delete_prefix(prefix(run_id, round_no, old[0], old[1]) + ":")
    return True


@dataclass
class InRoundCheckpoint:
    """The newest complete in-round checkpoint of a round, as the driver reads it."""

    attempt: int
    epochs: int  # absolute epochs done
    shards: list[State]  # worker order
    start_epoch: int  # where the attempt that wrote it started
    costs: list[float] = field(default_factory=list)  # epochs start_epoch … epochs-1
    seconds: list[float] = field(default_factory=list)
    extras: list[Extras] = field(default_factory=list)


def read_latest(store: TensorStore, run_id: str, round_no: int, workers: int) -> InRoundCheckpoint | None:
    """The newest complete in-round checkpoint of the round, or None."""
    try:
        attempt, epochs = (int(v) for v in store.get(latest_key(run_id, round_no)))
    except KeyError:
        return None
    p = prefix(run_id, round_no, attempt, epochs)
    metas: list[Any] = []  # JSON: {"manifest", …}
    for k in range(workers):
        raw = store.get_bytes(f"{p}:w{k}:meta")
        if raw is None:
            return None
        metas.append(json.loads(raw))
    blobs = store.get_many([f"{p}:w{k}:blob" for k in range(workers)])
    shards = [unpack(b, m["manifest"]) for b, m in zip(blobs, metas, strict=True)]
    info = metas[0]
    return InRoundCheckpoint(
        attempt=attempt, epochs=epochs, shards=shards, start_epoch=int(info["start_epoch"]),
        costs=[float(c) for c in info.get("costs", [])], seconds=[float(s) for s in info.get("seconds", [])],
        extras=list(info.get("extras") or []),
    )


def delete_round(store: TensorStore, run_id: str, round_no: int) -> int:
    """Drop every in-round checkpoint of the round (the round ended)."""
    return store.delete_prefix(root(run_id, round_no) + ":")
