"""The ``airbench`` model and the recipe parts it brings (examples/cifar10/airbench.json), through
the real engine (Driver, local executor, memory store, registry) against what is written here:

* the whitening layer, set from the training images, decorrelates their 2x2 patches (numpy's
  own eigenvalues of the patch covariance are the reference), and stays frozen;
* the 3x3 convolutions start as the identity on their first channels; the batch norms' scales
  stay 1;
* a 2-epoch run (2 rounds of 8 steps: the lookahead average, which differs from the weights after
  step 8, goes through the checkpoint between them) equals a plain loop that does each part
  itself — the batch norms' biases at 64x the rate and 1/64 the weight decay, the
  0.2 -> 1 -> 0.07 rate triangle (``np.interp``), and airbench's lookahead (every 5 steps
  ``avg.lerp_(w, 1 - 0.95^5 (step/total)^3); w := avg``; the average after the last step).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lambdanet.config import CNNConfig, parse_config
from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.errors import ConfigError
from lambdanet.services import Services
from lambdanet.settings import Settings
from lambdanet.torchnet.models import build_model
from lambdanet.torchnet.train import learning_rate_at
from tests.support.cnn import cifar_subset, plain_images, write_cifar_subset

AIRBENCH = CNNConfig(model="airbench", epochs=2, batch_size=25, optimizer="sgd", learning_rate=0.2, momentum=0.85,
                     nesterov=True, weight_decay=1e-3, label_smoothing=0.2, lr_schedule="warmup_decay", warmup=0.23,
                     lr_start=0.2, lr_end=0.07, lookahead=True, augment="none", tta="none", seed=3)


@pytest.fixture
def services(home: Path):
    s = Services.open(Settings.from_env(notifier_url="console://"))
    yield s
    s.close()


def test_the_whitening_layer_decorrelates_the_training_patches() -> None:
    x = cifar_subset(n_train=300, n_test=1)[0]
    images = plain_images(x)
    model = build_model("airbench", seed=0)
    model.initialise_from(images)  # type: ignore[operator]
    # numpy's reference: every 2x2 patch as (c, dy, dx)-ordered 12 values, by a loop over offsets
    arr = images.double().numpy()
    h, w = arr.shape[2:]
    parts = [arr[:, c, dy:dy + h - 1, dx:dx + w - 1] for c in range(3) for dy in range(2) for dx in range(2)]
    patches = np.stack(parts, axis=-1).reshape(-1, 12)
    eigenvalues = np.sort(np.linalg.eigvalsh(patches.T @ patches / len(patches)))[::-1]
    weight = model.whiten.weight.detach().double()  # (24, 3, 2, 2)
    out = F.conv2d(torch.from_numpy(arr), weight).permute(0, 2, 3, 1).reshape(-1, 24).numpy()
    cov = out[:, :12].T @ out[:, :12] / len(out)  # (12, 12): diagonal, eigenvalue / (eigenvalue + eps)
    np.testing.assert_allclose(cov, np.diag(eigenvalues / (eigenvalues + 5e-4)), atol=1e-6)
    np.testing.assert_array_equal(out[:, 12:], -out[:, :12])  # the filters and their negatives
    assert not model.whiten.weight.requires_grad and float(model.whiten.bias.detach().abs().sum()) == 0.0


def test_dirac_convolutions_and_fixed_norm_scales() -> None:
    model = build_model("airbench", seed=1)
    x = torch.randn(2, 64, 8, 8)
    conv = model.blocks[1][0]  # 64 -> 256
    np.testing.assert_allclose(conv(x)[:, :64].detach().numpy(), x.numpy(), atol=1e-6)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 6 and all(not m.weight.requires_grad and m.eps == 1e-12 for m in norms)


def _plain_airbench_loop(x: np.ndarray, y: np.ndarray, whiten: torch.Tensor) -> dict[str, np.ndarray]:
    cfg = AIRBENCH
    torch.set_num_threads(1)
    model = build_model("airbench", n_classes=10, seed=cfg.seed)
    with torch.no_grad():
        model.whiten.weight.copy_(whiten)  # type: ignore[operator]
        model.whiten.bias.zero_()  # type: ignore[union-attr]
    norm_biases = [p for name, p in model.named_parameters() if p.requires_grad and name.startswith("blocks")
                   and name.endswith("bias")]
    others = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in norm_biases)]
    opt = torch.optim.SGD([{"params": norm_biases, "lr": cfg.learning_rate * 64, "weight_decay": cfg.weight_decay / 64},
                           {"params": others, "lr": cfg.learning_rate, "weight_decay": cfg.weight_decay}],
                          momentum=0.85, nesterov=True)
    average = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    m = len(y)
    steps = -(-m // cfg.batch_size)
    total = 2 * steps
    peak = 0.23 * total
    step = 0
    model.train()
    for epoch in (1, 2):
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(m)
        for i in range(steps):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            loss = F.cross_entropy(model(plain_images(x[idx])), torch.from_numpy(y[idx].astype(np.int64)),
                                   label_smoothing=0.2)
            step += 1
            rate = float(np.interp(step, [0, peak, total + 1], [0.2, 1.0, 0.07])) * cfg.learning_rate
            opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = rate * 64, rate
            opt.zero_grad()
            loss.backward()
            opt.step()
            state = model.state_dict()
            if step % 5 == 0:
                for key, avg in average.items():
                    avg.lerp_(state[key], 1 - 0.95**5 * (step / total) ** 3)
                    state[key].copy_(avg)
    for key, avg in average.items():  # the model ends as the average
        model.state_dict()[key].copy_(avg)
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_airbench_run_equals_a_plain_loop_with_its_parts(services: Services, tmp_path: Path) -> None:
    data = write_cifar_subset(tmp_path / "cifar", n_train=200, n_test=40)
    res = Driver(services).train(TrainRequest(data=str(data), config=AIRBENCH, model_name="airbench", workers=1,
                                              strategy="data", store_url="memory://airbench", executor="local"))
    assert res.status == "completed" and res.epochs_run == 2
    got = {k: np.asarray(v) for k, v in services.registry.load(res.model).weights.items()}
    x, y = cifar_subset(n_train=200, n_test=40)[:2]
    initial = build_model("airbench", seed=AIRBENCH.seed).state_dict()
    assert not np.allclose(got["whiten.weight"], initial["whiten.weight"].numpy())  # set from the data …
    want = _plain_airbench_loop(x, y, torch.from_numpy(got["whiten.weight"].copy()))  # … and frozen since
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    for name, value in got.items():
        if name.startswith("blocks") and name.endswith(".weight") and value.ndim == 1:
            np.testing.assert_array_equal(value, 1.0)  # the batch norms' scales never moved


def test_the_rate_triangle_has_a_start_and_an_end() -> None:
    cfg = AIRBENCH.model_copy(update={"epochs": 3})
    batches = 7
    total = 3 * batches
    rates = [learning_rate_at(cfg, 1 + s // batches, s % batches, batches) for s in range(total)]
    want = [0.2 * np.interp(s, [0, 0.23 * total, total + 1], [0.2, 1.0, 0.07]) for s in range(1, total + 1)]
    np.testing.assert_allclose(rates, want, rtol=1e-12)


def test_lookahead_needs_one_model_on_every_worker() -> None:
    base = {"model": "airbench", "epochs": 1, "lookahead": True}
    assert parse_config(base).lookahead  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="lookahead: needs sync_every 1 and compress 'none'"):
        parse_config({**base, "sync_every": 4})
    with pytest.raises(ConfigError, match="lr_start"):
        parse_config({**base, "lr_start": 1.5})
