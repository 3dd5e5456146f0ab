"""The fast CIFAR-10 recipe's parts and CNNs for any input size, through the real engine (Driver,
local executor, memory store, registry) against plain PyTorch written here:

* the "fast" network trained with label smoothing, Nesterov SGD, the warm-up-and-decay learning
  rate, flip augmentation and flip test-time augmentation equals a plain loop that does each of
  these itself (batch order, the documented augmentation draws, the per-step rate triangle,
  ``F.cross_entropy(label_smoothing=…)``, ``torch.optim.SGD(nesterov=True)``, averaged logits of
  the image and its mirror) — weights and test accuracy;
* the ``augment`` modes do what they say (crop: never mirrored; flip: never shifted);
* a CNN trains on images that are not 32x32, and the model records the size it was trained on.
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
from lambdanet.torchnet.data import PAD, augment, augment_plan
from lambdanet.torchnet.models import build_model, count_parameters
from tests.support.cnn import cifar_subset, plain_images, write_cifar_subset


@pytest.fixture
def services(home: Path):
    s = Services.open(Settings.from_env(notifier_url="console://"))
    yield s
    s.close()


def _rate(cfg: CNNConfig, step: int, total: int) -> float:
    """The documented triangle: up from 0 over the first ``warmup`` share of the steps, then down."""
    peak = max(1.0, cfg.warmup * total)
    if step <= peak:
        return cfg.learning_rate * step / peak
    return cfg.learning_rate * (total - step + 1) / (total - peak + 1)


FAST = CNNConfig(model="fast", epochs=2, batch_size=50, optimizer="sgd", learning_rate=0.05, momentum=0.9,
                 nesterov=True, weight_decay=5e-4, label_smoothing=0.2, lr_schedule="warmup_decay", warmup=0.3,
                 augment="flip", tta="flip", seed=4)


# bf16 on half the images: where the CPU has no bf16 instructions it is emulated, ~17x slower
@pytest.mark.parametrize(("precision", "n_train", "n_test"), [("fp32", 200, 100), ("bf16", 100, 50)])
def test_fast_recipe_k1_equals_a_plain_pytorch_loop(services: Services, tmp_path: Path, precision: str,
                                                    n_train: int, n_test: int) -> None:
    """bf16: the plain loop runs each forward pass under ``torch.autocast(bfloat16)`` with the
    model in channels_last, the loss in float32 — the recipe's documented numerics."""
    data = write_cifar_subset(tmp_path / "cifar", n_train=n_train, n_test=n_test)
    config = FAST.model_copy(update={"precision": precision})
    res = Driver(services).train(TrainRequest(data=str(data), config=config, model_name="fast", workers=1,
                                              strategy="data", store_url="memory://fast-recipe", executor="local"))
    assert res.status == "completed" and res.epochs_run == 2
    got = {k: np.asarray(v) for k, v in services.registry.load(res.model).weights.items()}

    x, y, xt, yt = cifar_subset(n_train=n_train, n_test=n_test)
    torch.set_num_threads(1)
    model = build_model("fast", n_classes=10, seed=FAST.seed)
    half = precision == "bf16"
    if half:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=FAST.learning_rate, momentum=0.9, nesterov=True, weight_decay=5e-4)
    m = len(y)
    steps = -(-m // FAST.batch_size)
    model.train()
    for epoch in (1, 2):
        perm = np.random.default_rng([FAST.seed, epoch]).permutation(m)
        rng = np.random.default_rng([FAST.seed, epoch, 1])
        rng.integers(0, 2 * PAD + 1, size=(2, m))  # the crop draws come first; "flip" never uses them
        mirrored = rng.random(m) < 0.5
        for i in range(steps):
            idx = perm[i * FAST.batch_size:(i + 1) * FAST.batch_size]
            xb = x[idx].copy()
            xb[mirrored[idx]] = xb[mirrored[idx]][:, :, ::-1]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
                logits = model(plain_images(xb)).float()
            loss = F.cross_entropy(logits, torch.from_numpy(y[idx].astype(np.int64)), label_smoothing=0.2)
            for group in opt.param_groups:
                group["lr"] = _rate(FAST, (epoch - 1) * steps + i + 1, 2 * steps)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch == 1:  # an epoch before the last is scored with one pass per image, no TTA
            model.eval()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
                one_pass = model(plain_images(xt)).float()
            first_loss = float(F.cross_entropy(one_pass, torch.from_numpy(yt.astype(np.int64))))
            model.train()
    want = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
        images = plain_images(xt)
        logits = ((model(images) + model(torch.flip(images, dims=(3,)))) / 2).float()  # flip test-time augmentation
    test_acc = float((logits.argmax(1).numpy() == yt).mean())
    assert res.test_accuracy == pytest.approx(test_acc, abs=1.5 / len(yt))
    test_loss = float(F.cross_entropy(logits, torch.from_numpy(yt.astype(np.int64))))  # of the averaged logits
    first, last = services.ledger.epochs(res.run_id)
    assert last.extra["test_loss"] == pytest.approx(test_loss, rel=1e-4) and last.extra["tta"] == "flip"
    assert first.extra["test_loss"] == pytest.approx(first_loss, rel=1e-4) and first.extra["tta"] == "none"


def test_the_augment_modes() -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(64, 8, 8, 3), dtype=np.uint8)
    idx = np.arange(64)
    assert augment_plan(64, seed=1, epoch=2, mode="none") is None
    flip_plan = augment_plan(64, seed=1, epoch=2, mode="flip")
    crop_plan = augment_plan(64, seed=1, epoch=2, mode="crop")
    assert flip_plan is not None and crop_plan is not None
    flipped = augment(x, flip_plan, idx)
    for k in range(64):  # "flip": the image or its mirror, never shifted
        assert np.array_equal(flipped[k], x[k]) or np.array_equal(flipped[k], x[k][:, ::-1])
    assert any(not np.array_equal(flipped[k], x[k]) for k in range(64))
    cropped = augment(x, crop_plan, idx)
    padded = np.pad(x, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
    for k in range(64):  # "crop": some 8x8 window of the zero-padded image, never mirrored
        windows = [padded[k, dy:dy + 8, dx:dx + 8] for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1)]
        assert any(np.array_equal(cropped[k], w) for w in windows)
        assert not np.array_equal(cropped[k], x[k][:, ::-1]) or np.array_equal(x[k], x[k][:, ::-1])


def test_translate_and_alternating_flip() -> None:
    """airbench94's augmentation: a window of the image reflect-padded by 2; a seeded half of the
    images mirrored in odd epochs and exactly the other half in even ones."""
    x = np.random.default_rng(1).integers(0, 256, size=(64, 8, 8, 3), dtype=np.uint8)
    idx = np.arange(64)
    plan = augment_plan(64, seed=5, epoch=3, mode="translate")
    assert plan is not None and not plan.flip.any()
    shifted = augment(x, plan, idx)
    rows = np.r_[2, 1, np.arange(8), 6, 5]  # reflect padding by 2: the border mirrored, edge not repeated
    padded = x[:, rows][:, :, rows]
    for k in range(64):
        windows = [padded[k, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(np.array_equal(shifted[k], w) for w in windows)
    assert any(not np.array_equal(shifted[k], x[k]) for k in range(64))
    flips = [augment_plan(64, seed=5, epoch=e, mode="altflip").flip for e in (1, 2, 3)]  # type: ignore[union-attr]
    assert 16 < flips[0].sum() < 48
    np.testing.assert_array_equal(flips[1], ~flips[0])
    np.testing.assert_array_equal(flips[2], flips[0])
    both = augment_plan(64, seed=5, epoch=2, mode="translate+altflip")
    assert both is not None and both.reflect and np.array_equal(both.flip, flips[1])
    mirrored = augment(x, augment_plan(64, seed=5, epoch=2, mode="altflip"), idx)  # type: ignore[arg-type]
    for k in range(64):  # centred: the image or its mirror
        assert np.array_equal(mirrored[k], x[k][:, ::-1] if flips[1][k] else x[k])


def test_cutout_lays_one_grey_square_inside_each_image_and_keeps_the_crops_and_flips() -> None:
    """airbench96's cutout: over the same crop and flip as without it, one 5x5 square of grey
    (128) wholly inside each 12x10 image, everything else untouched; the square's place is drawn
    per sample and per epoch, and a worker's slice gets its samples' squares."""
    x = np.random.default_rng(2).integers(0, 120, size=(200, 12, 10, 3), dtype=np.uint8)  # never 128
    idx = np.arange(200)
    plain = augment(x, augment_plan(200, seed=4, epoch=1, mode="translate+altflip"), idx)  # type: ignore[arg-type]
    plan = augment_plan(200, seed=4, epoch=1, mode="translate+altflip", cutout=5)
    assert plan is not None
    out = augment(x, plan, idx)
    corners = set()
    for k in range(200):  # a plain loop: where do the two images differ?
        grey = np.all(out[k] == 128, axis=2)  # (H, W)
        rows, cols = np.nonzero(grey)
        assert len(rows) == 25 and rows.max() - rows.min() == 4 and cols.max() - cols.min() == 4
        corners.add((int(rows.min()), int(cols.min())))
        keep = ~grey
        assert np.array_equal(out[k][keep], plain[k][keep])
    assert {r for r, _ in corners} == set(range(12 - 5 + 1)) and {c for _, c in corners} == set(range(10 - 5 + 1))
    halves = np.concatenate([augment(x[:70], plan, idx[:70]), augment(x[70:], plan, idx[70:])])
    assert np.array_equal(halves, out)
    again = augment(x, augment_plan(200, seed=4, epoch=2, mode="none", cutout=5), idx)  # type: ignore[arg-type]
    assert not np.array_equal(np.all(again == 128, axis=3), np.all(out == 128, axis=3))
    assert np.array_equal(again[again != 128], x[again != 128])  # mode "none": nothing but the square


def test_augment_values_and_the_old_booleans() -> None:
    base = {"model": "lenet", "epochs": 1}
    assert parse_config(base).augment == "crop+flip"  # the default for CNN configs
    assert parse_config({**base, "augment": True}).augment == "crop+flip"
    assert parse_config({**base, "augment": False}).augment == "none"
    with pytest.raises(ConfigError, match=r"augment: unknown value 'rotate' \(allowed: none, crop, flip, crop\+flip, "
                                          r"translate, altflip, translate\+flip, crop\+altflip, translate\+altflip\)"):
        parse_config({**base, "augment": "rotate"})
    with pytest.raises(ConfigError, match="nesterov: needs optimizer 'sgd' with momentum > 0"):
        parse_config({**base, "nesterov": True})


def test_the_models_take_any_size_and_the_fast_net_has_airbench_s_size() -> None:
    for name, side in (("lenet", 16), ("vgg11_bn", 32), ("fast", 8), ("airbench", 9)):
        model = build_model(name, n_classes=7, seed=0).eval()
        with torch.no_grad():
            for h, w in ((side, side), (side + 16, 2 * side + 8)):
                assert tuple(model(torch.zeros(2, 3, h, w)).shape) == (2, 7)
            with pytest.raises(RuntimeError):  # one pixel less: a pool gets an empty map
                model(torch.zeros(2, 3, side - 1, side - 1))
    assert 1.9e6 < count_parameters(build_model("fast", n_classes=10)) < 2.1e6  # airbench94: ~2 M
    assert 1.9e6 < count_parameters(build_model("airbench", n_classes=10)) < 2.1e6


def test_a_cnn_trains_on_images_that_are_not_32x32(services: Services, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    path = tmp_path / "odd.npz"
    np.savez(path, x=rng.integers(0, 256, (60, 40, 48, 3), dtype=np.uint8), y=np.arange(60) % 3,
             x_test=rng.integers(0, 256, (15, 40, 48, 3), dtype=np.uint8), y_test=np.arange(15) % 3,
             classes=np.array(["a", "b", "c"]))
    cfg = CNNConfig(model="fast", epochs=1, batch_size=20, optimizer="sgd", learning_rate=0.01)
    res = Driver(services).train(TrainRequest(data=str(path), config=cfg, model_name="odd", workers=1,
                                              strategy="data", store_url="memory://odd", executor="local"))
    assert res.status == "completed"
    meta = services.registry.load(res.model).metadata
    assert meta["input_shape"] == [40, 48, 3] and meta["classes"] == ["a", "b", "c"]


def test_flip_test_time_augmentation_scores_the_mean_logits_of_image_and_mirror() -> None:
    """LeNet (no global pooling: a mirror changes its logits) scored with ``tta="flip"`` gives the
    loss and hits of the averaged logits computed here — not those of the image alone."""
    from lambdanet.torchnet.train import evaluate_slice

    _, _, xt, yt = cifar_subset(n_train=200, n_test=100)
    model = build_model("lenet", n_classes=10, seed=1).eval()
    labels = torch.from_numpy(yt.astype(np.int64))
    with torch.no_grad():
        images = plain_images(xt)
        alone = model(images)
        mean = (alone + model(torch.flip(images, dims=(3,)))) / 2
    want_loss = float(F.cross_entropy(mean, labels, reduction="sum"))
    assert abs(want_loss - float(F.cross_entropy(alone, labels, reduction="sum"))) > 1e-3  # a mirror matters here
    correct, loss = evaluate_slice(model, xt, yt, torch.device("cpu"), tta="flip")
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert correct == float((mean.argmax(1) == labels).sum())


def test_a_run_stopped_before_its_last_epoch_is_scored_with_its_tta(services: Services, tmp_path: Path) -> None:
    """Epochs before the last are scored with one pass; a run that stops early (here: the loss
    threshold after epoch 1 of 3) still reports its model's accuracy under the config's ``tta``."""
    data = write_cifar_subset(tmp_path / "cifar", n_train=100, n_test=60)
    config = CNNConfig(model="lenet", epochs=3, batch_size=10, optimizer="adam", learning_rate=0.003,
                       augment="none", tta="flip", threshold=100.0, seed=2)
    res = Driver(services).train(TrainRequest(data=str(data), config=config, model_name="early", workers=1,
                                              strategy="data", store_url="memory://early", executor="local"))
    assert res.status == "completed" and res.epochs_run == 1
    assert services.ledger.epochs(res.run_id)[0].extra["tta"] == "none"
    model = build_model("lenet", n_classes=10)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                           services.registry.load(res.model).weights.items()})
    model.eval()
    _, _, xt, yt = cifar_subset(n_train=100, n_test=60)
    with torch.no_grad():
        images = plain_images(xt)
        alone = model(images).argmax(1).numpy()
        mirrored = (model(images) + model(torch.flip(images, dims=(3,)))).argmax(1).numpy()
    assert not np.array_equal(alone, mirrored)  # the two scorings differ on this model
    assert res.test_accuracy == pytest.approx(float((mirrored == yt).mean()))
    # the epoch's one-pass score is not what stands for the model: finish scored it again
    assert services.registry.load(res.model).metadata["evaluation"]["test_accuracy_method"] == "scored_at_finish"


def test_flip_translate_tta_scores_airbench_six_view_mean() -> None:
    """``tta="flip+translate"`` scores what airbench94's multi-crop evaluation computes, written here
    with numpy shifts: 1/2 the flip mean of the images, 1/4 each the flip means of the images
    moved one pixel up-left and down-right (reflect padding) — not the flip mean alone."""
    from lambdanet.torchnet.train import evaluate_slice, predict_logits

    _, _, xt, yt = cifar_subset(n_train=200, n_test=60)
    model = build_model("lenet", n_classes=10, seed=2).eval()
    labels = torch.from_numpy(yt.astype(np.int64))
    padded = np.pad(xt, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")  # (n, 34, 34, 3)
    views = [xt, padded[:, :32, :32], padded[:, 2:, 2:]]  # the image, shifted by (+1, +1) and (-1, -1)
    with torch.no_grad():
        flip_means = [(model(plain_images(v)) + model(plain_images(v[:, :, ::-1]))) / 2 for v in views]
    want = 0.5 * flip_means[0] + 0.25 * flip_means[1] + 0.25 * flip_means[2]
    want_loss = float(F.cross_entropy(want, labels, reduction="sum"))
    assert abs(want_loss - float(F.cross_entropy(flip_means[0], labels, reduction="sum"))) > 1e-3  # shifts matter
    assert float((flip_means[1] - flip_means[2]).abs().max()) > 1e-3  # and the two shifts differ
    with torch.no_grad():
        got = predict_logits(model, plain_images(xt), "flip+translate")
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)
    correct, loss = evaluate_slice(model, xt, yt, torch.device("cpu"), tta="flip+translate")
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert correct == float((want.argmax(1) == labels).sum())
