"""The ``data`` strategy (data parallel, with the optimizer step sharded) for the numpy MLP.

Worker k of K owns a contiguous slice of every mini-batch (``row_block`` of the batch's
columns). Every parameter and the batch cost sit side by side in one flat vector of n + 1
numbers (keys in the fixed order W1, b1, W2, …; the cost last), cut into K blocks
(:func:`~lambdanet.engine.collectives.block_bounds`); worker k owns block k of the optimizer
step and of the optimizer's state (ZeRO stage 1). One step:

1. forward and backward on its slice with the *whole* batch size as the normaliser
   (``mlp.backward(..., m_total=mb)``), writing the gradients straight into a flat buffer
   (n + 1,) that ends with the slice's summed cost (``cost · mb_k``);
2. ``reduce_scatter``: block k of the sum of every worker's buffer, added in worker order;
3. the optimizer steps block k of the parameters with it (optimizers are elementwise, so a
   block steps exactly as it would inside the whole vector); the owner of the last block also
   copies the summed cost into the parameters' last slot;
4. ``all_gather`` of the updated blocks: every worker holds every parameter again (the same
   bits everywhere) and the batch cost (``Σ / mb``), so every worker stops at the same epoch.

Against every worker stepping the whole vector after an all-reduce, each worker reads and
writes 1/K of the parameters in the step, keeps 1/K of the optimizer state and never
reassembles the summed gradient; the same numbers cross the store. With K = 1 there is no
buffer and no collective: it is the single-process loop.

What a worker hands back: its block of every optimizer slot (``opt.m.block``…), and worker 0
the parameters and the step count; :meth:`DataStrategy.merge` puts the slots back per
parameter, so a checkpoint holds the same keys as the other strategies'.

Local SGD and compression (``sync_every`` H > 1, or ``compress`` fp16 / bf16; K > 1): each
worker keeps the whole parameter vector and its OWN optimizer (Adam's moments, momentum's
velocity and the step count stay local — never averaged), and steps it on its slice of every
mini-batch with the slice's own mean gradient. After every H-th optimizer step of the run
(counted from epoch 0: step ``epoch · batches + i + 1``), after the run's last step and before a
threshold stop, the workers average: each sends ``Δ_k = w_k - w_sync`` (its parameters minus the
last average), ``reduce_scatter`` sums block k in worker order, the owner divides by K, the
blocks are all-gathered and every worker sets ``w_sync += mean Δ`` — the same bits everywhere.
With compression both legs carry 16-bit numbers with error feedback: worker k sends
``Δ_k + e_k`` rounded and keeps what the rounding dropped in ``e_k``; the owner of block k does the
same with its averaged block (``b_k``). A period may span epochs and rounds: the epoch cost is
one tiny all-reduce of the workers' slice costs per epoch (so every worker stops at the same
epoch), and a checkpoint taken mid-period holds every worker's own state —
``param.*``/``opt.*`` are worker 0's, ``local.{k}.param.*`` / ``local.{k}.opt.*`` worker k's,
``sync.param.*`` the last average (only mid-period: at a sync every worker holds it), and
``ef.{k}`` / ``ef.block.{k}`` the feedback residuals — so a resume continues the period exactly.
A worker whose state a checkpoint lacks (resumed with more workers) starts from the last average
and worker 0's optimizer state.
H = 1 with no compression is the sharded path above, bit for bit.
"""

from __future__ import annotations

import time

import numpy as np

from lambdanet.config import MLPConfig
from lambdanet.engine.collectives import average, block_bounds
from lambdanet.engine.strategies import mlp_common
from lambdanet.engine.strategies.base import RoundContext, RoundReport, State, columns, row_block
from lambdanet.nn import mlp
from lambdanet.nn.batches import minibatches
from lambdanet.nn.losses import cost as batch_cost
from lambdanet.nn.optimizers import Optimizer, make_optimizer

BLOCK = "block"  # the optimizer's key for a worker's block of the flat vector (opt.m.block, …)


def param_keys(n_layers: int) -> list[str]:
    """``W1, b1, …, WL, bL``: the order of the flat vector (a safetensors load may list keys in any
    order, differently per process)."""
    return [f"{p}{l}" for l in range(1, n_layers + 1) for p in ("W", "b")]  # noqa: E741


def _slots(opt_state: State) -> list[str]:
    """The optimizer's per-parameter slots in ``opt_state`` (``m``, ``v``, …), sorted."""
    return sorted({name.split(".", 1)[0] for name in opt_state if "." in name})


def block_state(opt_state: State, keys: list[str], lo: int, hi: int) -> State:
    """The optimizer state of elements ``[lo, hi)`` of the flat vector: ``{"t", "m.block", …}``."""
    out: State = {"t": opt_state["t"]} if "t" in opt_state else {}
    for slot in _slots(opt_state):
        flat = np.concatenate([np.asarray(opt_state[f"{slot}.{key}"]).reshape(-1) for key in keys])  # (n,)
        out[f"{slot}.{BLOCK}"] = flat[lo:hi]
    return out


class DataStrategy(mlp_common.MLPStrategy):
    """Data-parallel training of an MLP: each worker a slice of every mini-batch and a block of
    the optimizer step."""

    name = "data"

    def run_round(self, ctx: RoundContext) -> RoundReport:
        cfg = mlp_common.round_config(ctx)
        if ctx.size > 1 and (cfg.sync_every > 1 or cfg.compress != "none"):
            return LocalSGD(ctx, cfg).run()
        comm, K, k = ctx.comm, ctx.size, ctx.rank
        X, Y = mlp_common.matrices(ctx, cfg, ctx.dataset)  # (n_x, m), (n_L, m)
        m = X.shape[1]
        acts = cfg.activation_list
        out = acts[-1]
        params, opt_state = mlp_common.split_state(ctx.state)
        keys = param_keys(len(acts))
        offsets = np.cumsum([0, *(params[key].size for key in keys)])
        n = int(offsets[-1])  # parameters; the flat vectors hold one more number, the batch cost
        bounds = block_bounds(n + 1, K)
        lo, hi = bounds[k], bounds[k + 1]  # this worker's block
        own = min(hi, n)  # its parameters (the last block also carries the cost)
        optimizer = make_optimizer(cfg)
        optimizer.load_state_dict(opt_state if K == 1 else block_state(opt_state, keys, lo, own))
        flat = np.empty(n + 1, dtype=params[keys[0]].dtype)  # (n + 1,): every parameter, the cost
        for i, key in enumerate(keys):  # the parameters become views of the flat vector
            flat[offsets[i]:offsets[i + 1]] = params[key].reshape(-1)
            params[key] = flat[offsets[i]:offsets[i + 1]].reshape(params[key].shape)
        grad_buf = np.empty_like(flat)  # (n + 1,): every gradient, the slice's summed cost
        grad_views = {key: grad_buf[offsets[i]:offsets[i + 1]].reshape(params[key].shape)
                      for i, key in enumerate(keys)}  # backward writes the gradients here
        costs: list[float] = []
        seconds: list[float] = []
        stop: str | None = None
        for epoch in range(ctx.start_epoch, ctx.end_epoch):
            t0 = time.perf_counter()
            batches = minibatches(m, cfg.batch_size, cfg.seed, epoch)
            total = 0.0
            for idx in batches:
                mb = len(idx)
                if K == 1:
                    Xb, Yb = (X, Y) if len(batches) == 1 else (columns(X, idx), columns(Y, idx))
                    AL, caches = mlp.forward(params, Xb, acts)
                    total += batch_cost(out, AL, Yb)
                    optimizer.step(params, mlp.backward(params, caches, AL, Yb, acts))
                    continue
                a, z = row_block(mb, K, k)
                if z > a:
                    Xk, Yk = columns(X, idx[a:z]), columns(Y, idx[a:z])  # (n_x, mb_k), (n_L, mb_k)
                    AL, caches = mlp.forward(params, Xk, acts)
                    grad_buf[n] = batch_cost(out, AL, Yk) * (z - a)
                    mlp.backward(params, caches, AL, Yk, acts, m_total=mb, out=grad_views)
                else:  # more workers than samples in this batch
                    grad_buf[:] = 0
                # hold: grad_buf is next written after the all-gather returns, flat[lo:hi] after the
                # next reduce-scatter — so an in-process store shares both instead of copying them
                mine = comm.reduce_scatter(grad_buf, bounds, hold=True)  # (hi - lo,): block k of the sum
                optimizer.step({BLOCK: flat[lo:own]}, {BLOCK: mine[:own - lo]})
                if hi > n:
                    flat[n] = mine[-1]  # the batch's summed cost travels with the last block
                for j, block in enumerate(comm.all_gather(flat[lo:hi], hold=True)):
                    if j != k:
                        flat[bounds[j]:bounds[j + 1]] = block
                total += float(flat[n]) / mb
            stop, go_on = mlp_common.close_epoch(ctx, cfg, epoch, total / len(batches), t0, costs, seconds,
                                                 lambda: self._shard_of(k, K, params, optimizer))
            if not go_on:
                break
        return RoundReport(costs, seconds, stop, self._shard_of(k, K, params, optimizer))

    @staticmethod
    def _shard_of(rank: int, size: int, params: dict[str, np.ndarray], optimizer: Optimizer) -> State:
        """What a worker hands back: its block of every optimizer slot; worker 0 also the
        parameters (every worker holds the same) and the step count. K = 1: the whole state."""
        if size == 1:
            return mlp_common.join_state(params, optimizer)
        opt = {f"opt.{name}": v for name, v in optimizer.state_dict().items()}  # opt.t, opt.m.block, …
        if rank == 0:
            return {**{f"param.{key}": v for key, v in params.items()}, **opt}
        return {key: v for key, v in opt.items() if key != "opt.t"}

    def merge(self, config: MLPConfig, shards: list[State]) -> State:
        """The parameters and step count from worker 0; each optimizer slot's blocks side by side
        in worker order, cut back into one array per parameter. (Local SGD: every worker's keys
        are its own — ``local.{k}.…``, ``ef.{k}`` — and are kept as they are.)"""
        first = shards[0]
        state = {key: v for shard in shards for key, v in shard.items() if not key.endswith(f".{BLOCK}")}
        blocked = sorted(key for key in first if key.endswith(f".{BLOCK}"))
        if not blocked:
            return state
        keys = param_keys(len(config.activation_list))
        shapes = [first[f"param.{key}"].shape for key in keys]
        for name in blocked:  # opt.m.block -> opt.m.W1, opt.m.b1, …
            slot = name[len("opt."):-len(f".{BLOCK}")]
            flat = np.concatenate([s[name] for s in shards])  # (n,)
            start = 0
            for key, shape in zip(keys, shapes, strict=True):
                size = int(np.prod(shape))
                state[f"opt.{slot}.{key}"] = flat[start:start + size].reshape(shape)
                start += size
        return state


class LocalSGD:
    """One worker's round of local SGD / compressed averaging (see the module doc)."""

    def __init__(self, ctx: RoundContext, cfg: MLPConfig) -> None:
        self.ctx, self.cfg = ctx, cfg
        self.K, self.k = ctx.size, ctx.rank
        state = ctx.state
        self.keys = param_keys(len(cfg.activation_list))
        mine = f"local.{self.k}."
        own = self.k > 0 and f"{mine}opt.t" in state  # this worker's own state is in the checkpoint
        src = mine if own else ""
        shapes = [np.asarray(state[f"param.{key}"]).shape for key in self.keys]
        self.offsets = np.cumsum([0, *(int(np.prod(sh)) for sh in shapes)])
        n = int(self.offsets[-1])
        dtype = np.dtype(cfg.dtype)
        self.flat = np.empty(n, dtype=dtype)  # (n,): this worker's parameters
        self.params: dict[str, np.ndarray] = {}
        for i, (key, shape) in enumerate(zip(self.keys, shapes, strict=True)):
            # worker k's own; else the last average (mid-period: a worker that has not stepped since); else worker 0's
            name = next(c for c in (f"{mine}param.{key}", f"sync.param.{key}", f"param.{key}")
                        if c in state and (self.k > 0 or c == f"param.{key}"))
            self.flat[self.offsets[i]:self.offsets[i + 1]] = np.asarray(state[name]).reshape(-1)
            self.params[key] = self.flat[self.offsets[i]:self.offsets[i + 1]].reshape(shape)
        self.synced = f"sync.param.{self.keys[0]}" not in state  # at a sync point: every worker holds w_sync
        self.anchor = self.flat.copy() if self.synced else np.concatenate(
            [np.asarray(state[f"sync.param.{key}"], dtype=dtype).reshape(-1) for key in self.keys])  # w_sync
        self.optimizer = make_optimizer(cfg)
        cut = len(f"{src}opt.")
        self.optimizer.load_state_dict({name[cut:]: v for name, v in state.items() if name.startswith(f"{src}opt.")})
        self.bounds = block_bounds(n, self.K)
        lo, hi = self.bounds[self.k], self.bounds[self.k + 1]
        self.residual = self._saved(f"ef.{self.k}", n)  # e_k: what rounding dropped from Δ_k
        self.block_residual = self._saved(f"ef.block.{self.k}", hi - lo)  # b_k: … from the averaged block k

    def _saved(self, key: str, size: int) -> np.ndarray:
        got = self.ctx.state.get(key)
        if self.cfg.compress != "none" and got is not None and np.asarray(got).shape == (size,):
            return np.array(got, dtype=self.flat.dtype, copy=True)
        return np.zeros(size, dtype=self.flat.dtype)

    def sync(self) -> None:
        """Average the workers' parameters: ``w_sync += mean_k Δ_k`` (compressed with feedback)."""
        self.anchor += average(self.ctx.comm, self.flat - self.anchor, self.cfg.compress, self.residual,
                               self.block_residual)
        self.flat[:] = self.anchor
        self.synced = True

    def shard(self) -> State:
        """This worker's state: worker 0's under the usual keys, worker k's under ``local.{k}.``;
        parameters and ``sync.param.*`` only mid-period; residuals with compression."""
        pre = "" if self.k == 0 else f"local.{self.k}."
        out: State = {}
        if self.k == 0 or not self.synced:
            out.update({f"{pre}param.{key}": v.copy() for key, v in self.params.items()})
        out.update({f"{pre}opt.{name}": np.array(v, copy=True) for name, v in self.optimizer.state_dict().items()})
        if self.k == 0 and not self.synced:
            out.update({f"sync.param.{key}": self.anchor[self.offsets[i]:self.offsets[i + 1]].reshape(v.shape).copy()
                        for i, (key, v) in enumerate(self.params.items())})
        if self.cfg.compress != "none":
            out[f"ef.{self.k}"] = self.residual.copy()
            out[f"ef.block.{self.k}"] = self.block_residual.copy()
        return out

    def run(self) -> RoundReport:
        ctx, cfg, K, k = self.ctx, self.cfg, self.K, self.k
        X, Y = mlp_common.matrices(ctx, cfg, ctx.dataset)  # (n_x, m), (n_L, m)
        m = X.shape[1]
        acts = cfg.activation_list
        out = acts[-1]
        H = cfg.sync_every
        costs: list[float] = []
        seconds: list[float] = []
        stop: str | None = None
        for epoch in range(ctx.start_epoch, ctx.end_epoch):
            t0 = time.perf_counter()
            batches = minibatches(m, cfg.batch_size, cfg.seed, epoch)
            nb = len(batches)
            local = 0.0  # Σ over batches of (this slice's summed cost / batch size)
            for i, idx in enumerate(batches):
                mb = len(idx)
                a, z = row_block(mb, K, k)
                if z > a:  # a worker with no sample in this batch takes no step
                    Xk, Yk = columns(X, idx[a:z]), columns(Y, idx[a:z])  # (n_x, mb_k), (n_L, mb_k)
                    AL, caches = mlp.forward(self.params, Xk, acts)
                    local += batch_cost(out, AL, Yk) * (z - a) / mb
                    self.optimizer.step(self.params, mlp.backward(self.params, caches, AL, Yk, acts))
                    self.synced = False
                step = epoch * nb + i + 1  # optimizer steps of the run so far
                if step % H == 0 or (epoch + 1 == cfg.epochs and i + 1 == nb):
                    self.sync()
            cost = float(ctx.comm.all_reduce(np.array([local], dtype=np.float64))[0]) / nb
            if cfg.threshold > 0 and cost <= cfg.threshold and not self.synced:
                self.sync()  # the run ends here: one model
            stop, go_on = mlp_common.close_epoch(ctx, cfg, epoch, cost, t0, costs, seconds, self.shard)
            if not go_on:
                break
        return RoundReport(costs, seconds, stop, self.shard())
