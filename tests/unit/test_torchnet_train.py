"""The data-parallel CNN loop: K = 2 over the engine's all-reduce on a memory store equals K = 1; a
checkpoint/resume equals an uninterrupted run; early stop; the stop vote keeps workers together."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest
import torch

from lambdanet.config import CNNConfig
from lambdanet.engine.collectives import Collective
from lambdanet.errors import ConfigError, DataError
from lambdanet.stores.memory import MemoryStore
from lambdanet.torchnet.checkpoint import load_bytes, load_state_arrays, save_bytes, state_arrays
from lambdanet.torchnet.flat import flat_params
from lambdanet.torchnet.lookahead import Lookahead
from lambdanet.torchnet.models import build_model
from lambdanet.torchnet.train import (
    TrainOutcome,
    configure_torch,
    make_optimizer,
    resolve_device,
    train_epochs,
)
from tests.support.cnn import cifar_subset


def _comm(store: MemoryStore, prefix: str, rank: int, size: int) -> Collective:
    return Collective(store, prefix, rank, size, timeout_s=60.0)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return cifar_subset(n_train=200, n_test=100)


def _run_k(cfg: CNNConfig, data, k: int, epochs: int) -> tuple[list[np.ndarray], list[TrainOutcome]]:
    store = MemoryStore.from_url(f"memory://torchnet-{uuid.uuid4().hex}")
    params: list[np.ndarray] = [np.zeros(0)] * k
    outcomes: list[TrainOutcome] = [TrainOutcome()] * k
    errors: list[BaseException] = []

    def work(rank: int) -> None:
        try:
            model = build_model(cfg.model, seed=cfg.seed)
            opt = make_optimizer(model, cfg)
            coll = _comm(store, "t", rank, k) if k > 1 else None
            outcomes[rank] = train_epochs(model, opt, data[0], data[1], cfg, epochs, coll,
                                          test=(data[2], data[3]))
            params[rank] = flat_params(model)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    configure_torch(threads=1 if k > 1 else None)
    threads = [threading.Thread(target=work, args=(r,)) for r in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    configure_torch()
    assert not errors, errors
    return params, outcomes


# SGD is linear in the gradient: K = 2 matches K = 1 to float32 rounding. Adam divides by
# sqrt(v): parameters whose gradients are ~0 amplify rounding differences of the summed slices
# (measured: max 2.7e-5 on 53 of 257k weights after 8 steps at lr 1e-3; norm ratio 1e-4).
@pytest.mark.parametrize(("optimizer", "atol"), [("adam", 1e-4), ("sgd", 1e-6)])
def test_k2_data_parallel_equals_k1(data, optimizer: str, atol: float) -> None:
    cfg = CNNConfig(model="lenet", epochs=2, batch_size=50, augment=True, seed=1, optimizer=optimizer)
    (p1,), (o1,) = _run_k(cfg, data, 1, 2)
    p2, o2 = _run_k(cfg, data, 2, 2)
    assert np.array_equal(p2[0], p2[1])  # identical updates everywhere
    moved = p1 - flat_params(build_model("lenet", seed=1))
    assert np.abs(moved).max() > 5e-4  # it did train
    np.testing.assert_allclose(p2[0], p1, rtol=0, atol=atol)
    assert np.linalg.norm(p2[0] - p1) <= 1e-3 * np.linalg.norm(moved)
    for a, b in zip(o1.epochs, o2[0].epochs, strict=True):
        assert a.loss == pytest.approx(b.loss, abs=1e-4)
        assert a.train_accuracy == pytest.approx(b.train_accuracy)
        assert a.test_accuracy == pytest.approx(b.test_accuracy)
    assert o1.epochs[-1].loss < o1.epochs[0].loss


def test_checkpoint_resume_equals_uninterrupted(data) -> None:
    cfg = CNNConfig(model="lenet", epochs=2, batch_size=50, augment=True, seed=2)
    configure_torch()
    full = build_model("lenet", seed=2)
    full_out = train_epochs(full, make_optimizer(full, cfg), data[0], data[1], cfg, 2)

    first = build_model("lenet", seed=2)
    opt = make_optimizer(first, cfg)
    train_epochs(first, opt, data[0], data[1], cfg, 1)
    blob = save_bytes(first, opt, {"epoch": "1"})
    resumed = build_model("lenet", seed=99)  # different init: everything must come from the blob
    opt2 = make_optimizer(resumed, cfg)
    assert load_bytes(blob, resumed, opt2) == {"epoch": "1"}
    out = train_epochs(resumed, opt2, data[0], data[1], cfg, 1, start_epoch=1)
    assert out.epochs[0].epoch == 2
    assert out.epochs[0].loss == pytest.approx(full_out.epochs[1].loss, abs=1e-6)
    np.testing.assert_allclose(flat_params(resumed), flat_params(full), rtol=0, atol=1e-6)


def test_state_arrays_roundtrip_includes_optimizer_and_bn() -> None:
    cfg = CNNConfig(model="vgg11_bn", epochs=1, optimizer="sgd")
    model = build_model("vgg11_bn", seed=0)
    opt = make_optimizer(model, cfg)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    arrays = state_arrays(model, opt)
    assert "model.features.1.running_mean" in arrays and "optim.0.momentum_buffer" in arrays
    other = build_model("vgg11_bn", seed=5)
    opt2 = make_optimizer(other, cfg)
    load_state_arrays(arrays, other, opt2)
    assert np.array_equal(flat_params(other), flat_params(model))
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"],
                       opt.state_dict()["state"][0]["momentum_buffer"])


def test_restored_state_keeps_the_channels_last_layout_of_the_weights() -> None:
    # a checkpoint is saved contiguous; restored beside channels_last weights, the momentum
    # buffers and the lookahead average must take the weights' strides (else every step's
    # update is a strided gather), with the same values
    cfg = CNNConfig(model="airbench", epochs=1, optimizer="sgd", lookahead=True)
    model = build_model("airbench", seed=0).to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    arrays = {**state_arrays(model, opt), **Lookahead.start(model).state_arrays()}
    other = build_model("airbench", seed=5).to(memory_format=torch.channels_last)
    opt2 = make_optimizer(other, cfg)
    load_state_arrays(arrays, other, opt2)
    look = Lookahead.from_state(arrays, other)
    convs = [p for p in other.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    trained = [(new, old) for new, old in zip(other.parameters(), model.parameters(), strict=True)
               if old in opt.state]  # (the frozen whitening filters have no optimizer state)
    assert any(new.dim() == 4 for new, _ in trained)
    for new, old in trained:
        buffer = opt2.state[new]["momentum_buffer"]
        assert buffer.stride() == new.stride()
        assert torch.equal(buffer, opt.state[old]["momentum_buffer"])
    weights = other.state_dict()
    for key, avg in look.average.items():
        assert avg.stride() == weights[key].stride() and torch.equal(avg, weights[key])


def test_bad_checkpoints_are_data_errors() -> None:
    lenet, vgg = build_model("lenet"), build_model("vgg11_bn")
    with pytest.raises(DataError, match="not a valid safetensors"):
        load_bytes(b"garbage", lenet, None)
    with pytest.raises(DataError, match="does not match the model"):
        load_bytes(save_bytes(vgg, None), lenet, None)


def test_threshold_stops_early(data) -> None:
    cfg = CNNConfig(model="lenet", epochs=5, batch_size=100, threshold=10.0)
    model = build_model("lenet", seed=0)
    out = train_epochs(model, make_optimizer(model, cfg), data[0][:100], data[1][:100], cfg, 5)
    assert out.stop_reason == "threshold" and len(out.epochs) == 1


def test_one_workers_stop_vote_stops_all(data) -> None:
    store = MemoryStore.from_url(f"memory://torchnet-{uuid.uuid4().hex}")
    cfg = CNNConfig(model="lenet", epochs=3, batch_size=50)
    outs: dict[int, TrainOutcome] = {}

    def work(rank: int) -> None:
        model = build_model("lenet", seed=0)
        outs[rank] = train_epochs(model, make_optimizer(model, cfg), data[0][:100], data[1][:100], cfg, 3,
                                  _comm(store, "v", rank, 2), should_stop=lambda: rank == 1)

    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [len(outs[r].epochs) for r in range(2)] == [1, 1]
    assert outs[0].stop_reason == outs[1].stop_reason == "budget"


def test_cuda_asked_but_unavailable_is_config_error() -> None:
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")


def _cpu_flags() -> set[str]:
    """This CPU's feature flags as the kernel lists them (the test's own reading, not torch's)."""
    from pathlib import Path

    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    pytest.skip("no /proc/cpuinfo flags on this machine")


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_bf16_instructions() -> None:
    """``precision: auto`` (the shipped CIFAR-10 recipes): bf16 autocast only on a CPU with AMX or
    AVX-512 BF16 — emulated bf16 trained the fast model 17x slower than fp32 on an AVX2 EPYC."""
    from lambdanet.torchnet.train import autocast, resolve_precision, training_layout

    cpu = torch.device("cpu")
    want = "bf16" if {"amx_tile", "avx512_bf16"} & _cpu_flags() else "fp32"
    assert resolve_precision("auto", cpu) == want
    assert (resolve_precision("fp32", cpu), resolve_precision("bf16", cpu)) == ("fp32", "bf16")  # as asked
    with autocast("auto", cpu):
        dtype = (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    assert dtype == (torch.bfloat16 if want == "bf16" else torch.float32)
    model = training_layout(build_model("fast", seed=0), CNNConfig(model="fast", epochs=1, precision="auto"))
    conv = next(p for p in model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) == (want == "bf16")
