"""No pickle on any path that reads stores, checkpoints, models or requests.

Static checks (``ast`` over every module of ``src/lambdanet``): no import of a pickle-family
module, no ``torch.load``/``torch.save``, every ``np.load`` passes ``allow_pickle=False``, and
the modules that write weights (registry, checkpoints, the CNN checkpoint) use safetensors.
Behavioural checks: a pickle payload (which would create a canary file when unpickled) offered
to the tensor codec, the registry, the data reader and the checkpoint reader is refused with a
lambdanet error and the canary never appears.
"""

from __future__ import annotations

import ast
import io
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lambdanet import tensors
from lambdanet.errors import DataError, LambdanetError

SRC = Path(__file__).resolve().parents[2] / "src" / "lambdanet"

#: modules that can run code on load — never imported by lambdanet itself
BANNED_MODULES = frozenset({"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve",
                            "marshal", "jsonpickle"})
#: attribute calls that unpickle (or write files that need unpickling)
BANNED_CALLS = frozenset({("torch", "load"), ("torch", "save"), ("pd", "read_pickle"),
                          ("pandas", "read_pickle"), ("np", "fromfile")})
NUMPY_NAMES = frozenset({"np", "numpy"})


def _modules() -> list[Path]:
    files = sorted(p for p in SRC.rglob("*.py") if "egg-info" not in str(p))
    assert len(files) >= 20, f"expected the lambdanet sources under {SRC}"
    return files


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


class _Scanner(ast.NodeVisitor):
    def __init__(self, rel: str) -> None:
        self.rel = rel
        self.findings: list[Finding] = []
        self.np_loads = 0
        self.np_load_aliases: set[str] = set()

    def _add(self, node: ast.AST, what: str) -> None:
        self.findings.append(Finding(self.rel, getattr(node, "lineno", 0), what))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in BANNED_MODULES:
                self._add(node, f"imports {alias.name}")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = (node.module or "").split(".")[0]
        if mod in BANNED_MODULES:
            self._add(node, f"imports from {node.module}")
        if node.module == "torch":
            for alias in node.names:
                if alias.name in ("load", "save"):
                    self._add(node, f"imports torch.{alias.name}")
        if node.module in ("numpy", "numpy.lib.npyio"):
            for alias in node.names:
                if alias.name == "load":
                    self.np_load_aliases.add(alias.asname or alias.name)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _dotted(node.func)
        parts = name.split(".")
        if len(parts) >= 2 and (parts[-2], parts[-1]) in BANNED_CALLS:
            self._add(node, f"calls {name}()")
        if parts[-1] == "loads" and parts[0] in BANNED_MODULES:
            self._add(node, f"calls {name}()")
        is_np_load = (len(parts) == 2 and parts[0] in NUMPY_NAMES and parts[1] == "load") or (
            len(parts) == 1 and parts[0] in self.np_load_aliases)
        if is_np_load:
            self.np_loads += 1
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            value = kw.get("allow_pickle")
            if not (isinstance(value, ast.Constant) and value.value is False):
                self._add(node, f"calls {name}() without allow_pickle=False")
        if parts[-1] == "read_array" and "format" in parts:  # np.lib.format.read_array
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            value = kw.get("allow_pickle")
            if not (isinstance(value, ast.Constant) and value.value is False):
                self._add(node, f"calls {name}() without allow_pickle=False")
        self.generic_visit(node)


def _scan(path: Path) -> _Scanner:
    scanner = _Scanner(str(path.relative_to(SRC.parent)))
    scanner.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return scanner


def test_scanner_catches_what_it_must() -> None:
    """The scanner itself: each banned pattern in a snippet is reported."""
    snippet = (
        "import pickle\nimport cloudpickle as cp\nfrom dill import loads\nimport numpy as np\nimport torch\n"
        "np.load('a.npz')\nnp.load('a.npz', allow_pickle=True)\nnp.load('a.npz', allow_pickle=False)\n"
        "torch.load('m.pt')\nfrom torch import load\n"
    )
    scanner = _Scanner("snippet.py")
    scanner.visit(ast.parse(snippet))
    found = "\n".join(map(str, scanner.findings))
    for needle in ("imports pickle", "imports cloudpickle", "imports from dill", "calls torch.load()",
                   "imports torch.load"):
        assert needle in found
    assert found.count("without allow_pickle=False") == 2  # the third np.load is fine
    assert scanner.np_loads == 3


def test_no_pickle_imports_or_torch_load_anywhere() -> None:
    findings = [f for path in _modules() for f in _scan(path).findings]
    assert not findings, "pickle on a load path:\n" + "\n".join(map(str, findings))


def test_every_np_load_passes_allow_pickle_false() -> None:
    scanners = [_scan(p) for p in _modules()]
    bad = [f for s in scanners for f in s.findings if "allow_pickle" in f.what]
    assert not bad, "\n".join(map(str, bad))
    # the npz readers exist and were actually checked (not a vacuous pass)
    assert sum(s.np_loads for s in scanners) >= 1


@pytest.mark.parametrize("relpath", ["registry.py", "engine/checkpoints.py", "torchnet/checkpoint.py"])
def test_weight_writers_use_safetensors(relpath: str) -> None:
    path = SRC / relpath
    assert path.exists(), f"{relpath} is part of the contract (docs/architecture.md)"
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    imported = {
        (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert any(m.startswith("safetensors") for m in imported), f"{relpath} does not use safetensors"


def test_torchnet_checkpoint_is_safetensors_and_refuses_pickle(tmp_path: Path) -> None:
    """The CNN track's state (model + optimizer) is safetensors bytes (readable without torch), and
    a pickle offered in its place is refused without running it."""
    import safetensors.numpy
    import torch

    from lambdanet.torchnet.checkpoint import load_bytes, save_bytes

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    blob = save_bytes(model, opt)
    arrays = safetensors.numpy.load(blob)
    assert any("weight" in k for k in arrays) and len(arrays) >= 2
    canary = tmp_path / "canary"
    with pytest.raises(LambdanetError):
        load_bytes(_payload(canary), model, opt)
    assert not canary.exists()


# ---- behavioural: a pickle payload is refused and never executed -------------------------------
class _Canary:
    """Unpickling this creates the file ``path`` (a harmless stand-in for running code)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def _payload(canary: Path) -> bytes:
    return pickle.dumps({"W1": _Canary(canary)})


def test_tensor_decode_refuses_a_pickle_blob(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    for blob in (_payload(canary), pickle.dumps(np.zeros((2, 3), np.float32)), b"\x80\x05K\x01.",
                 b"PK\x03\x04" + b"\0" * 40, b"\x93NUMPY\x01\x00" + b"\0" * 30):
        with pytest.raises(DataError):
            tensors.decode(blob)
    assert not canary.exists()


def test_tensor_decode_refuses_object_dtype() -> None:
    header = b'{"dtype": "|O", "shape": [1]}'
    blob = len(header).to_bytes(4, "little") + header + b"\0" * 8
    with pytest.raises(DataError):
        tensors.decode(blob)


def test_tensor_roundtrip_is_exact() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(tensors.decode(tensors.encode(a)), a)


def _pickled_npz(path: Path, canary: Path) -> Path:
    """An .npz whose ``x_train`` member is an object array: loading it would unpickle."""
    buf = io.BytesIO()
    np.save(buf, np.array([_Canary(canary)], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x_train.npy", buf.getvalue())
        z.writestr("y_train.npy", _npy(np.zeros(1, np.int64)))
    return path


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def test_reader_refuses_a_pickled_npz(tmp_path: Path) -> None:
    from lambdanet.data.readers import load_dataset

    canary = tmp_path / "canary"
    path = _pickled_npz(tmp_path / "evil.npz", canary)
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert "\n" not in str(info.value)
    assert not canary.exists()


def test_registry_refuses_pickled_weights(tmp_path: Path) -> None:
    from lambdanet.objects.folder import FolderStore
    from lambdanet.registry import ModelRegistry

    objects = FolderStore(tmp_path / "objects")
    registry = ModelRegistry(objects)
    mv = registry.register("m", {"W1": np.ones((2, 3), np.float32), "b1": np.zeros((2, 1), np.float32)},
                           {"kind": "mlp"})
    key = f"models/m/versions/{mv.version}/weights.safetensors"
    blob = objects.get(key)
    # a real safetensors file: 8-byte little-endian header length, then a JSON header
    n = int.from_bytes(blob[:8], "little")
    assert blob[8:9] == b"{" and 0 < n < len(blob)
    canary = tmp_path / "canary"
    objects.put(key, _payload(canary))
    fresh = ModelRegistry(objects)  # no cache
    with pytest.raises(LambdanetError):
        fresh.load("m:1")
    assert not canary.exists()


def test_checkpoint_readers_refuse_pickle(tmp_path: Path) -> None:
    """A pickle where a checkpoint or the run's data snapshot should be: one DataError, nothing runs."""
    from lambdanet.engine import checkpoints
    from lambdanet.objects.folder import FolderStore

    canary = tmp_path / "canary"
    objects = FolderStore(tmp_path / "objects")
    key = checkpoints.checkpoint_key("r-evil", 1)
    objects.put(key, _payload(canary))
    with pytest.raises(DataError):
        checkpoints.read_state(objects, key)
    evil = _pickled_npz(tmp_path / "evil.npz", canary)
    with zipfile.ZipFile(evil, "a") as z:  # a well-formed run data file but for the pickled x_train
        z.writestr("meta.npy", _npy(np.frombuffer(json.dumps({"classes": ["a", "b"], "source": "x"}).encode(),
                                                  dtype=np.uint8)))
    blob = evil.read_bytes()
    sha = "0" * 64  # the reference is well-formed; the snapshot it names holds a pickle
    objects.put(checkpoints.snapshot_key(sha), blob)
    objects.put(checkpoints.data_key("r-evil"), json.dumps(
        {"snapshot": checkpoints.snapshot_key(sha), "sha256": sha, "bytes": len(blob), "source": "x"}).encode())
    with pytest.raises(DataError):
        checkpoints.read_data(objects, "r-evil")
    assert not canary.exists()


def test_checkpoints_are_safetensors(tmp_path: Path) -> None:
    from safetensors.numpy import load as st_load

    from lambdanet.engine import checkpoints
    from lambdanet.objects.folder import FolderStore

    objects = FolderStore(tmp_path / "objects")
    state = {"W1": np.arange(6, dtype=np.float32).reshape(2, 3), "t": np.array([3], np.int64)}
    pointer = checkpoints.write_checkpoint(objects, "r-1", 1, 5, state)
    loaded = st_load(objects.get(pointer.file))
    assert sorted(loaded) == ["W1", "t"]
    np.testing.assert_array_equal(loaded["W1"], state["W1"])


# ---- the tuning study's journal (lambdanet tune): JSON logs only, never a pickled snapshot -------
def test_study_journal_backends_have_no_snapshots(tmp_path: Path) -> None:
    """Optuna's JournalStorage unpickles the snapshot of any backend that is a BaseJournalSnapshot
    (Optuna's own Redis backend is one); lambdanet's journals are plain JSON-log backends."""
    from optuna.storages.journal import BaseJournalBackend
    from optuna.storages.journal._base import BaseJournalSnapshot

    from lambdanet.adapters import open_journal
    from lambdanet.journals.redis import RedisJournal

    assert issubclass(RedisJournal, BaseJournalBackend)
    assert not issubclass(RedisJournal, BaseJournalSnapshot)
    assert not hasattr(RedisJournal, "load_snapshot") and not hasattr(RedisJournal, "save_snapshot")
    file_backend = open_journal("file", "s", tmp_path)
    assert not isinstance(file_backend, BaseJournalSnapshot)
    # the tune package never names a snapshot API or Optuna's pickling Redis backend
    for path in [*(SRC / "tune").rglob("*.py"), *(SRC / "journals").rglob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        bad = names & {"save_snapshot", "load_snapshot", "BaseJournalSnapshot", "JournalRedisBackend",
                       "JournalRedisStorage", "restore_replay_result"}
        assert not bad, f"{path.name} uses {sorted(bad)}"
        # nor pickles anything else: the trial-driver processes (tune/trial_process.py) speak JSON lines
        modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not modules & {"pickle", "cloudpickle", "dill", "multiprocessing", "joblib"}, path.name


@pytest.mark.redis
def test_study_journal_on_redis_refuses_pickles_and_writes_json(tmp_path: Path, redis_server: object) -> None:
    """A study over the Redis journal writes only JSON strings; a pickle pushed into the journal by
    someone else is one DataError (never unpickled), and a pickled 'snapshot' beside it is never read."""
    import json

    import optuna
    import redis

    from lambdanet.journals.redis import RedisJournal, journal_key

    url = redis_server.url  # type: ignore[attr-defined]
    r = redis.Redis.from_url(url)
    canary = tmp_path / "canary"
    r.set("ln:study:sec:journal:snapshot", _payload(canary))  # where a snapshot would sit
    r.set(":snapshot", _payload(canary))  # Optuna's JournalRedisBackend key with its default prefix
    storage = optuna.storages.JournalStorage(RedisJournal(url, "sec"))
    study = optuna.create_study(study_name="sec", storage=storage)
    for _ in range(3):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.report(0.5, 1)
        study.tell(trial, trial.params["x"])
    entries = r.lrange(journal_key("sec"), 0, -1)
    assert len(entries) >= 10 and all(isinstance(json.loads(e), dict) for e in entries)
    again = optuna.load_study(study_name="sec", storage=optuna.storages.JournalStorage(RedisJournal(url, "sec")))
    assert len(again.trials) == 3  # replayed from the JSON logs alone
    r.rpush(journal_key("sec"), _payload(canary))
    with pytest.raises(DataError, match="not JSON"):
        optuna.storages.JournalStorage(RedisJournal(url, "sec"))
    assert not canary.exists()
    r.delete(journal_key("sec"), "ln:study:sec:journal:snapshot", ":snapshot")
