"""The itsacat-style baseline, for the engine benchmark: ONE worker call per neuron per layer
per step, every value passing through the tensor store, as itsacat's NeuronLambda did.

Per full-batch epoch of the [n_x, 20, 7, 5, 1] network that is 33 forward calls (one per neuron:
``z = w·A_prev + b``, ``a = g(z)``) and 33 backward calls (``dZ = dA·g'(Z)``, ``dW``, ``db``, the
update of the neuron's weights and its ``wᵀ·dZ`` contribution to ``dA_prev``), launched layer by
layer through an Executor; the "trainer" (this module's :func:`run_baseline`) stacks the rows,
computes the cost and sums the ``dA`` contributions. Unlike itsacat it waits for every call
(no stale reads), so its numbers are correct — only its shape is itsacat's.

Keys: ``bl:{tag}:W{l}:{j}`` (1, n_prev), ``bl:{tag}:b{l}:{j}`` (1, 1), ``bl:{tag}:A{l}`` (n_l, m),
``bl:{tag}:Z{l}:{j}`` (1, m), ``bl:{tag}:dA{l}`` (n_l, m), ``bl:{tag}:P{l}:{j}`` (n_prev, m).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np

from lambdanet import adapters
from lambdanet.config import MLPConfig
from lambdanet.nn import activations as act
from lambdanet.nn import mlp
from lambdanet.nn.losses import cost as batch_cost
from lambdanet.ports.executor import Executor


def neuron_call(spec: dict[str, Any]) -> dict[str, Any]:
    """One neuron ``j`` of layer ``l``: ``phase`` "forward" or "backward" (see module docstring)."""
    store = adapters.open_store(spec["store_url"])
    try:
        p, l, j = spec["prefix"], int(spec["layer"]), int(spec["neuron"])  # noqa: E741
        w, b, A_prev = store.get_many([f"{p}:W{l}:{j}", f"{p}:b{l}:{j}", f"{p}:A{l - 1}"])
        if spec["phase"] == "forward":
            z = w @ A_prev + b  # (1, m)
            store.put(f"{p}:Z{l}:{j}", z)
            if not spec["output"]:
                store.put(f"{p}:a{l}:{j}", act.forward(spec["activation"], z))
        else:
            m = A_prev.shape[1]
            if spec["output"]:
                dz = store.get(f"{p}:dZ{l}")[j:j + 1]  # (1, m) = AL - Y, row j
            else:
                da = store.get(f"{p}:dA{l}")[j:j + 1]  # (1, m)
                z = store.get(f"{p}:Z{l}:{j}")
                dz = act.backward(spec["activation"], da, z, act.forward(spec["activation"], z))
            dw = dz @ A_prev.T / m  # (1, n_prev)
            db = dz.sum(axis=1, keepdims=True) / m
            if l > 1:
                store.put(f"{p}:P{l}:{j}", w.T @ dz)  # (n_prev, m) contribution to dA_{l-1}
            lr = float(spec["learning_rate"])
            store.put(f"{p}:W{l}:{j}", w - lr * dw)
            store.put(f"{p}:b{l}:{j}", b - lr * db)
        return {"ok": True, "bytes": store.bytes_in + store.bytes_out}
    finally:
        store.close()


def _launch(executor: Executor, specs: list[dict[str, Any]]) -> int:
    outcomes = executor.run(neuron_call, specs, timeout_s=600)
    bad = [o for o in outcomes if not o.ok]
    if bad:
        raise RuntimeError(f"baseline neuron call failed: {bad[0].error}")
    return sum(int((o.result or {}).get("bytes", 0)) for o in outcomes)


def run_baseline(config: MLPConfig, X: np.ndarray, Y: np.ndarray, store_url: str, executor: Executor,
                 epochs: int) -> dict[str, Any]:
    """Train ``epochs`` full-batch gd epochs the itsacat way; per-epoch seconds, calls, costs."""
    store = adapters.open_store(store_url)
    prefix = f"bl:{uuid.uuid4().hex[:8]}"
    acts = config.activation_list
    sizes = config.hidden_sizes
    L = len(sizes)
    params = mlp.init_params(config.layer_dims(X.shape[0]), acts, config.init, config.seed, config.dtype)
    for l in range(1, L + 1):  # noqa: E741
        for j in range(sizes[l - 1]):
            store.put(f"{prefix}:W{l}:{j}", params[f"W{l}"][j:j + 1])
            store.put(f"{prefix}:b{l}:{j}", params[f"b{l}"][j:j + 1])
    store.put(f"{prefix}:A0", X)
    base = {"store_url": store_url, "prefix": prefix, "learning_rate": config.learning_rate}
    seconds: list[float] = []
    costs: list[float] = []
    calls = 0
    moved = 0
    try:
        for _ in range(epochs):
            t0 = time.perf_counter()
            for l in range(1, L + 1):  # noqa: E741 - forward, one call per neuron
                specs = [{**base, "phase": "forward", "layer": l, "neuron": j, "activation": acts[l - 1],
                          "output": l == L} for j in range(sizes[l - 1])]
                moved += _launch(executor, specs)
                calls += len(specs)
                if l < L:
                    rows = store.get_many([f"{prefix}:a{l}:{j}" for j in range(sizes[l - 1])])
                    store.put(f"{prefix}:A{l}", np.vstack(rows))  # (n_l, m)
            Z = np.vstack(store.get_many([f"{prefix}:Z{L}:{j}" for j in range(sizes[-1])]))
            AL = act.forward(acts[-1], Z)
            costs.append(batch_cost(acts[-1], AL, Y))
            store.put(f"{prefix}:dZ{L}", AL - Y)
            for l in range(L, 0, -1):  # noqa: E741 - backward, one call per neuron
                specs = [{**base, "phase": "backward", "layer": l, "neuron": j, "activation": acts[l - 1],
                          "output": l == L} for j in range(sizes[l - 1])]
                moved += _launch(executor, specs)
                calls += len(specs)
                if l > 1:
                    parts = store.get_many([f"{prefix}:P{l}:{j}" for j in range(sizes[l - 1])])
                    dA = parts[0].copy()
                    for part in parts[1:]:
                        dA += part
                    store.put(f"{prefix}:dA{l - 1}", dA)  # (n_{l-1}, m)
            seconds.append(time.perf_counter() - t0)
        moved += store.bytes_in + store.bytes_out
        return {"seconds": seconds, "costs": costs, "calls": calls, "bytes": moved}
    finally:
        store.delete_prefix(prefix + ":")
        store.close()
