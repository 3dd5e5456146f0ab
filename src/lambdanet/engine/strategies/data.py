"""The ``data`` strategy (data parallel) for the numpy MLP.

Worker k of K holds the full parameters and optimizer state and owns a contiguous slice of
every mini-batch (``row_block`` of the batch's columns). One step: forward and backward on its
slice with the *whole* batch size as the normaliser (``mlp.backward(..., m_total=mb)``), then
one all-reduce of a single flat buffer holding every gradient and the slice's summed cost
(``cost · mb_k``); the sum is taken in worker order, so every worker applies the identical
update and sees the identical batch cost (``Σ / mb``). With K = 1 there is no buffer and no
collective: it is the single-process loop.
"""

from __future__ import annotations

import time

import numpy as np

from lambdanet.config import MLPConfig
from lambdanet.engine.strategies import mlp_common
from lambdanet.engine.strategies.base import RoundContext, RoundReport, State, columns, row_block
from lambdanet.nn import mlp
from lambdanet.nn.batches import minibatches
from lambdanet.nn.losses import cost as batch_cost
from lambdanet.nn.optimizers import make_optimizer


class DataStrategy(mlp_common.MLPStrategy):
    """Data-parallel training of an MLP: each worker a slice of every mini-batch."""

    name = "data"

    def run_round(self, ctx: RoundContext) -> RoundReport:
        cfg = mlp_common.round_config(ctx)
        comm, K, k = ctx.comm, ctx.size, ctx.rank
        X, Y = mlp_common.matrices(ctx, cfg, ctx.dataset)  # (n_x, m), (n_L, m)
        m = X.shape[1]
        acts = cfg.activation_list
        out = acts[-1]
        params, opt_state = mlp_common.split_state(ctx.state)
        optimizer = make_optimizer(cfg)
        optimizer.load_state_dict(opt_state)
        L = len(acts)
        # a fixed order (a safetensors load may list keys in any order, differently per process)
        keys = [f"{p}{l}" for l in range(1, L + 1) for p in ("W", "b")]  # noqa: E741 (W1, b1, …, WL, bL)
        sizes = [params[key].size for key in keys]
        offsets = np.cumsum([0, *sizes])
        dtype = params[keys[0]].dtype
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
                Xk, Yk = columns(X, idx[a:z]), columns(Y, idx[a:z])  # (n_x, mb_k), (n_L, mb_k)
                buf = np.empty(int(offsets[-1]) + 1, dtype=dtype)  # every gradient + the cost sum
                if z > a:
                    AL, caches = mlp.forward(params, Xk, acts)
                    buf[-1] = batch_cost(out, AL, Yk) * (z - a)
                    grads = mlp.backward(params, caches, AL, Yk, acts, m_total=mb)
                    for i, key in enumerate(keys):
                        buf[offsets[i]:offsets[i + 1]] = grads[key].ravel()
                else:  # more workers than samples in this batch
                    buf[:] = 0
                total_buf = comm.all_reduce(buf)
                total += float(total_buf[-1]) / mb
                grads = {key: total_buf[offsets[i]:offsets[i + 1]].reshape(params[key].shape)
                         for i, key in enumerate(keys)}
                optimizer.step(params, grads)
            stop, go_on = mlp_common.close_epoch(ctx, cfg, epoch, total / len(batches), t0, costs, seconds,
                                                 lambda: mlp_common.join_state(params, optimizer) if k == 0 else {})
            if not go_on:
                break
        shard = mlp_common.join_state(params, optimizer) if k == 0 else {}
        return RoundReport(costs, seconds, stop, shard)

    def merge(self, config: MLPConfig, shards: list[State]) -> State:
        """Every worker holds the same state; worker 0's is the one written."""
        return dict(shards[0])
