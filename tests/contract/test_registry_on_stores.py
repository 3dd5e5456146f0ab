"""The model registry on every ObjectStore adapter (folder, and whatever factories_*.py add, e.g. S3)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lambdanet.errors import ModelNotFound
from lambdanet.ports import ObjectStore
from lambdanet.registry import ModelRegistry
from tests.unit.test_registry import flip_between_two_of_three, flip_transitions


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"W1": rng.standard_normal((4, 6)).astype(np.float32), "b1": np.zeros((4, 1), np.float32),
            "W2": rng.standard_normal((1, 4)).astype(np.float32), "b2": np.full((1, 1), -0.5, np.float32)}


def test_versions_aliases_and_bit_exact_load(objects: ObjectStore) -> None:
    reg = ModelRegistry(objects)
    w1, w2 = _weights(1), _weights(2)
    assert reg.register("itsacat", w1, {"kind": "mlp", "run_id": "r-1"}).version == 1
    assert reg.register("itsacat", w2, {"kind": "mlp", "run_id": "r-2"}).version == 2
    reg.set_alias("itsacat", "staging", 2)
    reg.set_alias("itsacat", "production", 1)
    assert reg.promote("itsacat") == 2
    fresh = ModelRegistry(objects)  # nothing cached
    mv = fresh.load("itsacat")
    assert (mv.version, mv.metadata["run_id"]) == (2, "r-2")
    for key, arr in w2.items():
        assert mv.weights[key].tobytes() == arr.tobytes()
    assert fresh.rollback("itsacat") == 1
    assert ModelRegistry(objects).resolve("itsacat") == ("itsacat", 1)
    assert fresh.models() == ["itsacat"]
    with pytest.raises(ModelNotFound, match="versions 1, 2 and aliases production→1, staging→2"):
        fresh.load("itsacat:3")


def test_racing_registrations_get_distinct_versions(objects: ObjectStore) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def register(i: int) -> None:
        mv = ModelRegistry(objects).register("race", _weights(i), {"kind": "mlp", "run_id": f"r-{i}"})
        with lock:
            got.append(mv.version)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [1, 2, 3, 4]
    reg = ModelRegistry(objects)
    assert {reg.metadata("race", v)["run_id"] for v in got} == {f"r-{i}" for i in range(4)}


def test_alias_flip_never_shows_a_third_version(objects: ObjectStore) -> None:
    """On every store: while ``production`` flips between versions 1 and 2 of three, a reader of
    the bare name (which means the newest version, 3, when no production alias exists) reads
    every state the flips leave and sees only 1 and 2."""
    seen, errors = flip_between_two_of_three(objects, flips=6)
    assert errors == [] and set(seen) == {1, 2}, (errors, sorted(set(seen)))
    assert flip_transitions(seen, 6) == [2, 1, 2, 1, 2, 1]
