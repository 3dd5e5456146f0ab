"""Clean-up of the object store: the objects of finished runs and the data snapshots no run uses.

Usage::

    plan = retention.plan_delete(services, "r-20261125-0930-ab12cd")   # one finished run
    plan = retention.plan_gc(services)                                  # every finished run
    plan.removals, plan.bytes                                           # what would go (a dry run)
    done = retention.apply(services.objects, plan)                      # remove it; what went

What goes: every object under ``runs/<id>/`` of a *finished* run (status ``completed``,
``failed`` or ``interrupted``): its data reference, its checkpoints (the pointer, the round files
and the in-round checkpoint files ``round-NNNNN-eNNNNNNN.safetensors``; the tensor store's
in-round keys are dropped by the round itself), a ``data.npz`` of a run started before snapshots;
then every ``datasets/<sha256>.npz`` snapshot that no remaining ``runs/<id>/data.json`` names.
What never goes: a ``running`` or ``pending`` run's objects (refused with a :class:`UserInputError`), registered
model versions (``models/…``: a version is a copy of the weights, independent of its run), the
ledger's rows (a run's record, epochs and calls stay: ``runs list``, ``report`` and a model's
lineage ``run_id`` keep working; the run can no longer be resumed).

Run folders the ledger has no row for (a driver killed between writing a run's objects and its
ledger row, the commit point) go only when asked (``orphans=True``) and once their newest object
is older than :data:`ORPHAN_GRACE_S` (a driver may be starting that run right now).

Snapshots are removed last, after the references are listed again: a run that started on the
same data meanwhile keeps its snapshot (and the driver looks again after writing its reference;
see :func:`lambdanet.engine.checkpoints.write_data`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from lambdanet.engine import checkpoints
from lambdanet.errors import DataError, ObjectNotFound, PortMisuse, RunNotFound, UserInputError
from lambdanet.ports.ledger import Ledger
from lambdanet.ports.objects import ObjectStore
from lambdanet.services import Services

FINISHED = ("completed", "failed", "interrupted")
ORPHAN_GRACE_S = 3600.0
_REMOVABLE = ("runs/", checkpoints.SNAPSHOTS)  # the only prefixes a plan may ever touch


@dataclass(frozen=True)
class Removal:
    key: str
    bytes: int
    what: str  # "run" | "orphan" | "snapshot"
    run_id: str | None = None  # the run the object belongs to (None for a snapshot)


@dataclass
class Plan:
    """What a clean-up removes (or removed): objects, by run and snapshot."""

    removals: list[Removal] = field(default_factory=list)
    runs: dict[str, str] = field(default_factory=dict)  # run id -> its status ("orphan": no row)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removals)

    def snapshots(self) -> list[Removal]:
        return [r for r in self.removals if r.what == "snapshot"]

    def to_json(self) -> dict[str, object]:
        return {"runs": dict(self.runs), "objects": len(self.removals), "bytes": self.bytes,
                "removed": [{"key": r.key, "bytes": r.bytes, "what": r.what, "run_id": r.run_id}
                            for r in self.removals]}


def _run_folders(objects: ObjectStore) -> dict[str, dict[str, int]]:
    """run id -> {key: size} of every object under ``runs/``, from one listing."""
    folders: dict[str, dict[str, int]] = {}
    for key, size in objects.list_sizes("runs/").items():
        parts = key.split("/")
        if len(parts) >= 3:
            folders.setdefault(parts[1], {})[key] = size
    return folders


def _status(ledger: Ledger, run_id: str) -> str | None:
    try:
        return ledger.get_run(run_id).status
    except RunNotFound:
        return None


def _referenced(objects: ObjectStore, ref_keys: Iterable[str]) -> set[str]:
    """The snapshot keys the data references ``ref_keys`` name (unreadable ones name none)."""
    names: set[str] = set()
    for key in ref_keys:
        try:
            names.add(checkpoints.DataRef.from_json(objects.get(key), key).snapshot)
        except (ObjectNotFound, DataError):
            continue
    return names


def _add_run(plan: Plan, run_id: str, status: str, keys: dict[str, int], what: str) -> None:
    plan.runs[run_id] = status
    # the reference last: a clean-up cut short leaves the run's data named, so a second one finds it
    ordered = sorted(keys, key=lambda k: (k == checkpoints.data_key(run_id), k))
    plan.removals.extend(Removal(k, keys[k], what, run_id) for k in ordered)


def _add_snapshots(plan: Plan, objects: ObjectStore, folders: dict[str, dict[str, int]]) -> None:
    """Every snapshot no run outside the plan refers to."""
    kept_refs = [checkpoints.data_key(r) for r, keys in folders.items()
                 if r not in plan.runs and checkpoints.data_key(r) in keys]
    used = _referenced(objects, kept_refs)
    for key, size in objects.list_sizes(checkpoints.SNAPSHOTS).items():
        if key not in used:
            plan.removals.append(Removal(key, size, "snapshot"))


def plan_delete(services: Services, run_id: str) -> Plan:
    """The objects ``lambdanet runs delete RUN`` removes: the run's own and the snapshots only it
    used. RunNotFound for an unknown run, UserInputError for one that is not finished."""
    status = services.ledger.get_run(run_id).status
    if status not in FINISHED:
        raise UserInputError(f"run {run_id} is {status}: its objects are in use; wait for it to end or stop "
                        f"it (a run whose driver died is resumed with `lambdanet resume {run_id}`), then "
                        f"delete it")
    folders = _run_folders(services.objects)
    plan = Plan()
    _add_run(plan, run_id, status, folders.get(run_id, {}), "run")
    _add_snapshots(plan, services.objects, folders)
    # only the snapshots this run used: an unreferenced one from elsewhere is `lambdanet gc`'s call
    mine = _referenced(services.objects, [k for k in folders.get(run_id, {}) if k == checkpoints.data_key(run_id)])
    plan.removals = [r for r in plan.removals if r.what != "snapshot" or r.key in mine]
    return plan


def plan_gc(services: Services, statuses: Iterable[str] = FINISHED, *, orphans: bool = False,
            now: float | None = None) -> Plan:
    """The objects ``lambdanet gc`` removes: those of every run whose status is in ``statuses``
    (finished ones only), of orphan run folders if ``orphans``, and every unreferenced snapshot."""
    wanted = set(statuses)
    if not wanted <= set(FINISHED):
        raise UserInputError(f"gc removes finished runs only ({', '.join(FINISHED)}); "
                             f"not {', '.join(sorted(wanted - set(FINISHED)))}")
    objects, now = services.objects, time.time() if now is None else now
    folders = _run_folders(objects)
    plan = Plan()
    for run_id in sorted(folders):
        status = _status(services.ledger, run_id)
        if status is None:
            if orphans and _newest(objects, folders[run_id]) < now - ORPHAN_GRACE_S:
                _add_run(plan, run_id, "orphan", folders[run_id], "orphan")
        elif status in wanted:
            _add_run(plan, run_id, status, folders[run_id], "run")
    _add_snapshots(plan, objects, folders)
    return plan


def _newest(objects: ObjectStore, keys: dict[str, int]) -> float:
    newest = 0.0
    for key in keys:
        try:
            newest = max(newest, objects.info(key).modified)
        except ObjectNotFound:
            continue
    return newest


def apply(objects: ObjectStore, plan: Plan) -> Plan:
    """Remove what ``plan`` lists; return what was removed. Snapshots go last, and only those
    that no reference names after the runs' objects are gone (references listed again)."""
    done = Plan(runs=dict(plan.runs))
    for removal in plan.removals:
        if not removal.key.startswith(_REMOVABLE):
            raise PortMisuse(f"a clean-up plan may only remove runs/… and datasets/… keys, not {removal.key}")
    for removal in plan.removals:
        if removal.what != "snapshot":
            objects.delete(removal.key)
            done.removals.append(removal)
    snapshots = plan.snapshots()
    if snapshots:
        refs = [k for k in objects.list("runs/") if k.endswith("/data.json")]
        used = _referenced(objects, refs)
        for removal in snapshots:
            if removal.key not in used:
                objects.delete(removal.key)
                done.removals.append(removal)
    return done
