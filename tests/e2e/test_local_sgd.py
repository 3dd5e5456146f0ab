"""The ``data`` strategy's communication options against a plain loop written here: local SGD
(``sync_every`` H: each worker steps its own copy on its slice of every mini-batch with its own
optimizer, every H-th step of the run the copies are averaged) and 16-bit payloads
(``compress``: the parameter deltas rounded to fp16 / bf16 with error feedback on both legs).
Numpy MLP, K = 2 and 4, memory store and threads, one real redis-server run with a process per
worker; H = 1 without compression is the existing sharded path bit for bit; a run cut into a round
per epoch (every checkpoint mid-period) and a run retried from an in-round checkpoint equal the
undisturbed run bit for bit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdanet.config import MLPConfig
from lambdanet.data.readers import load_dataset, to_matrix, to_targets
from lambdanet.engine.driver import Driver, RunResult, TrainRequest
from lambdanet.engine.strategies.base import columns
from lambdanet.nn import mlp
from lambdanet.nn.batches import minibatches
from lambdanet.nn.losses import cost as batch_cost
from lambdanet.nn.optimizers import make_optimizer
from lambdanet.services import Services
from tests.conftest import RedisServer
from tests.e2e.engine_support import config, max_rel_diff, open_services, reference_run, small_data, weights_of


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("cats16"))  # 209 samples: 4 mini-batches of 64, 64, 64, 17


def fp16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(x.dtype)


def bf16(x: np.ndarray) -> np.ndarray:
    """Round to bfloat16 (nearest, ties to even) through the float32 bits, in 64-bit integers."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    top = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return (top << 16).astype(np.uint32).view(np.float32).astype(x.dtype)


ROUND = {"fp16": fp16, "bf16": bf16}


def plain_mean(deltas: list[np.ndarray], residuals: list[np.ndarray], block_residual: np.ndarray,
               rnd: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    """mean_k deltas[k], summed in worker order; with ``rnd`` each delta (plus its worker's residual)
    is rounded before the sum and the mean (plus ``block_residual``) after it, the residuals (updated
    in place) keeping what the rounding dropped."""
    sent = []
    for d, r in zip(deltas, residuals, strict=True):
        if rnd is not None:
            y = d + r
            d = rnd(y)
            r[...] = y - d
        sent.append(d)
    s = sent[0] + sent[1]
    for d in sent[2:]:
        s += d
    avg = s / len(sent)
    if rnd is not None:
        y = avg + block_residual
        avg = rnd(y)
        block_residual[...] = y - avg
    return avg


def plain_local_sgd(cfg: MLPConfig, data: Path, K: int) -> tuple[dict[str, np.ndarray], list[float]]:
    """K copies of the network, each with its own optimizer; worker k takes np.array_split's block
    k of every mini-batch (its mean gradient); after every ``sync_every``-th step of the run and the
    last one: anchor += mean_k (w_k - anchor) — each delta (plus the worker's residual) rounded,
    the sum in worker order / K rounded again (plus its residual) — and every copy := anchor."""
    ds = load_dataset(data)
    X = to_matrix(ds.x_train, cfg.dtype)
    Y = to_targets(ds.y_train, ds.n_classes, cfg.activation_list[-1], cfg.dtype)
    acts = cfg.activation_list
    init = mlp.init_params(cfg.layer_dims(X.shape[0]), acts, cfg.init, cfg.seed, cfg.dtype)
    keys = list(init)
    anchor = {key: v.copy() for key, v in init.items()}
    w = [{key: v.copy() for key, v in init.items()} for _ in range(K)]
    opts = [make_optimizer(cfg) for _ in range(K)]
    rnd = ROUND.get(cfg.compress)
    e = [{key: np.zeros_like(v) for key, v in init.items()} for _ in range(K)]  # each worker's residual
    b = {key: np.zeros_like(v) for key, v in init.items()}  # the averaged deltas' residual
    costs: list[float] = []
    step = 0
    for epoch in range(cfg.epochs):
        batches = minibatches(X.shape[1], cfg.batch_size, cfg.seed, epoch)
        total = 0.0
        for i, idx in enumerate(batches):
            for k, part in enumerate(np.array_split(idx, K)):
                if len(part):
                    Xk, Yk = columns(X, part), columns(Y, part)
                    AL, caches = mlp.forward(w[k], Xk, acts)
                    total += batch_cost(acts[-1], AL, Yk) * len(part) / len(idx)
                    opts[k].step(w[k], mlp.backward(w[k], caches, AL, Yk, acts))
            step += 1
            if step % cfg.sync_every and not (epoch + 1 == cfg.epochs and i + 1 == len(batches)):
                continue
            for key in keys:
                anchor[key] += plain_mean([w[k][key] - anchor[key] for k in range(K)], [e[k][key] for k in range(K)],
                                          b[key], rnd)
                for k in range(K):
                    w[k][key] = anchor[key].copy()
        costs.append(total / len(batches))
    return anchor, costs


def train(services: Services, data: Path, cfg: MLPConfig, workers: int, **request: Any) -> RunResult:
    res = Driver(services, retry_backoff_s=0.0).train(TrainRequest(
        data=str(data), config=cfg, workers=workers, strategy="data", collective_timeout_s=20, **request))
    assert res.status == "completed" and res.epochs_run == cfg.epochs
    return res


def costs_of(services: Services, res: RunResult) -> list[float]:
    return [r.cost for r in services.ledger.epochs(res.run_id)]


def assert_same_weights(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


CASES = [(2, 3, "none", "gd"), (4, 4, "none", "adam"), (4, 8, "none", "momentum"), (2, 1, "fp16", "gd"),
         (4, 4, "fp16", "adam"), (4, 5, "bf16", "momentum"), (2, 2, "bf16", "adam")]


@pytest.mark.parametrize(("workers", "H", "compress", "opt"), CASES)
def test_local_sgd_equals_the_plain_loop(home: Path, data: Path, workers: int, H: int, compress: str,
                                         opt: str) -> None:
    """Bit for bit (the same operations in the same order), in float64 and one float32 case."""
    dtype = "float32" if (workers, H) == (4, 4) else "float64"
    cfg = config(epochs=5, batch_size=64, optimizer=opt, learning_rate=0.01 if opt == "adam" else 0.05,
                 sync_every=H, compress=compress, dtype=dtype)
    want, want_costs = plain_local_sgd(cfg, data, workers)
    services = open_services()
    res = train(services, data, cfg, workers, epochs_per_round=2, store_url=f"memory://lsgd-{workers}-{H}-{opt}")
    assert_same_weights(weights_of(services, res), want)
    np.testing.assert_allclose(costs_of(services, res), want_costs, rtol=1e-12 if dtype == "float64" else 1e-6)


def test_h1_without_compression_is_the_sharded_path_bit_for_bit(home: Path, data: Path) -> None:
    base = config(epochs=4, batch_size=64, optimizer="adam", learning_rate=0.01)
    services = open_services()
    plain = train(services, data, base, 3, model_name="h1-plain")
    explicit = train(services, data, base.model_copy(update={"sync_every": 1, "compress": "none"}), 3,
                     model_name="h1-explicit")
    assert_same_weights(weights_of(services, explicit), weights_of(services, plain))
    assert costs_of(services, explicit) == costs_of(services, plain)
    assert max_rel_diff(weights_of(services, plain), reference_run(base, data).params) <= 1e-9


def test_fewer_bytes_through_the_store(home: Path, data: Path) -> None:
    """H = 4 moves about a quarter of H = 1's bytes; fp16 halves the averages' part again (the rest:
    the end-of-round state — parameters and the residuals — and small decisions: ~0.5 MB here)."""
    cfg = config(epochs=8, batch_size=64, dtype="float32")
    services = open_services()
    sent = {}
    for H, compress in ((1, "none"), (4, "none"), (4, "fp16")):
        res = train(services, data, cfg.model_copy(update={"sync_every": H, "compress": compress}), 2,
                    model_name=f"bytes-{H}-{compress}")
        sent[(H, compress)] = res.store_bytes
    assert 3.0 < sent[(1, "none")] / sent[(4, "none")] < 4.5
    assert sent[(4, "fp16")] < 0.75 * sent[(4, "none")]


@pytest.mark.parametrize("compress", ["none", "bf16"])
def test_a_round_per_epoch_mid_period_equals_one_round(home: Path, data: Path, compress: str) -> None:
    """H = 3 over 4 steps per epoch: every round ends mid-period (the workers' own parameters,
    optimizers and residuals cross the checkpoint) and the run ends bit-identical to one round."""
    cfg = config(epochs=5, batch_size=64, optimizer="adam", learning_rate=0.01, sync_every=3, compress=compress)
    services = open_services()
    one = train(services, data, cfg, 3, model_name=f"one-{compress}")
    cut = train(services, data, cfg, 3, epochs_per_round=1, model_name=f"cut-{compress}")
    assert cut.rounds == 5
    assert_same_weights(weights_of(services, cut), weights_of(services, one))
    assert costs_of(services, cut) == costs_of(services, one)
    assert_same_weights(weights_of(services, one), plain_local_sgd(cfg, data, 3)[0])


@pytest.mark.timeout(120)
def test_retry_from_an_in_round_checkpoint_mid_period(home: Path, data: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """In-round checkpoints every 8 epochs (K = 2); a raise after epoch 20 resumes from epoch 16 —
    step 64, mid-period for H = 3 — and the run ends bit-identical to the undisturbed one."""
    monkeypatch.setenv("LAMBDANET_FAULTS", "1")
    cfg = config(epochs=22, batch_size=64, optimizer="momentum", learning_rate=0.05, sync_every=3,
                 compress="fp16")
    services = open_services()

    def run(name: str, faults: list[dict[str, Any]]) -> RunResult:
        return Driver(services, faults=faults, retry_backoff_s=0.0).train(TrainRequest(
            data=str(data), config=cfg, workers=2, strategy="data", store_url=f"memory://{name}",
            executor="local", collective_timeout_s=20, checkpoint_seconds=1e-6, model_name=name))

    clean = run("lsgd-clean", [])
    hurt = run("lsgd-hurt", [{"round": 1, "attempt": 0, "worker": 1, "action": "raise", "after_epochs": 20}])
    assert clean.rounds == hurt.rounds == 1 and clean.retries == 0 and hurt.retries == 1
    log = services.ledger.get_run(hurt.run_id).metrics.get("retry_log") or []
    assert [e["from_epoch"] for e in log] == [16]
    assert_same_weights(weights_of(services, hurt), weights_of(services, clean))
    assert costs_of(services, hurt) == costs_of(services, clean)


@pytest.mark.redis
def test_redis_processes_equal_the_plain_loop(home: Path, data: Path, redis_server: RedisServer) -> None:
    cfg = config(epochs=4, batch_size=64, optimizer="adam", learning_rate=0.01, sync_every=3, compress="bf16")
    services = open_services()
    res = train(services, data, cfg, 2, store_url=redis_server.url, executor="process", epochs_per_round=3)
    assert res.rounds == 2 and res.store_bytes > 0
    assert_same_weights(weights_of(services, res), plain_local_sgd(cfg, data, 2)[0])
    import redis

    assert redis.Redis(port=redis_server.port).keys(f"ln:{res.run_id}:*") == []


# ---- the torch CNN ------------------------------------------------------------------------------
def plain_cnn_local_sgd(cfg: Any, x: np.ndarray, y: np.ndarray, K: int) -> dict[str, np.ndarray]:
    """K LeNets, each its own torch optimizer on np.array_split's block k of every mini-batch (mean
    loss of its slice); every ``sync_every`` steps of an epoch and at its end the flat parameters
    are averaged as in :func:`plain_local_sgd` (residuals float32, kept across epochs)."""
    import torch
    import torch.nn.functional as F

    from lambdanet.torchnet.data import augment, augment_plan, to_tensor
    from lambdanet.torchnet.data import minibatches as cnn_batches
    from lambdanet.torchnet.models import build_model
    from lambdanet.torchnet.train import make_optimizer as torch_optimizer

    models = [build_model(cfg.model, n_classes=10, seed=cfg.seed) for _ in range(K)]
    opts = [torch_optimizer(model, cfg) for model in models]

    def flat(model: torch.nn.Module) -> np.ndarray:
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()

    def load(model: torch.nn.Module, values: np.ndarray) -> None:
        at = 0
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.from_numpy(values[at:at + p.numel()]).view(p.shape))
                at += p.numel()

    rnd = ROUND.get(cfg.compress)
    n = flat(models[0]).size
    e = [np.zeros(n, np.float32) for _ in range(K)]
    b = np.zeros(n, np.float32)
    labels = torch.from_numpy(y.astype(np.int64))
    for epoch in range(1, cfg.epochs + 1):
        plan = augment_plan(len(y), cfg.seed, epoch, cfg.augment)
        batches = cnn_batches(len(y), cfg.batch_size, cfg.seed, epoch)
        anchor = flat(models[0])
        for i, idx in enumerate(batches):
            for k, part in enumerate(np.array_split(idx, K)):
                images = to_tensor(x[part] if plan is None else augment(x[part], plan, part))
                loss = F.cross_entropy(models[k](images), labels[part], label_smoothing=cfg.label_smoothing)
                opts[k].zero_grad(set_to_none=True)
                loss.backward()
                opts[k].step()
            if (i + 1) % cfg.sync_every and i + 1 < len(batches):
                continue
            anchor = anchor + plain_mean([flat(model) - anchor for model in models], e, b, rnd)
            for model in models:
                load(model, anchor)
    return {key: v.detach().numpy() for key, v in models[0].state_dict().items()}


@pytest.mark.timeout(300)
def test_cnn_local_sgd_equals_the_plain_loop_and_resumes_exactly(home: Path, tmp_path: Path) -> None:
    """LeNet, K = 2, SGD with momentum (local buffers), H = 3 over 4 steps per epoch, fp16: two
    epochs in one round equal two rounds bit for bit (worker 1's momentum and both residuals cross
    the checkpoint), and the plain loop within float32 tolerance (threads differ)."""
    from lambdanet.config import CNNConfig
    from tests.support.cnn import cifar_subset, write_cifar_subset

    data_file = write_cifar_subset(tmp_path, 200, 40)
    cfg = CNNConfig(model="lenet", epochs=2, batch_size=50, optimizer="sgd", learning_rate=0.05, momentum=0.9,
                    augment="crop+flip", seed=3, sync_every=3, compress="fp16")
    services = open_services()
    runs = {}
    for name, per_round in (("cnn-one", 2), ("cnn-cut", 1)):
        runs[name] = Driver(services).train(TrainRequest(
            data=str(data_file), config=cfg, model_name=name, workers=2, strategy="data",
            store_url=f"memory://{name}", executor="local", epochs_per_round=per_round))
        assert runs[name].status == "completed"
    assert (runs["cnn-one"].rounds, runs["cnn-cut"].rounds) == (1, 2)
    one, cut = weights_of(services, runs["cnn-one"]), weights_of(services, runs["cnn-cut"])
    assert_same_weights(cut, one)
    x, y, _, _ = cifar_subset(n_train=200, n_test=40)
    assert max_rel_diff(one, plain_cnn_local_sgd(cfg, x, y, 2)) <= 1e-4
