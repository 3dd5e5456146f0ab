"""The engine strategy for CNN configs: validation errors are one line, before anything runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lambdanet.config import CNNConfig, MLPConfig, itsacat_defaults
from lambdanet.data.dataset import Dataset
from lambdanet.engine.strategies import get_strategy
from lambdanet.errors import ConfigError, DataError
from lambdanet.torchnet.data import subset
from lambdanet.torchnet.strategy import (
    FINISH_TRAIN_SAMPLES,
    TEST_ACCURACY,
    TEST_LOSS,
    TorchDataStrategy,
    arrays,
)

CFG = CNNConfig(model="lenet", epochs=3, limit_train=20, limit_test=5)


def _dataset(shape=(32, 32, 3), n=40, labels=10) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = np.arange(n) % labels
    return Dataset(x, y, x[:10], y[:10], [str(i) for i in range(10)], "test.npz")


def test_registered_for_cnn_data() -> None:
    assert isinstance(get_strategy("cnn", "data"), TorchDataStrategy)


def test_validate_refuses_wrong_images_configs_and_labels() -> None:
    s = TorchDataStrategy()
    s.validate(CFG, 2, _dataset())
    s.validate(CFG, 2, _dataset(shape=(64, 48, 3)))  # any size above the model's smallest
    with pytest.raises(DataError, match=r"lenet model takes RGB images of at least 16x16 .* shape \(12, 40, 3\)"):
        s.validate(CFG, 1, _dataset(shape=(12, 40, 3)))
    vgg = CNNConfig(model="vgg11_bn", epochs=1)
    with pytest.raises(DataError, match=r"at least 32x32 .* shape \(24, 24, 3\)"):
        s.validate(vgg, 1, _dataset(shape=(24, 24, 3)))
    with pytest.raises(DataError, match=r"RGB images .* shape \(32, 32, 1\)"):
        s.validate(CFG, 1, _dataset(shape=(32, 32, 1)))
    with pytest.raises(DataError, match="label 11 is outside the 10 classes"):
        s.validate(CFG, 1, _dataset(labels=12))
    with pytest.raises(ConfigError, match="trains a CNN config, got MLPConfig"):
        s.validate(MLPConfig(**itsacat_defaults()), 1, _dataset())


def test_cuda_asked_through_the_config() -> None:
    cfg = CFG.model_copy(update={"device": "cuda"})
    if torch.cuda.is_available():
        TorchDataStrategy().validate(cfg, 1, _dataset())
    else:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            TorchDataStrategy().validate(cfg, 1, _dataset())


def test_limits_and_initial_state() -> None:
    ds = _dataset()
    x, y, _, yt = arrays({}, CFG, ds)
    assert x.shape == (20, 32, 32, 3) and len(yt) == 5 and y.dtype == np.int64
    state = TorchDataStrategy().initial_state(CFG, ds)
    assert state["model.conv1.weight"].shape == (32, 3, 5, 5)
    assert not any(k.startswith("optim.") for k in state)  # Adam starts empty
    assert TorchDataStrategy().default_epochs_per_round(CFG) == 1


def _plain_accuracy(state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """The state's LeNet scored by a plain forward pass written here (x / 255, mean = std = 0.5)."""
    from lambdanet.torchnet.models import build_model

    model = build_model("lenet")
    model.load_state_dict({k[len("model."):]: torch.from_numpy(np.array(v)) for k, v in state.items()
                           if k.startswith("model.")})
    model.eval()
    with torch.no_grad():
        logits = model((torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5)
    return float((logits.argmax(1).numpy() == y).mean())


def test_finish_scores_what_the_state_does_not_carry() -> None:
    """A state without a test pass (here: the initial one) is scored at finish; the training set of
    40 images is scored whole."""
    ds = _dataset()
    cfg = CNNConfig(model="lenet", epochs=1)
    state = TorchDataStrategy().initial_state(cfg, ds)
    fin = TorchDataStrategy().finish(cfg, state, ds)
    assert fin.test_accuracy == pytest.approx(_plain_accuracy(state, ds.x_test, ds.y_test))
    assert fin.train_accuracy == pytest.approx(_plain_accuracy(state, ds.x_train, ds.y_train))
    assert fin.metadata["evaluation"] == {"train_accuracy_method": "all_training_images", "train_accuracy_images": 40,
                                          "test_accuracy_method": "scored_at_finish", "test_accuracy_images": 10}


def test_finish_reuses_the_states_test_pass_and_samples_a_large_training_set() -> None:
    ds = _dataset(n=FINISH_TRAIN_SAMPLES + 300)
    cfg = CNNConfig(model="lenet", epochs=1)
    state = {**TorchDataStrategy().initial_state(cfg, ds), TEST_ACCURACY: np.array([0.375]),
             TEST_LOSS: np.array([1.5])}
    fin = TorchDataStrategy().finish(cfg, state, ds)
    assert fin.test_accuracy == 0.375  # the last epoch's figure, not scored again
    sample = subset(len(ds.y_train), FINISH_TRAIN_SAMPLES, cfg.seed + 2)
    assert len(set(sample.tolist())) == FINISH_TRAIN_SAMPLES
    assert fin.train_accuracy == pytest.approx(_plain_accuracy(state, ds.x_train[sample], ds.y_train[sample]))
    assert fin.metadata["evaluation"]["train_accuracy_method"] == "shuffled_sample"
    assert fin.metadata["evaluation"]["train_accuracy_images"] == FINISH_TRAIN_SAMPLES
    assert fin.metadata["evaluation"]["test_accuracy_method"] == "last_epoch_test_pass"
