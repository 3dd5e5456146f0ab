"""The ``neuron`` strategy (model parallel: the model is split across the workers, not the data).

Where an image MLP's weights are: in ``W1``. itsacat's network [12288, 20, 7, 5, 1] holds
245,760 of its 245,912 weights there, and the first layer is nearly all of an epoch's work
(two products with the 12288 × m input). So worker k of K owns a contiguous block of the *input
features* — the columns ``c_k`` of ``W1`` (and of its optimizer state) — and reads only those
rows of the input; the narrow layers above (and ``b1``) are replicated: every worker computes
them from the same numbers. One training step on a batch ``Xb`` (n_x, mb):

* forward, layer 1: ``Z1 = all_reduce(W1[:, c_k] @ Xb[c_k]) + b1`` (n_1, mb) — the one
  collective of the step, summed in worker order, so every worker holds the same bits;
* layers 2 … L: the single-process forward pass (n_l, mb), identical on every worker, and so is
  the cost (every worker stops at the same epoch);
* backward: layers L … 2 and ``db1`` as the single-process loop; ``dW1[:, c_k] = dZ1 @
  Xb[c_k]ᵀ / mb`` — no collective;
* each worker steps the optimizer on its parameters (optimizers are elementwise).

Why features and not neurons: split by neurons (rows of every ``W_l``), every worker streams
the *whole* input through its rows of ``W1`` — K workers on one machine read it K times — and a
step needs 2L - 1 collectives (an all-gather per layer forward, an all-reduce per layer back).
Split by features, the K workers read the input once between them, and a step has one
all-reduce of an (n_1, mb) activation. The replicated layers assume every worker computes the
same bits from the same inputs — true for one numpy/BLAS build on one CPU type (threads,
processes, one Lithops runtime); the merged state takes worker 0's copy. With K = 1 the
all-reduce is a no-op and the loop is the single-process one, bit for bit; with more workers
than input features some workers own no columns and still take part in the all-reduce.
"""

from __future__ import annotations

import time

import numpy as np

from lambdanet.config import MLPConfig
from lambdanet.data.dataset import Dataset
from lambdanet.engine.strategies import mlp_common
from lambdanet.engine.strategies.base import RoundContext, RoundReport, State, columns, row_block
from lambdanet.errors import ConfigError
from lambdanet.nn import activations as act
from lambdanet.nn import mlp
from lambdanet.nn.batches import minibatches
from lambdanet.nn.losses import cost as batch_cost
from lambdanet.nn.losses import output_delta
from lambdanet.nn.optimizers import Optimizer, make_optimizer

SPLIT = "W1"  # the parameter split by columns (input features); every other array is replicated


def _is_split(key: str) -> bool:
    """``param.W1``, ``opt.m.W1``, ``opt.v.W1`` — the arrays with W1's columns."""
    return mlp_common.param_of(key) == SPLIT


def shard(state: State, size: int, rank: int) -> State:
    """Worker ``rank``'s part of the full ``state``: its columns of the W1 arrays, the rest whole."""
    n_x = state[f"param.{SPLIT}"].shape[1]
    c0, c1 = row_block(n_x, size, rank)
    return {k: v[:, c0:c1] if _is_split(k) else v for k, v in state.items()}


class NeuronStrategy(mlp_common.MLPStrategy):
    """Model-parallel training of an MLP: W1's input features split over the workers."""

    name = "neuron"

    def validate(self, config: MLPConfig, workers: int, dataset: Dataset) -> None:
        """The MLP checks, and no ``data``-strategy option: ``neuron`` has no local steps or
        compressed collectives, so ``sync_every`` ≠ 1 or ``compress`` ≠ none is refused, not ignored."""
        given = ([f"sync_every={config.sync_every}"] if config.sync_every != 1 else []) + (
            [f"compress={config.compress}"] if config.compress != "none" else [])
        if given:
            raise ConfigError(f"the neuron strategy takes no data-strategy option (got {', '.join(given)}): "
                              f"use --strategy data, or sync_every 1 and compress none")
        super().validate(config, workers, dataset)

    def run_round(self, ctx: RoundContext) -> RoundReport:
        cfg = mlp_common.round_config(ctx)
        comm, K, k = ctx.comm, ctx.size, ctx.rank
        X, Y = mlp_common.matrices(ctx, cfg, ctx.dataset)  # (n_x, m), (n_L, m)
        m = X.shape[1]
        c0, c1 = row_block(X.shape[0], K, k)
        Xk = X[c0:c1]  # (n_x,k, m): this worker's features, a view of contiguous rows
        acts = cfg.activation_list
        L = len(acts)
        out = acts[-1]
        params, opt_state = mlp_common.split_state(shard(ctx.state, K, k))
        optimizer = make_optimizer(cfg)
        optimizer.load_state_dict(opt_state)
        costs: list[float] = []
        seconds: list[float] = []
        stop: str | None = None
        for epoch in range(ctx.start_epoch, ctx.end_epoch):
            t0 = time.perf_counter()
            batches = minibatches(m, cfg.batch_size, cfg.seed, epoch)
            total = 0.0
            for idx in batches:
                if len(batches) == 1:
                    Xb, Yb = Xk, Y
                else:
                    Xb, Yb = columns(Xk, idx), columns(Y, idx)  # (n_x,k, mb), (n_L, mb)
                mb = Xb.shape[1]
                # ---- forward: layer 1 from every worker's features, then the replicated layers
                Z1 = comm.all_reduce(params["W1"] @ Xb)  # (n_1, mb), the same bits everywhere
                Z1 += params["b1"]
                caches = [mlp.Cache(Xb, Z1, act.forward(acts[0], Z1))]
                for l in range(2, L + 1):  # noqa: E741
                    caches.append(mlp.layer_forward(params[f"W{l}"], params[f"b{l}"], caches[-1].A, acts[l - 1]))
                AL = caches[-1].A  # (n_L, mb), identical on every worker
                total += batch_cost(out, AL, Yb)
                # ---- backward: the single-process one; dW1 only for this worker's columns
                dZ = output_delta(out, AL, Yb)  # (n_L, mb)
                grads: dict[str, np.ndarray] = {}
                for l in range(L, 0, -1):  # noqa: E741
                    grads[f"W{l}"], grads[f"b{l}"] = mlp.linear_grads(dZ, caches[l - 1].A_prev, mb)
                    if l > 1:
                        dA = params[f"W{l}"].T @ dZ  # (n_{l-1}, mb)
                        dZ = mlp.layer_backward(dA, caches[l - 2], acts[l - 2])  # (n_{l-1}, mb)
                optimizer.step(params, grads)
            stop, go_on = mlp_common.close_epoch(ctx, cfg, epoch, total / len(batches), t0, costs, seconds,
                                                 lambda: self._shard_of(k, params, optimizer))
            if not go_on:
                break
        return RoundReport(costs, seconds, stop, self._shard_of(k, params, optimizer))

    @staticmethod
    def _shard_of(rank: int, params: dict[str, np.ndarray], optimizer: Optimizer) -> State:
        """What a worker hands back: its W1 columns; worker 0 also the replicated arrays."""
        state = mlp_common.join_state(params, optimizer)
        return state if rank == 0 else {key: v for key, v in state.items() if _is_split(key)}

    def merge(self, config: MLPConfig, shards: list[State]) -> State:
        """W1's column blocks side by side in worker order; every other array from worker 0."""
        return {key: np.concatenate([s[key] for s in shards], axis=1) if _is_split(key) else first
                for key, first in shards[0].items()}
