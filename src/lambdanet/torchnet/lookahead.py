"""airbench94's lookahead weight averaging (Jordan 2024, after Zhang et al.'s Lookahead optimizer).

Usage::

    look = Lookahead.start(model)                 # or Lookahead.from_state(arrays, model)
    ...                                           # after optimizer step number `step` of `total`:
    look.after_step(model, step, total)           # every 5th step, and the last one
    arrays.update(look.state_arrays())            # "lookahead.<state_dict key>" for the checkpoint

Every :data:`EVERY` steps the model's float state (weights and batch-norm running statistics)
is pulled into a running average, ``avg := avg + (1 - decay) (w - avg)``, and the model
continues from the average (``w := avg``); ``decay = 0.95^5 x (step / total)^3`` grows from 0
(the average follows the weights) to 0.77 at the end. After the last step the model becomes the
average. A pure function of the step number, so a resumed run averages exactly as an
uninterrupted one (the average itself is saved with the checkpoint).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lambdanet.errors import DataError

EVERY = 5
PREFIX = "lookahead."


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


def decay_at(step: int, total: int) -> float:
    """The average's weight at step ``step`` (1-based) of ``total``."""
    return float(0.95**EVERY * (step / max(1, total)) ** 3)


class Lookahead:
    """The running average of one model's float state (see the module docstring)."""

    def __init__(self, average: dict[str, torch.Tensor]) -> None:
        self.average = average

    @classmethod
    def start(cls, model: nn.Module) -> Lookahead:
        """An average that starts at the model's current state."""
        return cls({k: v.detach().clone() for k, v in _float_state(model).items()})

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], model: nn.Module) -> Lookahead:
        """The average saved in a checkpoint's ``lookahead.*`` arrays, else a fresh start."""
        saved = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
        if not saved:
            return cls.start(model)
        current = _float_state(model)
        if set(saved) != set(current):
            raise DataError("checkpoint's lookahead average does not match the model")
        # empty_like keeps each tensor's layout (channels_last weights), so averaging is not strided
        return cls({k: torch.empty_like(v).copy_(torch.from_numpy(np.array(saved[k])).reshape(v.shape))
                    for k, v in current.items()})

    def after_step(self, model: nn.Module, step: int, total: int) -> None:
        """Average (every :data:`EVERY` steps) and, after the last step, hand the model the average."""
        if step % EVERY != 0 and step < total:
            return
        current = _float_state(model)
        with torch.no_grad():
            if step % EVERY == 0:
                weight = 1.0 - decay_at(step, total)
                for key, avg in self.average.items():
                    avg.lerp_(current[key], weight)
            for key, avg in self.average.items():
                current[key].copy_(avg)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {PREFIX + k: v.detach().to("cpu").numpy().copy() for k, v in self.average.items()}
