"""The registry of training strategies, keyed by (config kind, strategy name).

>>> strategy = get_strategy("mlp", "neuron")
>>> register_strategy("cnn", "data", "lambdanet.torchnet.strategy:TorchDataStrategy")

Entries are ``"module:Class"`` strings imported lazily, so the engine never imports torch for an
MLP run. The driver puts the resolved ``module:Class`` into every worker spec, so a strategy
registered at run time also works in a separate worker process (it is imported there by path).
The interface is :class:`lambdanet.engine.strategies.base.Strategy`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lambdanet.errors import ConfigError

if TYPE_CHECKING:  # base imports numpy; this registry stays light to import
    from lambdanet.engine.strategies.base import Strategy

STRATEGIES: dict[tuple[str, str], str] = {
    ("mlp", "neuron"): "lambdanet.engine.strategies.neuron:NeuronStrategy",
    ("mlp", "data"): "lambdanet.engine.strategies.data:DataStrategy",
    ("cnn", "data"): "lambdanet.torchnet.strategy:TorchDataStrategy",
}


DEFAULT_STRATEGY: dict[str, str] = {"mlp": "neuron", "cnn": "data"}  # itsacat's shape; CNNs are data parallel


def default_strategy(kind: str) -> str:
    """The strategy a run of ``kind`` uses when none is named."""
    return DEFAULT_STRATEGY.get(kind, "data")


def strategy_names(kind: str | None = None) -> list[str]:
    """The registered strategy names (for ``kind``, or for any kind), sorted."""
    return sorted({name for k, name in STRATEGIES if kind is None or k == kind})


def register_strategy(kind: str, name: str, target: str) -> None:
    """Add (or replace) the strategy ``name`` for configs of ``kind`` (``"module:Class"``)."""
    if ":" not in target:
        raise ValueError(f"strategy target must be 'module:Class', got {target!r}")
    STRATEGIES[(kind, name)] = target


def strategy_path(kind: str, name: str) -> str:
    """The ``module:Class`` of a strategy; a ConfigError naming the known ones otherwise."""
    target = STRATEGIES.get((kind, name))
    if target is None:
        known = ", ".join(sorted(n for k, n in STRATEGIES if k == kind)) or "none"
        raise ConfigError(f"unknown strategy '{name}' for a {kind} model (allowed: {known})")
    return target


def load_strategy(target: str) -> Strategy[Any]:
    """Import ``module:Class`` and return an instance."""
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"strategy {target} cannot be imported ({exc})") from exc
    strategy: Strategy[Any] = getattr(module, class_name)()
    return strategy


def get_strategy(kind: str, name: str) -> Strategy[Any]:
    return load_strategy(strategy_path(kind, name))
