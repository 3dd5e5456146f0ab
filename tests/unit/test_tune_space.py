"""space.json -> Optuna distributions, validated against the frozen config model (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from lambdanet.config import MLPConfig, itsacat_defaults
from lambdanet.errors import ConfigError
from lambdanet.tune.request import TuneRequest
from lambdanet.tune.space import parse_space

SPACE = {"learning_rate": {"log_uniform": [1e-4, 1e-1]}, "neurons.layer1": {"int": [8, 64]},
         "optimizer": {"choice": ["gd", "momentum", "adam"]}, "batch_size": {"choice": [32, 64, 209]}}


def test_the_issue_space_parses_into_optuna_distributions() -> None:
    space = parse_space(SPACE, itsacat_defaults())
    d = space.distributions
    assert d["learning_rate"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert d["neurons.layer1"] == IntDistribution(8, 64)
    assert d["optimizer"] == CategoricalDistribution(["gd", "momentum", "adam"])
    config = space.config_for(itsacat_defaults(), {"learning_rate": 0.01, "neurons.layer1": 33,
                                                   "optimizer": "adam", "batch_size": 32})
    assert isinstance(config, MLPConfig)
    assert config.neurons["layer1"] == 33 and config.neurons["layer2"] == 7  # the rest of the table kept
    assert config.optimizer == "adam" and config.learning_rate == 0.01 and config.batch_size == 32


@pytest.mark.parametrize(("space", "needle"), [
    ({"learning_rat": {"uniform": [0.1, 0.2]}}, "unknown key 'learning_rat'"),
    ({"neurons.layer9": {"int": [1, 4]}}, "unknown key 'neurons.layer9'"),
    ({"neurons": {"int": [1, 4]}}, "is a table"),
    ({"learning_rate": {"uniform": [0.2, 0.1]}}, "empty range"),
    ({"batch_size": {"choice": []}}, "non-empty list"),
    ({"learning_rate": {"log_uniform": [0, 0.1]}}, "above 0"),
    ({"learning_rate": {"log_uniform": [-1, 0.1]}}, "above 0"),
    ({"learning_rate": {"gaussian": [0, 1]}}, "unknown kind 'gaussian'"),
    ({"neurons.layer1": {"int": [1.5, 4]}}, "whole numbers"),
    ({"activations.layer4": {"choice": ["sigmoid", "relu"]}}, "'activations.layer4' = 'relu' makes an invalid config"),
    ({"optimizer": {"choice": ["adam", "sgd"]}}, "'optimizer' = 'sgd' makes an invalid config"),
    ({"batch_size": {"choice": [64, 0]}}, "'batch_size' = 0 makes an invalid config"),
    ({"learning_rate": {"uniform": [0, 0.1]}}, "'learning_rate' = 0.0 makes an invalid config"),
    ({}, "the space is empty"),
    ([1, 2], "expected a JSON object"),
])
def test_bad_spaces_are_one_config_error_line(space: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_space(space, itsacat_defaults())
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_request_options_are_checked_before_anything() -> None:
    ok = {"study": "s", "data": "x.h5", "base": itsacat_defaults(), "space": SPACE, "trials": 2}
    TuneRequest(**ok).check()
    for bad, needle in ((dict(trials=0), "--trials"), (dict(parallel=0), "--parallel"),
                        (dict(pruner="hyperband"), "unknown pruner"), (dict(validation_fraction=1.0), "between 0"),
                        (dict(study="bad name"), "invalid study name"),
                        (dict(executor="process"), "memory:// lives in one process")):
        with pytest.raises(ConfigError, match=needle):
            TuneRequest(**{**ok, **bad}).check()  # type: ignore[arg-type]
