"""The search space of ``lambdanet tune``: ``space.json`` parsed into Optuna distributions.

Usage::

    space = load_space(Path("space.json"), base)          # base: the parameters.json dict
    config = space.config_for(base, trial.params)         # a validated MLPConfig / CNNConfig

``space.json`` maps keys of the config (dotted for nested tables) to one range each::

    {"learning_rate": {"log_uniform": [1e-4, 1e-1]},
     "neurons.layer1": {"int": [8, 64]},
     "optimizer": {"choice": ["gd", "momentum", "adam"]},
     "batch_size": {"choice": [32, 64, 209]}}

Kinds: ``uniform`` [lo, hi], ``log_uniform`` [lo, hi] (lo > 0), ``int`` [lo, hi], ``log_int``
[lo, hi] (lo > 0) and ``choice`` [v, …] (JSON scalars). Every problem — an unknown key, an empty
range, a log range that reaches 0, a value that makes an invalid config — is one
:class:`~lambdanet.errors.ConfigError` line naming the key, before anything is written: each
range's ends and every choice are put into the base config and validated by the same frozen
config model as a training run (:func:`lambdanet.config.parse_config`).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from lambdanet.config import CNNConfig, MLPConfig, TrainConfig, parse_config, read_json_file
from lambdanet.errors import ConfigError

KINDS = ("uniform", "log_uniform", "int", "log_int", "choice")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def set_key(config: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``config`` with the dotted ``key`` set to ``value``."""
    out = copy.deepcopy(config)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"space: unknown key '{key}' ('{part}' is not a table of the config)")
        node = child
    node[parts[-1]] = value
    return out


def check_key(base: dict[str, Any], key: str) -> None:
    """``key`` names a field of the config model (top level) or an existing entry of a table."""
    model = CNNConfig if "model" in base else MLPConfig
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"space: bad key {key!r}; use a config key such as 'learning_rate' or 'neurons.layer1'")
    top = parts[0]
    if top not in model.model_fields:
        raise ConfigError(f"space: unknown key '{key}' (the {model.__name__} keys are: "
                          f"{', '.join(model.model_fields)})")
    if len(parts) == 1:
        if isinstance(base.get(top), dict):
            raise ConfigError(f"space: '{key}' is a table; search one of its entries, e.g. "
                              f"'{key}.{next(iter(base[top]), 'layer1')}'")
        return
    node: Any = base
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:i]) or "the config"
            known = ", ".join(map(str, node)) if isinstance(node, dict) else "none"
            raise ConfigError(f"space: unknown key '{key}' ({where} has: {known})")
        node = node[part]


def distribution(key: str, spec: Any) -> BaseDistribution:
    """One ``{"kind": args}`` entry of space.json as an Optuna distribution."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"space: '{key}' must be one {{kind: range}} object, e.g. "
                          f'{{"log_uniform": [1e-4, 0.1]}} (kinds: {", ".join(KINDS)})')
    kind, args = next(iter(spec.items()))
    if kind not in KINDS:
        raise ConfigError(f"space: '{key}': unknown kind '{kind}' (allowed: {', '.join(KINDS)})")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"space: '{key}': choice needs a non-empty list of values, got {args!r}")
        for v in args:
            if not (v is None or isinstance(v, str | bool) or _is_number(v)):
                raise ConfigError(f"space: '{key}': choice values must be JSON scalars, got {v!r}")
        if len({json.dumps(v) for v in args}) != len(args):
            raise ConfigError(f"space: '{key}': choice lists a value twice: {args!r}")
        return CategoricalDistribution(args)
    if not isinstance(args, list) or len(args) != 2 or not all(_is_number(v) for v in args):
        raise ConfigError(f"space: '{key}': {kind} needs [low, high] (two finite numbers), got {args!r}")
    lo, hi = args
    if lo > hi:
        raise ConfigError(f"space: '{key}': empty range [{lo}, {hi}] (low > high)")
    log = kind.startswith("log_")
    if log and lo <= 0:
        raise ConfigError(f"space: '{key}': a {kind} range must be above 0, got [{lo}, {hi}]; use 'uniform' "
                          f"or 'int' for ranges that reach 0")
    if kind in ("int", "log_int"):
        if not all(isinstance(v, int) for v in args):
            raise ConfigError(f"space: '{key}': an {kind} range takes whole numbers, got [{lo}, {hi}]")
        return IntDistribution(int(lo), int(hi), log=log)
    return FloatDistribution(float(lo), float(hi), log=log)


def _candidates(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution | FloatDistribution):
        return [dist.low, dist.high]
    return []  # pragma: no cover - the kinds above are the only ones built


@dataclass(frozen=True)
class Space:
    """The searched keys, in file order, each with its Optuna distribution; ``raw`` is the JSON."""

    distributions: dict[str, BaseDistribution]
    raw: dict[str, Any]

    def apply(self, base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        out = base
        for key, value in params.items():
            out = set_key(out, key, value)
        return out

    def config_for(self, base: dict[str, Any], params: dict[str, Any], source: str = "trial config") -> TrainConfig:
        """The trial's config, validated by the frozen config model (ConfigError if invalid)."""
        return parse_config(self.apply(base, params), source=source)


def parse_space(data: Any, base: dict[str, Any], source: str = "space") -> Space:
    """Validate ``data`` (space.json's content) against the ``base`` config dict."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object of key -> range, got {type(data).__name__}")
    if not data:
        raise ConfigError(f"{source}: the space is empty; name at least one key to search")
    parse_config(base, source="base config")  # the base itself must be valid
    dists: dict[str, BaseDistribution] = {}
    for key, spec in data.items():
        check_key(base, key)
        dists[key] = distribution(key, spec)
    for key, dist in dists.items():  # each end of a range / each choice, on the base config
        for value in _candidates(dist):
            try:
                parse_config(set_key(base, key, value), source="config")
            except ConfigError as exc:
                raise ConfigError(f"{source}: '{key}' = {value!r} makes an invalid config: "
                                  f"{str(exc).removeprefix('config: ')}") from None
    return Space(dists, dict(data))


def load_space(path: Path, base: dict[str, Any]) -> Space:
    data = read_json_file(path, "--space with a space.json")
    return parse_space(data, base, source=path.name)
