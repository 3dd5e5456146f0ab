"""The ``neuron`` strategy (model parallel, itsacat's idea done right).

Worker k of K owns a contiguous block of rows of every ``W_l`` and ``b_l`` (and the optimizer
state of those rows). One training step on a batch ``Xb`` (n_x, mb):

* forward, hidden layer l: ``Z_l,k = W_l,k @ A_{l-1} + b_l,k`` (n_l,k, mb), ``A_l,k = g(Z_l,k)``,
  then ``A_l = all_gather(A_l,k)`` (n_l, mb) — every worker has the full activations;
* output layer: ``Z_L = all_gather(W_L,k @ A_{L-1} + b_L,k)``, ``AL = g_L(Z_L)`` (softmax needs
  every row) — the cost is then the same number on every worker, computed from the same AL;
* backward: ``dZ_L,k = AL_k - Y_k``; for l = L … 1: ``dW_l,k = dZ_l,k @ A_{l-1}ᵀ / mb``,
  ``db_l,k = Σ dZ_l,k / mb``; for l > 1 ``dA_{l-1} = all_reduce(W_l,kᵀ @ dZ_l,k)`` (summed in
  worker order) and ``dZ_{l-1,k} = dA_{l-1}[rows_k] * g'(Z_{l-1,k})``;
* each worker steps the optimizer on its own rows (optimizers are elementwise).

That is L-1 all-gathers + 1 gather of Z_L + L-1 all-reduces per step, all of them small (an
activation matrix); with K = 1 they are no-ops and the loop is the single-process one. A layer
with fewer rows than workers (itsacat's 1-neuron output) leaves some workers an empty block;
they still take part in the collectives.
"""

from __future__ import annotations

import time

import numpy as np

from lambdanet.config import MLPConfig
from lambdanet.engine.strategies import mlp_common
from lambdanet.engine.strategies.base import RoundContext, RoundReport, State, columns, row_block
from lambdanet.nn import activations as act
from lambdanet.nn import mlp
from lambdanet.nn.batches import minibatches
from lambdanet.nn.losses import cost as batch_cost
from lambdanet.nn.losses import output_delta
from lambdanet.nn.optimizers import make_optimizer


class NeuronStrategy(mlp_common.MLPStrategy):
    """Model-parallel training of an MLP: rows of every layer sharded over the workers."""

    name = "neuron"

    @staticmethod
    def _rows(config: MLPConfig, size: int, rank: int) -> dict[str, tuple[int, int]]:
        rows: dict[str, tuple[int, int]] = {}
        for l, n in enumerate(config.hidden_sizes, start=1):  # noqa: E741
            rows[f"W{l}"] = rows[f"b{l}"] = row_block(n, size, rank)
        return rows

    def run_round(self, ctx: RoundContext) -> RoundReport:
        cfg = mlp_common.round_config(ctx)
        comm, K, k = ctx.comm, ctx.size, ctx.rank
        X, Y = mlp_common.matrices(ctx, cfg, ctx.dataset)  # (n_x, m), (n_L, m)
        m = X.shape[1]
        acts = cfg.activation_list
        L = len(acts)
        out = acts[-1]
        rows = self._rows(cfg, K, k)
        r0L, r1L = rows[f"W{L}"]
        params, opt_state = mlp_common.split_state(mlp_common.shard_rows(ctx.state, rows))
        optimizer = make_optimizer(cfg)
        optimizer.load_state_dict(opt_state)
        W = [params[f"W{l}"] for l in range(1, L + 1)]  # noqa: E741  W[l-1]: (n_l,k, n_{l-1})
        b = [params[f"b{l}"] for l in range(1, L + 1)]  # noqa: E741  b[l-1]: (n_l,k, 1)
        costs: list[float] = []
        seconds: list[float] = []
        stop: str | None = None
        for epoch in range(ctx.start_epoch, ctx.end_epoch):
            t0 = time.perf_counter()
            batches = minibatches(m, cfg.batch_size, cfg.seed, epoch)
            total = 0.0
            for idx in batches:
                if len(batches) == 1:
                    Xb, Yb = X, Y
                else:
                    Xb, Yb = columns(X, idx), columns(Y, idx)  # (n_x, mb), (n_L, mb)
                mb = Xb.shape[1]
                # ---- forward: local rows, then everyone gets the full activations
                A_full = [Xb]  # A_full[l]: (n_l, mb)
                caches: list[mlp.Cache] = []
                for l in range(1, L):  # noqa: E741
                    c = mlp.layer_forward(W[l - 1], b[l - 1], A_full[-1], acts[l - 1])  # (n_l,k, mb)
                    caches.append(c)
                    A_full.append(c.A if K == 1 else np.concatenate(comm.all_gather(c.A), axis=0))
                Z_k = W[L - 1] @ A_full[-1]  # (n_L,k, mb)
                Z_k += b[L - 1]
                Z = Z_k if K == 1 else np.concatenate(comm.all_gather(Z_k), axis=0)  # (n_L, mb)
                AL = act.forward(out, Z)  # (n_L, mb), identical on every worker
                total += batch_cost(out, AL, Yb)
                # ---- backward: local dZ, dW, db; all-reduce of the W_kᵀ·dZ_k partials
                dZ = output_delta(out, AL[r0L:r1L], Yb[r0L:r1L])  # (n_L,k, mb)
                grads: dict[str, np.ndarray] = {}
                for l in range(L, 0, -1):  # noqa: E741
                    grads[f"W{l}"], grads[f"b{l}"] = mlp.linear_grads(dZ, A_full[l - 1], mb)
                    if l > 1:
                        partial = W[l - 1].T @ dZ  # (n_{l-1}, mb)
                        dA = comm.all_reduce(partial)  # (n_{l-1}, mb), same bits everywhere
                        a, z = rows[f"W{l - 1}"]
                        dZ = mlp.layer_backward(dA[a:z], caches[l - 2], acts[l - 2])  # (n_{l-1},k, mb)
                optimizer.step(params, grads)
            stop, go_on = mlp_common.close_epoch(ctx, cfg, epoch, total / len(batches), t0, costs, seconds,
                                                 lambda: mlp_common.join_state(params, optimizer))
            if not go_on:
                break
        return RoundReport(costs, seconds, stop, mlp_common.join_state(params, optimizer))

    def merge(self, config: MLPConfig, shards: list[State]) -> State:
        """Stack the row blocks of every per-parameter array in worker order."""
        full: State = {}
        for key, first in shards[0].items():
            if mlp_common.param_of(key) is None:
                full[key] = first
            else:
                full[key] = np.concatenate([s[key] for s in shards], axis=0)
        return full
