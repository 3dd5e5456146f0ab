"""The model registry on the folder store: versions, resolve forms, aliases, races, export."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from lambdanet.errors import ModelNotFound, UserInputError
from lambdanet.objects.folder import FolderStore
from lambdanet.registry import ModelRegistry, ModelVersion


def _weights(seed: int = 0, dims: tuple[int, ...] = (12, 5, 3, 1), dtype: str = "float32") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i in range(1, len(dims)):
        out[f"W{i}"] = rng.standard_normal((dims[i], dims[i - 1])).astype(dtype)  # (n_i, n_{i-1})
        out[f"b{i}"] = rng.standard_normal((dims[i], 1)).astype(dtype)  # (n_i, 1)
    return out


def _meta(**kw: Any) -> dict[str, Any]:
    meta = {"kind": "mlp", "classes": ["non-cat", "cat"], "input_shape": [2, 2, 3], "dtype": "float32",
            "architecture": {"layer_dims": [12, 5, 3, 1], "activations": ["relu", "relu", "sigmoid"]},
            "metrics": {"test_accuracy": 0.8}, "run_id": "r-1"}
    meta.update(kw)
    return meta


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "objects"


@pytest.fixture
def reg(root: Path) -> ModelRegistry:
    return ModelRegistry(FolderStore(root))


def test_register_numbers_versions_and_writes_the_layout(reg: ModelRegistry, root: Path) -> None:
    v1 = reg.register("itsacat", _weights(1), _meta())
    v2 = reg.register("itsacat", _weights(2), _meta(run_id="r-2"))
    assert (v1.version, v2.version) == (1, 2)
    assert (v1.ref, v2.ref) == ("itsacat:1", "itsacat:2")
    assert reg.versions("itsacat") == [1, 2]
    assert reg.models() == ["itsacat"]
    assert reg.versions("other") == []
    meta = json.loads((root / "models/itsacat/versions/2/model.json").read_text())
    assert (meta["name"], meta["version"], meta["run_id"]) == ("itsacat", 2, "r-2")
    assert (root / "models/itsacat/versions/2/weights.safetensors").is_file()
    assert reg.metadata("itsacat", 1)["run_id"] == "r-1"


def test_load_round_trips_weights_bit_exactly(root: Path) -> None:
    weights = _weights(3, dtype="float64")
    weights["W1"][0, :4] = [np.nan, -0.0, np.inf, 5e-324]
    weights["steps"] = np.arange(7, dtype=np.int64)
    weights["half"] = np.linspace(0, 1, 5, dtype=np.float32)[::2]  # non-contiguous view
    ModelRegistry(FolderStore(root)).register("m", weights, _meta(dtype="float64"))
    mv = ModelRegistry(FolderStore(root)).load("m")  # a fresh registry: no cache
    assert isinstance(mv, ModelVersion) and (mv.name, mv.version) == ("m", 1)
    assert sorted(mv.weights) == sorted(weights)
    for key, arr in weights.items():
        assert mv.weights[key].dtype == arr.dtype and mv.weights[key].shape == arr.shape
        assert mv.weights[key].tobytes() == np.ascontiguousarray(arr).tobytes()


def test_loaded_versions_are_cached_and_protected(reg: ModelRegistry) -> None:
    reg.register("m", _weights(), _meta())
    a = reg.load("m:1")
    a.weights["W1"] = np.zeros(1)  # the caller's dict only
    a.metadata["classes"].append("dog")
    with pytest.raises(ValueError, match="read-only"):
        reg.load("m:1").weights["b1"][0, 0] = 1.0
    b = reg.load("m:1")
    assert b.weights["W1"].shape == (5, 12)
    assert b.metadata["classes"] == ["non-cat", "cat"]


def test_resolve_forms(reg: ModelRegistry) -> None:
    for seed in range(3):
        reg.register("itsacat", _weights(seed), _meta())
    assert reg.resolve("itsacat") == ("itsacat", 3)  # no production alias: the latest
    assert reg.resolve("itsacat:2") == ("itsacat", 2)
    assert reg.resolve("itsacat@latest") == ("itsacat", 3)
    reg.set_alias("itsacat", "production", 1)
    reg.set_alias("itsacat", "staging", 2)
    assert reg.resolve("itsacat") == ("itsacat", 1)
    assert reg.resolve(" itsacat@staging ") == ("itsacat", 2)
    assert reg.load("itsacat@production").version == 1


def test_resolve_errors_list_what_exists(reg: ModelRegistry) -> None:
    with pytest.raises(ModelNotFound, match="no model 'itsacat' in the registry"):
        reg.resolve("itsacat")
    reg.register("itsacat", _weights(), _meta())
    reg.register("itsacat", _weights(), _meta())
    reg.set_alias("itsacat", "production", 2)
    with pytest.raises(ModelNotFound) as err:
        reg.resolve("itsacat:7")
    assert str(err.value) == "model 'itsacat' has versions 1, 2 and aliases production→2; no version 7"
    with pytest.raises(ModelNotFound, match="no alias 'canary'"):
        reg.load("itsacat@canary")
    with pytest.raises(ModelNotFound, match=r"no model 'dog' in the registry \(models: itsacat\)"):
        reg.load("dog")
    with pytest.raises(UserInputError, match="invalid model version 'x'"):
        reg.resolve("itsacat:x")


def test_aliases_promote_and_rollback(reg: ModelRegistry, root: Path) -> None:
    for seed in range(3):
        reg.register("m", _weights(seed), _meta())
    assert reg.aliases("m") == {}
    reg.set_alias("m", "production", 1)
    reg.set_alias("m", "staging", 2)
    assert reg.promote("m", "staging", "production") == 2
    assert reg.aliases("m") == {"production": 2, "staging": 2}
    assert reg.resolve("m") == ("m", 2)
    assert reg.rollback("m", "production") == 1  # blue/green: back to the old version
    assert reg.resolve("m") == ("m", 1)
    doc = json.loads((root / "models/m/aliases.json").read_text())
    assert doc["aliases"] == {"production": 1, "staging": 2}
    assert [(h["alias"], h["version"], h["previous"]) for h in doc["history"]][-2:] == [
        ("production", 2, 1), ("production", 1, 2)]
    reg.remove_alias("m", "staging")
    assert reg.aliases("m") == {"production": 1}
    with pytest.raises(ModelNotFound, match="no alias 'staging' to promote"):
        reg.promote("m")
    with pytest.raises(ModelNotFound, match="no version 9"):
        reg.set_alias("m", "production", 9)
    assert reg.aliases("m") == {"production": 1}


@pytest.mark.parametrize("name", ["", "-x", ".x", "a/b", "../x", "a b", "x" * 65, "a:b", "a@b", "é"])
def test_bad_names_are_refused(reg: ModelRegistry, name: str) -> None:
    with pytest.raises(UserInputError, match="invalid model name"):
        reg.register(name, _weights(), _meta())
    with pytest.raises(UserInputError):
        reg.versions(name)


@pytest.mark.parametrize("alias", ["", "1st", "a/b", "-prod", "x" * 65])
def test_bad_alias_names_are_refused(reg: ModelRegistry, alias: str) -> None:
    reg.register("m", _weights(), _meta())
    with pytest.raises(UserInputError, match="invalid alias"):
        reg.set_alias("m", alias, 1)


def test_reserved_alias_and_bad_inputs(reg: ModelRegistry) -> None:
    reg.register("m", _weights(), _meta())
    with pytest.raises(UserInputError, match="reserved"):
        reg.set_alias("m", "latest", 1)
    with pytest.raises(UserInputError, match="no weights"):
        reg.register("m", {}, _meta())
    with pytest.raises(UserInputError, match="numeric array"):
        reg.register("m", {"W1": np.array(["a", "b"])}, _meta())
    with pytest.raises(UserInputError, match="not JSON-serialisable"):
        reg.register("m", _weights(), _meta(bad=object()))
    assert reg.versions("m") == [1]  # nothing half-registered


def test_numpy_scalars_in_metadata_are_stored(reg: ModelRegistry) -> None:
    mv = reg.register("m", _weights(), _meta(metrics={"acc": np.float32(0.75), "n": np.int64(3)}))
    assert reg.metadata("m", mv.version)["metrics"] == {"acc": 0.75, "n": 3}


def test_concurrent_registrations_get_distinct_versions(root: Path) -> None:
    shared = ModelRegistry(FolderStore(root))
    got: list[int] = []
    lock = threading.Lock()

    def register(i: int) -> None:
        # half share one registry, half open their own (as separate processes would)
        reg = shared if i % 2 else ModelRegistry(FolderStore(root))
        mv = reg.register("race", _weights(i), _meta(run_id=f"r-{i}"))
        with lock:
            got.append(mv.version)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 11))
    fresh = ModelRegistry(FolderStore(root))
    runs = {fresh.metadata("race", v)["run_id"] for v in range(1, 11)}
    assert runs == {f"r-{i}" for i in range(10)}  # no version was overwritten by another


def test_concurrent_registrations_from_processes(root: Path) -> None:
    script = textwrap.dedent(f"""
        import numpy as np
        from lambdanet.objects.folder import FolderStore
        from lambdanet.registry import ModelRegistry
        reg = ModelRegistry(FolderStore({str(root)!r}))
        print(" ".join(str(reg.register("p", {{"W1": np.ones((2, 2))}}, {{"kind": "mlp"}}).version)
                       for _ in range(4)))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    versions = sorted(int(v) for out in outs for v in out.split())
    assert versions == list(range(1, 13))


def test_a_version_without_model_json_is_invisible_and_skipped(reg: ModelRegistry, root: Path) -> None:
    reg.register("m", _weights(), _meta())
    # a writer that died after claiming version 2 and writing its weights
    reg.objects.put("models/m/versions/2/claim.json", b"{}")
    reg.objects.put("models/m/versions/2/weights.safetensors", b"partial")
    assert reg.versions("m") == [1]
    assert reg.resolve("m") == ("m", 1)
    assert reg.register("m", _weights(), _meta()).version == 3
    assert reg.versions("m") == [1, 3]


class WatchedAliases:
    """An object store (any, wrapped) whose every write of ``models/<name>/aliases.json`` waits until
    a reader thread has finished a read that began after that write: the reader then sees EVERY
    state of the aliases a writer leaves behind, however briefly it lasts (a flip done as remove
    then add has a moment without the alias, which a free-running reader would rarely catch)."""

    def __init__(self, inner: Any, name: str, timeout_s: float = 10.0) -> None:
        self.inner, self.key, self.timeout_s = inner, f"models/{name}/aliases.json", timeout_s
        self.cond = threading.Condition()
        self.writes = 0  # writes of the aliases so far
        self.read_up_to = 0  # the reader finished a read that began after this many writes

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)
        if key != self.key:
            return
        with self.cond:
            self.writes += 1
            n = self.writes
            self.cond.notify_all()
            if not self.cond.wait_for(lambda: self.read_up_to >= n, timeout=self.timeout_s):
                raise AssertionError(f"the reader did not read the aliases after write {n}")

    def reading(self) -> int:
        """How many writes came before the read that begins now."""
        with self.cond:
            return self.writes

    def read_done(self, began_after: int) -> None:
        with self.cond:
            self.read_up_to = max(self.read_up_to, began_after)
            self.cond.notify_all()


def flip_between_two_of_three(objects: Any, flips: int = 12) -> tuple[list[int], list[str]]:
    """Versions 1, 2 and 3 of "m"; ``production`` flips 1 -> 2 -> 1 … while a reader thread
    resolves and loads the bare name "m" in a loop (production, else the newest version: 3).
    Returns what the reader saw (one entry per read) and its errors."""
    weights = {v: _weights(v) for v in (1, 2, 3)}
    setup = ModelRegistry(objects)
    for v in (1, 2, 3):
        assert setup.register("m", weights[v], _meta(run_id=f"r-{v}")).version == v
    setup.set_alias("m", "production", 1)
    watched = WatchedAliases(objects, "m")
    reg = ModelRegistry(watched)  # type: ignore[arg-type]  # the flips wait for the reader
    stop = threading.Event()
    seen: list[int] = []
    errors: list[str] = []

    def read() -> None:
        reader = ModelRegistry(objects, cache_size=0)  # the store itself, not the watched wrapper
        while not stop.is_set():
            began_after = watched.reading()
            try:
                mv = reader.load("m")
                if not np.array_equal(mv.weights["W1"], weights[mv.version]["W1"]):
                    errors.append(f"version {mv.version} came with other weights")
                seen.append(mv.version)
            except Exception as exc:
                errors.append(repr(exc))
            watched.read_done(began_after)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        for i in range(flips):
            reg.set_alias("m", "production", 2 if i % 2 == 0 else 1)
    finally:
        stop.set()
        t.join(timeout=30)
    return seen, errors


def flip_transitions(seen: list[int], flips: int) -> list[int]:
    """The versions the reader saw, each run of equal reads once; the last ``flips`` of them (the
    first read may come before or after the first flip)."""
    runs = [v for i, v in enumerate(seen) if i == 0 or seen[i - 1] != v]
    return runs[-flips:]


def test_alias_flip_never_shows_the_fallback_version(reg: ModelRegistry) -> None:
    """Three versions, the alias flipping between 1 and 2: a reader of the bare name sees 1 or 2
    and never 3 — the newest version, what the name means while no production alias exists (a
    flip done as remove-then-add would show it)."""
    seen, errors = flip_between_two_of_three(reg.objects, flips=12)
    assert errors == []
    assert set(seen) == {1, 2}, f"the reader saw versions {sorted(set(seen))}"
    assert flip_transitions(seen, 12) == [2, 1] * 6  # every flip was read, in order (the watched store waits)


def test_export_itsacat_h5(reg: ModelRegistry, tmp_path: Path) -> None:
    weights = _weights(5, dtype="float64")
    reg.register("itsacat", weights, _meta())
    out = reg.export_itsacat_h5("itsacat:1", tmp_path / "export" / "params.h5")
    assert out == tmp_path / "export" / "params.h5"
    with h5py.File(out, "r") as fh:
        assert sorted(fh.keys()) == ["W1", "W2", "W3", "b1", "b2", "b3"]
        for key, arr in weights.items():
            np.testing.assert_array_equal(fh[key][()], arr)
            assert fh[key].dtype == arr.dtype
    assert [p.name for p in out.parent.iterdir()] == ["params.h5"]  # no temp file left


def test_export_refuses_cnn_and_unknown(reg: ModelRegistry, tmp_path: Path) -> None:
    reg.register("lenet", {"conv1.weight": np.ones((2, 3, 5, 5), np.float32)}, _meta(kind="cnn"))
    with pytest.raises(UserInputError, match="cnn model"):
        reg.export_itsacat_h5("lenet", tmp_path / "p.h5")
    with pytest.raises(ModelNotFound):
        reg.export_itsacat_h5("nothing", tmp_path / "p.h5")
    assert not (tmp_path / "p.h5").exists()


# ---- a corrupt version is a server-side error, not "not found" -----------------------------------
@pytest.mark.parametrize(("corrupt", "needle"), [
    (lambda meta: b"{not json", "model.json is not valid JSON"),
    (lambda meta: json.dumps({k: v for k, v in meta.items() if k != "kind"}).encode(), "kind"),
    (lambda meta: json.dumps({**meta, "input_shape": "64x64"}).encode(), "input_shape"),
    (lambda meta: json.dumps({**meta, "classes": {"a": 1}}).encode(), "classes"),
])
def test_corrupt_model_json_is_model_corrupt_not_not_found(reg: ModelRegistry, root: Path, corrupt: Any,
                                                           needle: str) -> None:
    from lambdanet.errors import ModelCorrupt

    reg.register("m", _weights(), _meta())
    path = root / "models/m/versions/1/model.json"
    path.write_bytes(corrupt(json.loads(path.read_text())))
    fresh = ModelRegistry(FolderStore(root))  # no cache
    with pytest.raises(ModelCorrupt) as err:
        fresh.load("m:1")
    assert not isinstance(err.value, ModelNotFound)
    assert (err.value.http_status, err.value.exit_code) == (500, 3)
    message = str(err.value)
    assert "\n" not in message and "m:1" in message and needle in message, message
    with pytest.raises(ModelCorrupt):
        fresh.metadata("m", 1)
    with pytest.raises(ModelNotFound):  # an unknown version or model is still "not found"
        fresh.load("m:2")
    with pytest.raises(ModelNotFound):
        fresh.load("other")


def test_metadata_is_parsed_once_into_a_frozen_model(reg: ModelRegistry, root: Path) -> None:
    from pydantic import ValidationError

    from lambdanet.registry import ModelMetadata

    reg.register("m", _weights(), _meta())
    mv = ModelRegistry(FolderStore(root)).load("m:1")
    meta = mv.meta
    assert isinstance(meta, ModelMetadata)
    assert (meta.kind, meta.classes, meta.input_shape, meta.name, meta.version) == (
        "mlp", ("non-cat", "cat"), (2, 2, 3), "m", 1)
    assert meta.architecture.layer_dims == (12, 5, 3, 1) and meta.run_id == "r-1"
    assert meta.preprocessing.scale == 255.0 and meta.metrics["test_accuracy"] == 0.8
    with pytest.raises(ValidationError):
        meta.kind = "cnn"  # type: ignore[misc]
    with pytest.raises(UserInputError, match="input_shape"):  # never written: refused at register
        reg.register("m", _weights(), _meta(input_shape=[0, 2]))
    assert reg.versions("m") == [1]
