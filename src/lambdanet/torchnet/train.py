"""The collective-agnostic data-parallel training loop of the CNN track.

Usage::

    model = build_model("lenet", seed=cfg.seed)
    opt = make_optimizer(model, cfg)
    result = train_epochs(model, opt, x_uint8, y, cfg, epochs=2, collective=None,
                          test=(x_test, y_test))
    result.epochs[-1].loss, result.epochs[-1].test_accuracy, result.stop_reason

K = 1 (``collective=None`` or ``size == 1``) is a plain PyTorch step — forward, mean
cross-entropy, ``backward``, ``step`` — plus two tiny on-device additions for the epoch's running
loss and correct count, read once per epoch (no per-step host sync, no flat-gradient copies).

Worker ``rank`` of ``size > 1`` computes, for every mini-batch of ``B`` samples, the gradient of
``sum(cross_entropy over its slice) / B``; the flat gradient buffer (plus the slice's loss sum
and correct count) is all-reduced through ``collective`` — ONE buffer per step — so every worker
holds the full-batch gradient and takes the identical optimizer step. Mini-batch order comes
from ``default_rng([seed, epoch])`` and augmentation from ``(seed, epoch, sample index)``, so
K = 1 and K = 2 see the same inputs and reach the same weights within float32 tolerance (for
models without batch norm; with batch norm each worker normalises over its own slice, as
PyTorch's DistributedDataParallel does without SyncBatchNorm).

Local SGD / compression (``sync_every`` H > 1 or ``compress`` fp16 / bf16, K > 1): each worker
steps its own optimizer (its momentum / Adam moments stay local) with the mean gradient of its
slice, and after every H-th step of the epoch and after its last one the parameters are averaged
(:func:`lambdanet.engine.collectives.average` of ``w_k - w_sync``, 16-bit with error feedback
when compressed; the residuals live in :class:`LocalSync`). A period restarts every epoch, so
every epoch ends with one model on every worker (the test pass and the checkpoints see it); the
epoch's loss and correct count are one small all-reduce at its end.

At the end of every epoch (K > 1) batch-norm running statistics are averaged over the workers
first, so the test pass scores exactly the state that is checkpointed; then one all-reduce adds
up the test-set slices' correct counts and loss sums and carries each worker's "stop" vote (a
time budget), so all workers always agree on when to stop.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lambdanet.config import CNNConfig
from lambdanet.engine.collectives import Collective as EngineCollective
from lambdanet.engine.collectives import average, block_bounds
from lambdanet.engine.strategies.base import row_block
from lambdanet.errors import ConfigError
from lambdanet.torchnet.data import AugmentPlan, augment, augment_plan, minibatches, to_tensor
from lambdanet.torchnet.flat import (
    flat_buffers,
    flat_grads,
    flat_params,
    set_flat_buffers,
    set_flat_grads,
    set_flat_params,
)
from lambdanet.torchnet.lookahead import Lookahead
from lambdanet.torchnet.models import CHANNELS_LAST, ScaledParameterGroups


@runtime_checkable
class Collective(Protocol):
    """What the loop needs from the engine: a sum over workers, in worker-index order."""

    rank: int
    size: int

    def all_reduce(self, part: np.ndarray) -> np.ndarray:
        """The element-wise sum of ``part`` over all workers (the same bits on every worker).
        Every worker calls it the same number of times in the same order (the engine's
        :class:`lambdanet.engine.collectives.Collective` numbers the steps)."""


@dataclass
class EpochStats:
    epoch: int  # 1-based
    loss: float  # mean over the epoch's mini-batches of the batch loss (before the update)
    train_accuracy: float  # on the (augmented) training batches, before each update
    test_accuracy: float | None
    test_loss: float | None
    seconds: float
    images: int  # training images processed by all workers together
    tta: str = "none"  # the test-time augmentation the test pass used (the config's on the last epoch)

    def to_json(self) -> dict[str, float | int | str | None]:
        return asdict(self)


@dataclass
class LocalSync:
    """One worker's error-feedback residuals under ``compress`` (float32, the flat parameters' length
    and this worker's block of it); None until the first average, or as loaded from a checkpoint."""

    residual: np.ndarray | None = None
    block_residual: np.ndarray | None = None


def local_sgd(cfg: CNNConfig) -> bool:
    """Whether a K > 1 run takes local steps and averages parameters (else: all-reduced gradients)."""
    return cfg.sync_every > 1 or cfg.compress != "none"


@dataclass
class TrainOutcome:
    epochs: list[EpochStats] = field(default_factory=list)
    stop_reason: str = "epoch_limit"  # "epoch_limit" | "threshold" | "budget"


def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda`` (``cuda:N``); a clear error when CUDA is asked but unavailable."""
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        return torch.device(name)
    raise ConfigError(f"unknown device '{name}' (allowed: cpu, cuda, cuda:N)")


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity (``taskset``), capped by ``$OMP_NUM_THREADS``."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    return max(1, n)


def configure_torch(threads: int | None = None, device: str | torch.device = "cpu") -> None:
    """``threads`` intra-op threads (default: every usable core); on a GPU, deterministic
    algorithms and IEEE float32 (no TF32). Call it in the thread that trains.

    On the CPU the kernels these models use are deterministic for a given thread count already,
    and ``torch.use_deterministic_algorithms`` would import torch's compiler stack (seconds
    per process: docs/benchmarks.md) — so it is left alone there."""
    if torch.device(device).type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # IEEE float32 on GPUs (no TF32): K = 1 and K = 2 then agree within float32 tolerance
        for backend in (getattr(torch.backends.cudnn, "conv", None), torch.backends.cuda.matmul):
            with contextlib.suppress(AttributeError, RuntimeError):
                backend.fp32_precision = "ieee"  # type: ignore[union-attr]
    # always set: a new thread (the local executor's workers) may not inherit the setting
    torch.set_num_threads(max(1, threads if threads is not None else usable_cores()))


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA device that supports it, a CPU
    with AMX or AVX-512 BF16 instructions. Elsewhere bf16 autocast is emulated — measured 17x
    slower than float32 for the ``fast`` model on an AVX2-only AMD EPYC (docs/benchmarks.md)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without the probes: take the safe, never-slower choice
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"``: ``precision`` itself, or for ``"auto"`` bf16 exactly where the
    device has it in hardware (:func:`native_bf16`)."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """The forward pass's numeric context: bfloat16 autocast for ``precision`` ``"bf16"`` (and
    ``"auto"`` where :func:`native_bf16`; weights, gradients and optimizer state stay float32),
    else nothing."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def training_layout(model: nn.Module, cfg: CNNConfig) -> nn.Module:
    """``model`` in the memory layout that trains it fastest: channels_last for the models in
    :data:`~lambdanet.torchnet.models.CHANNELS_LAST` under bf16 (measured: docs/benchmarks.md),
    unchanged otherwise. The weights' values are the same either way."""
    if resolve_precision(cfg.precision, resolve_device(cfg.device)) == "bf16" and cfg.model in CHANNELS_LAST:
        out: nn.Module = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs omit memory_format
        return out
    return model


def make_optimizer(model: nn.Module, cfg: CNNConfig) -> torch.optim.Optimizer:
    """Adam or SGD over the trainable parameters; a :class:`ScaledParameterGroups` model's groups
    get ``learning_rate x scale`` and ``weight_decay / scale`` (each group keeps its ``lr_scale``)."""
    if isinstance(model, ScaledParameterGroups):
        scaled = model.parameter_groups()
    else:
        scaled = [([p for p in model.parameters() if p.requires_grad], 1.0)]
    groups: list[dict[str, object]] = [
        {"params": params, "lr": cfg.learning_rate * scale, "weight_decay": cfg.weight_decay / scale,
         "lr_scale": scale} for params, scale in scaled if params]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.learning_rate)
    return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=cfg.nesterov)


def learning_rate_at(cfg: CNNConfig, epoch: int, batch: int, batches: int) -> float:
    """The rate of step ``batch`` (0-based) of ``epoch`` (1-based) of ``batches`` steps: the
    config's ``learning_rate``, or under "warmup_decay" a triangle over all ``epochs × batches``
    steps — linear from ``lr_start`` x it up to it over the ``warmup`` share, then linear down
    towards ``lr_end`` x it, reached after the last step (the defaults 0 and 0: from 0, down to 0).
    A pure function of the step, so a resumed run steps exactly as an uninterrupted one."""
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    total = cfg.epochs * batches
    step = (epoch - 1) * batches + batch + 1  # 1 … total
    peak = max(1.0, cfg.warmup * total)
    if step <= peak:
        return cfg.learning_rate * (cfg.lr_start + (1 - cfg.lr_start) * step / peak)
    remaining = max(0.0, (total - step + 1) / max(1.0, total - peak + 1))
    return cfg.learning_rate * (cfg.lr_end + (1 - cfg.lr_end) * remaining)


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def _after_step(look: Lookahead | None, model: nn.Module, cfg: CNNConfig, epoch: int, batch: int,
                batches: int) -> None:
    """The lookahead average after step ``batch`` (0-based) of ``epoch`` (1-based), when the run has one."""
    if look is not None:
        look.after_step(model, (epoch - 1) * batches + batch + 1, cfg.epochs * batches)


def _rank_size(collective: Collective | None) -> tuple[int, int]:
    return (0, 1) if collective is None else (collective.rank, collective.size)


def _reduce(collective: Collective | None, buf: np.ndarray) -> np.ndarray:
    if collective is None or collective.size == 1:
        return buf
    return np.asarray(collective.all_reduce(buf), dtype=buf.dtype)


EVAL_BATCH = 250  # cache-sized: faster than 500-image batches for LeNet on CPU (docs/benchmarks.md)


def _mirrored_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The mean of the logits of ``images`` (b, C, H, W) and of their horizontal mirrors."""
    out: torch.Tensor = (model(images) + model(torch.flip(images, dims=(3,)))) / 2  # (b, classes)
    return out


def predict_logits(model: nn.Module, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """``model(images)`` under the test-time augmentation ``tta`` (``images``: normalised (b, C, H, W)):

    * ``"flip"``: the mean of the logits of the images and of their horizontal mirrors (2 passes);
    * ``"flip+translate"``: airbench94's multi-crop evaluation (6 passes) — half the flip mean of
      the images, a quarter each the flip means of the images shifted by one pixel up-left and
      down-right (reflect-padded, so no zeros enter).
    """
    if tta not in ("flip", "flip+translate"):  # "none" (and what a config never holds)
        logits: torch.Tensor = model(images)  # (b, classes)
        return logits
    mirrored = _mirrored_logits(model, images)
    if tta == "flip":
        return mirrored
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")  # (b, C, H+2, W+2)
    shifted = (_mirrored_logits(model, padded[:, :, :h, :w]) + _mirrored_logits(model, padded[:, :, 2:, 2:])) / 2
    return (mirrored + shifted) / 2


def evaluate_slice(
    model: nn.Module, x: np.ndarray, y: np.ndarray, device: torch.device, batch: int = EVAL_BATCH,
    tta: str = "none", precision: str = "fp32",
) -> tuple[float, float]:
    """(correct count, loss sum) of ``model`` on uint8 images ``x`` (n, H, W, C) and labels ``y``."""
    was_training = model.training
    model.eval()
    correct, loss = 0.0, 0.0
    with torch.inference_mode():
        for i in range(0, len(y), batch):
            with autocast(precision, device):
                logits = predict_logits(model, to_tensor(x[i : i + batch], device), tta).float()  # (b, C)
            yb = torch.from_numpy(y[i : i + batch]).to(device)
            loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += float((logits.argmax(1) == yb).sum())
    model.train(was_training)
    return correct, loss


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, device: str | torch.device = "cpu",
             tta: str = "none", precision: str = "fp32") -> float:
    """Accuracy of ``model`` on uint8 images ``x`` (n, H, W, C)."""
    correct, _ = evaluate_slice(model, x, y, torch.device(device), tta=tta, precision=precision)
    return correct / max(1, len(y))


def _batch_images(x: np.ndarray, idx: np.ndarray, plan: AugmentPlan | None, dev: torch.device) -> torch.Tensor:
    """The normalised float batch (b, C, H, W) of samples ``idx`` (augmented when ``plan``)."""
    xb = x[idx] if plan is None else augment(x[idx], plan, idx)  # uint8 (b, H, W, C)
    return to_tensor(xb, dev)


def _local_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: np.ndarray, labels: torch.Tensor,
                 batches: list[np.ndarray], plan: AugmentPlan | None, dev: torch.device,
                 cfg: CNNConfig, epoch: int, look: Lookahead | None) -> tuple[float, float]:
    """K = 1: the plain loop. Returns (sum of the batch losses, correct count), read once."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    for i, idx in enumerate(batches):
        yb = labels[idx]  # (b,)
        with autocast(cfg.precision, dev):
            logits = model(_batch_images(x, idx, plan, dev)).float()  # (b, C)
        loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)  # the batch mean
        if cfg.lr_schedule != "constant":
            _set_lr(opt, learning_rate_at(cfg, epoch, i, len(batches)))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        opt.step()
        _after_step(look, model, cfg, epoch, i, len(batches))
        loss_sum += loss.detach()
        correct += (logits.detach().argmax(1) == yb).sum()
    return float(loss_sum), float(correct)


def _parallel_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: np.ndarray, labels: torch.Tensor,
                    batches: list[np.ndarray], plan: AugmentPlan | None, dev: torch.device,
                    collective: Collective, cfg: CNNConfig, epoch: int,
                    look: Lookahead | None) -> tuple[float, float]:
    """K > 1: each worker its slice of every batch, one all-reduced flat buffer per step."""
    rank, size = collective.rank, collective.size
    loss_total, correct_total = 0.0, 0.0
    for i, idx in enumerate(batches):
        if cfg.lr_schedule != "constant":
            _set_lr(opt, learning_rate_at(cfg, epoch, i, len(batches)))
        lo, hi = row_block(len(idx), size, rank)
        mine = idx[lo:hi]  # this worker's slice of the batch (np.array_split's blocks)
        opt.zero_grad(set_to_none=True)
        loss_sum, correct = 0.0, 0.0
        if len(mine):
            yb = labels[mine]
            with autocast(cfg.precision, dev):
                logits = model(_batch_images(x, mine, plan, dev)).float()  # (b, C)
            batch_loss = F.cross_entropy(logits, yb, reduction="sum", label_smoothing=cfg.label_smoothing)
            (batch_loss / len(idx)).backward()  # type: ignore[no-untyped-call]
            loss_sum, correct = float(batch_loss.detach()), float((logits.detach().argmax(1) == yb).sum())
        buf = _reduce(collective, np.concatenate([flat_grads(model), np.array([loss_sum, correct], np.float32)]))
        set_flat_grads(model, buf[:-2])
        loss_total += float(buf[-2]) / len(idx)
        correct_total += float(buf[-1])
        opt.step()
        _after_step(look, model, cfg, epoch, i, len(batches))
    return loss_total, correct_total


def _local_sgd_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: np.ndarray, labels: torch.Tensor,
                     batches: list[np.ndarray], plan: AugmentPlan | None, dev: torch.device,
                     collective: Collective, cfg: CNNConfig, epoch: int, sync: LocalSync) -> tuple[float, float]:
    """K > 1, local SGD: each worker steps on its slice; every ``sync_every`` steps and at the
    epoch's end ``w := w_sync + mean_k (w_k - w_sync)``."""
    if not isinstance(collective, EngineCollective):
        raise ConfigError("sync_every / compress need the engine's collectives (reduce-scatter, all-gather)")
    rank, size = collective.rank, collective.size
    anchor = flat_params(model)  # (P,): w_sync, the same on every worker at the epoch's start
    if cfg.compress != "none" and (sync.residual is None or sync.residual.shape != anchor.shape):
        bounds = block_bounds(anchor.size, size)
        sync.residual = np.zeros_like(anchor)
        sync.block_residual = np.zeros(bounds[rank + 1] - bounds[rank], anchor.dtype)
    loss_total, correct_total = 0.0, 0.0
    for i, idx in enumerate(batches):
        if cfg.lr_schedule != "constant":
            _set_lr(opt, learning_rate_at(cfg, epoch, i, len(batches)))
        lo, hi = row_block(len(idx), size, rank)
        mine = idx[lo:hi]
        if len(mine):  # a worker with no sample in this batch takes no step
            opt.zero_grad(set_to_none=True)
            yb = labels[mine]
            with autocast(cfg.precision, dev):
                logits = model(_batch_images(x, mine, plan, dev)).float()  # (b, C)
            batch_loss = F.cross_entropy(logits, yb, reduction="sum", label_smoothing=cfg.label_smoothing)
            (batch_loss / len(mine)).backward()  # type: ignore[no-untyped-call]
            opt.step()
            loss_total += float(batch_loss.detach()) / len(idx)
            correct_total += float((logits.detach().argmax(1) == yb).sum())
        if (i + 1) % cfg.sync_every == 0 or i + 1 == len(batches):
            anchor += average(collective, flat_params(model) - anchor, cfg.compress, sync.residual,
                              sync.block_residual)
            set_flat_params(model, anchor)
    tail = _reduce(collective, np.array([loss_total, correct_total], np.float64))
    return float(tail[0]), float(tail[1])


def train_epochs(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    cfg: CNNConfig,
    epochs: int,
    collective: Collective | None = None,
    *,
    start_epoch: int = 0,
    device: str | torch.device = "cpu",
    test: tuple[np.ndarray, np.ndarray] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    sync: LocalSync | None = None,
    lookahead: Lookahead | None = None,
) -> TrainOutcome:
    """Train epochs ``start_epoch + 1 … start_epoch + epochs`` (fewer on threshold/budget stop).

    ``x``: uint8 (m, H, W, C), ``y``: int64 (m,) — the FULL training set on every worker (each
    takes its own slice of every mini-batch). ``should_stop`` is asked after every epoch; if any
    worker says yes, all stop (reason "budget"). ``sync``: the residuals of a compressed local-SGD
    run (kept across calls by the caller; a fresh one when None). ``lookahead``: the running
    average of a ``lookahead`` config (kept across calls by the caller; a fresh one when None).
    """
    if cfg.lookahead and lookahead is None:
        lookahead = Lookahead.start(model)
    look = lookahead if cfg.lookahead else None
    rank, size = _rank_size(collective)
    dev = torch.device(device)
    m = len(y)
    labels = torch.from_numpy(y.astype(np.int64, copy=False)).to(dev)  # (m,) once, indexed per step
    outcome = TrainOutcome()
    model.train()
    for epoch in range(start_epoch + 1, start_epoch + epochs + 1):
        t0 = time.perf_counter()
        plan = augment_plan(m, cfg.seed, epoch, cfg.augment, cfg.cutout)
        batches = minibatches(m, cfg.batch_size, cfg.seed, epoch)
        if collective is None or size == 1:
            loss_total, correct_total = _local_epoch(model, opt, x, labels, batches, plan, dev, cfg, epoch, look)
        elif local_sgd(cfg):
            sync = sync if sync is not None else LocalSync()
            loss_total, correct_total = _local_sgd_epoch(model, opt, x, labels, batches, plan, dev, collective, cfg,
                                                         epoch, sync)
        else:
            loss_total, correct_total = _parallel_epoch(model, opt, x, labels, batches, plan, dev, collective, cfg,
                                                        epoch, look)
            buffers = flat_buffers(model)  # batch-norm running statistics: averaged BEFORE the test pass
            if buffers.size:
                set_flat_buffers(model, _reduce(collective, buffers) / size)
        # epoch end: test accuracy and stop votes — one buffer
        # the run's last epoch is scored with the config's tta, the others with one pass per image:
        # airbench94's six views cost about a quarter of an epoch, every epoch (docs/cnn.md)
        tta = cfg.tta if epoch == cfg.epochs else "none"
        test_correct, test_loss = 0.0, 0.0
        if test is not None:
            lo, hi = row_block(len(test[1]), size, rank)
            test_correct, test_loss = evaluate_slice(model, test[0][lo:hi], test[1][lo:hi], dev, tta=tta,
                                                      precision=cfg.precision)
        vote = 1.0 if should_stop is not None and should_stop() else 0.0
        tail = _reduce(collective, np.array([test_correct, test_loss, vote], np.float64))
        n_test = len(test[1]) if test is not None else 0
        stats = EpochStats(
            epoch=epoch,
            loss=loss_total / len(batches),
            train_accuracy=correct_total / m,
            test_accuracy=float(tail[0]) / n_test if n_test else None,
            test_loss=float(tail[1]) / n_test if n_test else None,
            seconds=time.perf_counter() - t0,
            images=m,
            tta=tta,
        )
        outcome.epochs.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
        if cfg.threshold > 0 and stats.loss <= cfg.threshold:
            outcome.stop_reason = "threshold"
            break
        if tail[2] > 0 and epoch < start_epoch + epochs:
            outcome.stop_reason = "budget"
            break
    return outcome
