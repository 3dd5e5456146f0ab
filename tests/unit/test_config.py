"""Config validation: itsacat's parameters.json verbatim, and one-line errors naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from lambdanet.config import CNNConfig, MLPConfig, itsacat_defaults, load_config, parse_config
from lambdanet.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_itsacat_parameters_json_verbatim() -> None:
    cfg = load_config(REPO / "examples" / "itsacat" / "parameters.json")
    assert isinstance(cfg, MLPConfig)
    assert cfg.epochs == 5000 and cfg.batch_size == 64 and cfg.threshold == 0.0019
    assert cfg.layer_dims(12288) == [12288, 20, 7, 5, 1]
    assert cfg.activation_list == ["relu", "relu", "relu", "sigmoid"]
    assert (cfg.dtype, cfg.optimizer, cfg.init, cfg.seed) == ("float32", "gd", "deep", 1)
    assert json.loads((REPO / "examples" / "itsacat" / "parameters.json").read_text()) == itsacat_defaults()


def test_config_is_frozen() -> None:
    cfg = parse_config(itsacat_defaults())
    with pytest.raises(ValidationError, match="frozen"):
        cfg.epochs = 3  # type: ignore[misc]


def test_overrides_replace_keys(tmp_path: Path) -> None:
    p = tmp_path / "parameters.json"
    p.write_text(json.dumps(itsacat_defaults()))
    cfg = load_config(p, {"epochs": 7, "batch_size": None, "seed": 3})
    assert (cfg.epochs, cfg.batch_size, cfg.seed) == (7, 64, 3)


def with_(**changes: object) -> dict:
    data = json.loads(json.dumps(itsacat_defaults()))
    for key, value in changes.items():
        if "__" in key:
            outer, inner = key.split("__")
            if value is None:
                data[outer].pop(inner)
            else:
                data[outer][inner] = value
        elif value is None:
            data.pop(key)
        else:
            data[key] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (with_(epoch=3), "parameters.json: unknown key 'epoch' (did you mean 'epochs'?)"),
        (with_(frobnicate=3),
         "parameters.json: unknown key 'frobnicate' (allowed: epochs, layers, activations, neurons, learning_rate, "
         "batch_size, threshold, seed, dtype, optimizer, init, report_every, beta, beta1, beta2, epsilon, image_size, "
         "sync_every, compress)"),
        # a typo makes its key both unknown and missing: the unknown key is named, with the key it misspells
        (with_(learning_rate=None, learnig_rate=0.1),
         "parameters.json: unknown key 'learnig_rate' (did you mean 'learning_rate'?)"),
        (with_(epochs=None), "parameters.json: missing required key 'epochs'"),
        (with_(learning_rate=0), "parameters.json: learning_rate: Input should be greater than 0 (got 0)"),
        (with_(learning_rate=-0.1), "parameters.json: learning_rate: Input should be greater than 0 (got -0.1)"),
        (with_(activations__layer2="swish"),
         "parameters.json: activations.layer2: 'swish' is not allowed for the hidden layer "
         "(allowed: relu, leaky_relu, tanh, sigmoid)"),
        (with_(activations__layer4="relu"),
         "parameters.json: activations.layer4: 'relu' is not allowed for the output layer (allowed: sigmoid, softmax)"),
        (with_(neurons__layer3=None),
         "parameters.json: neurons.layer3: missing (layers = 4 needs layer1, layer2, layer3, layer4)"),
        (with_(layers=3),
         "parameters.json: activations.layer4: unknown layer (layers = 3, allowed: layer1, layer2, layer3)"),
        (with_(neurons__layer4=2),
         "parameters.json: neurons.layer4: a sigmoid output layer has 1 neuron, got 2 "
         "(use softmax for several classes)"),
        (with_(neurons__layer1=0), "parameters.json: neurons.layer1: must be a positive integer, got 0"),
        (with_(optimizer="sgd"), "parameters.json: optimizer: Input should be 'gd', 'momentum' or 'adam' (got 'sgd')"),
        (with_(dtype="float16"), "parameters.json: dtype: Input should be 'float32' or 'float64' (got 'float16')"),
    ],
)
def test_config_errors_are_one_line_naming_the_key(tmp_path: Path, data: dict, message: str) -> None:
    p = tmp_path / "parameters.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.json: no such file; pass --params with a parameters.json"):
        load_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{epochs: 3")
    with pytest.raises(ConfigError, match=r"bad.json: not valid JSON \(.* at line 1 column 2\)$"):
        load_config(bad)
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"arr\.json: expected a JSON object, got list$"):
        load_config(arr)


def test_cnn_config_family() -> None:
    cfg = parse_config({"model": "lenet", "epochs": 10, "batch_size": 100, "learning_rate": 0.001,
                        "optimizer": "adam", "seed": 0})
    assert isinstance(cfg, CNNConfig) and cfg.kind == "cnn"
    allowed = r"'lenet', 'vgg11_bn', 'fast' or 'airbench'"
    with pytest.raises(ConfigError, match=rf"model: Input should be {allowed} \(got 'resnet'\)"):
        parse_config({"model": "resnet", "epochs": 1})
    assert parse_config({"model": "fast", "epochs": 1, "precision": "auto"}).precision == "auto"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"precision: Input should be 'fp32', 'bf16' or 'auto' \(got 'fp16'\)"):
        parse_config({"model": "fast", "epochs": 1, "precision": "fp16"})


def test_cnn_tta_values() -> None:
    assert parse_config({"model": "fast", "epochs": 1, "tta": "flip+translate"}).tta == "flip+translate"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"tta: Input should be 'none', 'flip' or 'flip\+translate' \(got 'crop'\)"):
        parse_config({"model": "fast", "epochs": 1, "tta": "crop"})
