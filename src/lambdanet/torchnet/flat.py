"""Parameters, gradients and float buffers of a model as ONE flat float32 buffer.

Data-parallel workers exchange a single array per step (not one store key per tensor)::

    g = flat_grads(model)                  # float32 (P,) numpy, parameter order of model.parameters()
    g = collective.all_reduce(g, tag)      # summed over workers
    set_flat_grads(model, g)               # back into every p.grad (on the model's device)

Parameters that have no gradient (unused in the forward pass) contribute zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def _params(model: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in _params(model))


def flat_grads(model: nn.Module) -> np.ndarray:
    """float32 (P,) — every parameter's gradient, flattened and concatenated."""
    parts = [
        (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1) for p in _params(model)
    ]
    return torch.cat(parts).to("cpu", torch.float32).numpy()  # (P,)


def set_flat_grads(model: nn.Module, flat: np.ndarray) -> None:
    """Write a (P,) buffer back into every ``p.grad``."""
    _scatter(_params(model), flat, grads=True)


def flat_params(model: nn.Module) -> np.ndarray:
    """float32 (P,) — every parameter flattened and concatenated."""
    return torch.cat([p.detach().reshape(-1) for p in _params(model)]).to("cpu", torch.float32).numpy()


def set_flat_params(model: nn.Module, flat: np.ndarray) -> None:
    _scatter(_params(model), flat, grads=False)


def _float_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b for b in model.buffers() if b.is_floating_point()]


def flat_buffers(model: nn.Module) -> np.ndarray:
    """float32 (B,) — float buffers (batch-norm running mean/var); empty for LeNet."""
    bufs = _float_buffers(model)
    if not bufs:
        return np.zeros(0, np.float32)
    return torch.cat([b.reshape(-1) for b in bufs]).to("cpu", torch.float32).numpy()


def set_flat_buffers(model: nn.Module, flat: np.ndarray) -> None:
    bufs = _float_buffers(model)
    if bufs:
        _scatter(bufs, flat, grads=False)


def _scatter(tensors: Sequence[torch.Tensor], flat: np.ndarray, grads: bool) -> None:
    total = sum(t.numel() for t in tensors)
    if flat.shape != (total,):
        raise ValueError(f"flat buffer has shape {flat.shape}, the model needs ({total},)")
    src = torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32))
    offset = 0
    with torch.no_grad():
        for t in tensors:
            n = t.numel()
            part = src[offset : offset + n].view(t.shape).to(t.device, t.dtype)
            offset += n
            if grads:
                if t.grad is None:
                    t.grad = part.clone()
                else:
                    t.grad.copy_(part)
            else:
                t.copy_(part)
