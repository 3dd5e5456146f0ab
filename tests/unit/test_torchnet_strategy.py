"""The engine strategy for CNN configs: validation errors are one line, before anything runs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lambdanet.config import CNNConfig, MLPConfig, itsacat_defaults  # noqa: E402
from lambdanet.data.dataset import Dataset  # noqa: E402
from lambdanet.engine.strategies import get_strategy  # noqa: E402
from lambdanet.errors import ConfigError, DataError  # noqa: E402
from lambdanet.torchnet.strategy import TorchDataStrategy, arrays  # noqa: E402

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
    with pytest.raises(DataError, match=r"32x32 RGB images .* shape \(64, 64, 3\)"):
        s.validate(CFG, 1, _dataset(shape=(64, 64, 3)))
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
