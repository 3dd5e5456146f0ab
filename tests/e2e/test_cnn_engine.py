"""The CNN track through the real engine: Driver + local executor + memory store + SQLite
ledger + folder registry, on a 200/100-image CIFAR-10 subset (CPU, LeNet, 2 epochs).

* K = 2 ``data`` training registers the same weights as K = 1 (float32/Adam tolerance);
* a run that fails in round 2 and is resumed equals an uninterrupted run;
* the registered version is a CNN the predictor serves; epoch rows are in the ledger.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  (CI fails, never skips, without torch)

from lambdanet.config import CNNConfig
from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.errors import RunFailed
from lambdanet.predictor import load_predictor
from lambdanet.services import Services
from lambdanet.settings import Settings
from lambdanet.torchnet.data import CIFAR10_CLASSES
from tests.support.cnn import cifar_subset, write_cifar_subset

CFG = CNNConfig(model="lenet", epochs=2, batch_size=50, augment=True, seed=3)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cifar10_train.npz + cifar10_test.npz (the reader pairs them) with 200 / 100 images."""
    return write_cifar_subset(tmp_path_factory.mktemp("cifar-subset"), 200, 100)


@pytest.fixture
def services(home: Path):
    s = Services.open(Settings.from_env(notifier_url="console://"))
    yield s
    s.close()


def _train(services: Services, data_file: Path, workers: int, name: str):
    req = TrainRequest(data=str(data_file), config=CFG, model_name=name, workers=workers, strategy="data",
                       store_url=f"memory://cnn-{name}", executor="local")
    return Driver(services).train(req)


def _weights(services: Services, ref: str) -> np.ndarray:
    mv = services.registry.load(ref)
    return np.concatenate([np.asarray(mv.weights[k], np.float32).ravel() for k in sorted(mv.weights)])


def test_k2_equals_k1_through_the_driver(services: Services, data_file: Path) -> None:
    r1 = _train(services, data_file, 1, "cnn-k1")
    r2 = _train(services, data_file, 2, "cnn-k2")
    assert r1.status == r2.status == "completed" and r1.epochs_run == r2.epochs_run == 2
    assert r1.rounds == 2  # one epoch per round by default: a checkpoint after every epoch
    assert r2.final_cost == pytest.approx(r1.final_cost, abs=1e-4)
    assert r2.test_accuracy == pytest.approx(r1.test_accuracy)
    w1, w2 = _weights(services, "cnn-k1"), _weights(services, "cnn-k2")
    np.testing.assert_allclose(w2, w1, rtol=0, atol=1e-4)

    rows = services.ledger.epochs(r2.run_id)
    assert [r.epoch for r in rows] == [1, 2] and rows[1].cost < rows[0].cost + 0.5
    mv = services.registry.load("cnn-k2")
    assert mv.metadata["kind"] == "cnn" and mv.metadata["classes"] == CIFAR10_CLASSES
    assert mv.metadata["metrics"]["test_accuracy"] == pytest.approx(r2.test_accuracy)
    x_test = cifar_subset(n_train=200, n_test=100)[2]
    probs = load_predictor(mv).predict_proba(x_test[:5])
    assert probs.shape == (5, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_resume_after_failed_round_equals_uninterrupted(
    services: Services, data_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMBDANET_FAULTS", "1")
    full = _train(services, data_file, 1, "cnn-full")
    req = TrainRequest(data=str(data_file), config=CFG, model_name="cnn-resumed", workers=2, strategy="data",
                       store_url="memory://cnn-resume", executor="local", max_retries=0)
    driver = Driver(services, faults=[{"round": 2, "worker": 1, "action": "raise", "after_epochs": 1}],
                    retry_backoff_s=0.0)
    with pytest.raises(RunFailed, match="resume with"):
        driver.train(req)
    failed = services.ledger.list_runs(limit=1)[0]
    assert failed.status == "failed" and [r.epoch for r in services.ledger.epochs(failed.run_id)] == [1]
    resumed = Driver(services).resume(failed.run_id)
    assert resumed.status == "completed" and resumed.epochs_run == 2
    np.testing.assert_allclose(_weights(services, "cnn-resumed"), _weights(services, "cnn-full"), rtol=0, atol=1e-4)
    assert resumed.final_cost == pytest.approx(full.final_cost, abs=1e-4)


def test_epoch_rows_carry_test_accuracy(services: Services, data_file: Path) -> None:
    r = _train(services, data_file, 1, "cnn-extras")
    rows = services.ledger.epochs(r.run_id)
    assert all(0.0 <= row.extra["test_accuracy"] <= 1.0 for row in rows)
    assert rows[-1].extra["test_accuracy"] == pytest.approx(r.test_accuracy)


def test_threshold_stops_the_run_early(services: Services, data_file: Path) -> None:
    cfg = CNNConfig(model="lenet", epochs=3, batch_size=100, threshold=10.0)  # any loss is below 10
    req = TrainRequest(data=str(data_file), config=cfg, model_name="cnn-early", workers=2, strategy="data",
                       store_url="memory://cnn-early", executor="local")
    r = Driver(services).train(req)
    assert r.status == "completed" and r.stop_reason == "threshold" and r.epochs_run == 1
    assert [row.epoch for row in services.ledger.epochs(r.run_id)] == [1]
