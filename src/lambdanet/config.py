"""Typed, frozen training configs. Unknown keys are errors (as nanoGPT's configurator).

:class:`MLPConfig` accepts itsacat's ``parameters.json`` verbatim::

    {"epochs": 5000, "layers": 4,
     "activations": {"layer1": "relu", "layer2": "relu", "layer3": "relu", "layer4": "sigmoid"},
     "neurons": {"layer1": 20, "layer2": 7, "layer3": 5, "layer4": 1},
     "learning_rate": 0.0075, "batch_size": 64, "threshold": 0.0019}

plus optional ``seed``, ``dtype``, ``optimizer``, ``init``, ``report_every``, ``beta``/``beta1``/
``beta2``/``epsilon``. :class:`CNNConfig` is the same family for the PyTorch track
(``{"model": "lenet", "epochs": 10, "batch_size": 100, "learning_rate": 0.001, …}``).
:func:`load_config` reads either from a file and turns every validation failure into one
:class:`ConfigError` line naming the key and the allowed values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from lambdanet.errors import ConfigError

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "softmax")
HIDDEN_ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
OUTPUT_ACTIVATIONS = ("sigmoid", "softmax")
OPTIMIZERS = ("gd", "momentum", "adam")
COMPRESSIONS = ("none", "fp16", "bf16")  # the ``data`` strategy's collective payloads (``compress``)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


MAX_IMAGE_SIDE = 1024


def _image_size(value: Any) -> tuple[int, int] | None:
    """``image_size``: None, an int (a square side) or ``[height, width]``, each side 1…1024."""
    if value is None:
        return None
    sides = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(sides, (list, tuple)) or len(sides) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in sides)):
        raise ValueError(f"image_size: an integer or [height, width] of integers, got {value!r}")
    if not all(1 <= v <= MAX_IMAGE_SIDE for v in sides):
        raise ValueError(f"image_size: each side must be 1 to {MAX_IMAGE_SIDE} pixels, got {value!r}")
    return int(sides[0]), int(sides[1])


# every image is brought to this (height, width) before training and prediction; None: the data's own
ImageSize = Annotated[tuple[int, int] | None, BeforeValidator(_image_size)]


def _sync_every(value: Any) -> Any:
    """``sync_every``: an integer >= 1 (a float with no fractional part is taken as one)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"sync_every: must be an integer >= 1 (local steps between averages), got {value!r}")
    return value


def _compress(value: Any) -> Any:
    if value not in COMPRESSIONS:
        raise ValueError(f"compress: unknown value {value!r} (allowed: {', '.join(COMPRESSIONS)})")
    return value


# the ``data`` strategy's communication options (docs/engine.md, "Communication-efficient data
# training"): H local steps between parameter averages (1: every step, today's exact path) and
# the number format of what crosses the store
SyncEvery = Annotated[int, BeforeValidator(_sync_every)]
Compress = Annotated[Literal["none", "fp16", "bf16"], BeforeValidator(_compress)]


class MLPConfig(_Frozen):
    """A fully connected network trained with numpy (itsacat's parameters.json)."""

    epochs: int = Field(gt=0)
    layers: int = Field(gt=0)
    activations: dict[str, str]
    neurons: dict[str, int]
    learning_rate: float = Field(gt=0)
    batch_size: int = Field(default=64, gt=0)
    threshold: float = Field(default=0.0, ge=0)
    seed: int = 1
    dtype: Literal["float32", "float64"] = "float32"
    optimizer: Literal["gd", "momentum", "adam"] = "gd"
    init: Literal["deep", "he"] = "deep"
    report_every: int = Field(default=100, gt=0)
    beta: float = Field(default=0.9, ge=0, lt=1)  # momentum
    beta1: float = Field(default=0.9, ge=0, lt=1)  # adam
    beta2: float = Field(default=0.999, ge=0, lt=1)
    epsilon: float = Field(default=1e-8, gt=0)
    image_size: ImageSize = None
    sync_every: SyncEvery = 1  # ``data`` strategy: local steps between parameter averages
    compress: Compress = "none"  # ``data`` strategy: fp16 / bf16 collective payloads

    @model_validator(mode="after")
    def _check_layers(self) -> MLPConfig:
        expected = [f"layer{i}" for i in range(1, self.layers + 1)]
        for field_name in ("activations", "neurons"):
            table: dict[str, Any] = getattr(self, field_name)
            for key in table:
                if key not in expected:
                    raise ValueError(
                        f"{field_name}.{key}: unknown layer "
                        f"(layers = {self.layers}, allowed: {', '.join(expected)})"
                    )
            for key in expected:
                if key not in table:
                    raise ValueError(
                        f"{field_name}.{key}: missing (layers = {self.layers} needs "
                        f"{', '.join(expected)})"
                    )
        for i, key in enumerate(expected, start=1):
            act = self.activations[key]
            allowed = OUTPUT_ACTIVATIONS if i == self.layers else HIDDEN_ACTIVATIONS
            if act not in allowed:
                where = "output layer" if i == self.layers else "hidden layer"
                raise ValueError(
                    f"activations.{key}: '{act}' is not allowed for the {where} "
                    f"(allowed: {', '.join(allowed)})"
                )
            if self.neurons[key] <= 0:
                raise ValueError(f"neurons.{key}: must be a positive integer, got {self.neurons[key]}")
        out = self.activations[expected[-1]]
        if out == "sigmoid" and self.neurons[expected[-1]] != 1:
            raise ValueError(
                f"neurons.{expected[-1]}: a sigmoid output layer has 1 neuron, "
                f"got {self.neurons[expected[-1]]} (use softmax for several classes)"
            )
        return self

    @property
    def kind(self) -> str:
        return "mlp"

    @property
    def hidden_sizes(self) -> list[int]:
        return [self.neurons[f"layer{i}"] for i in range(1, self.layers + 1)]

    @property
    def activation_list(self) -> list[str]:
        return [self.activations[f"layer{i}"] for i in range(1, self.layers + 1)]

    def layer_dims(self, n_inputs: int) -> list[int]:
        """[n_x, n_1, …, n_L] — the sizes of every layer, inputs first."""
        return [n_inputs, *self.hidden_sizes]


AUGMENTS = ("none", "crop", "flip", "crop+flip", "translate", "altflip", "translate+flip", "crop+altflip",
            "translate+altflip")


def _augment(value: Any) -> Any:
    """``augment``: one of AUGMENTS; the older booleans read as "crop+flip" (true) / "none" (false)."""
    if isinstance(value, bool):
        return "crop+flip" if value else "none"
    if isinstance(value, str) and value not in AUGMENTS:
        raise ValueError(f"augment: unknown value {value!r} (allowed: {', '.join(AUGMENTS)})")
    return value


class CNNConfig(_Frozen):
    """A PyTorch CNN on RGB images (the CIFAR-10 track; any size and number of classes)."""

    model: Literal["lenet", "vgg11_bn", "fast", "airbench"]
    epochs: int = Field(gt=0)
    batch_size: int = Field(default=100, gt=0)
    learning_rate: float = Field(default=0.001, gt=0)  # the peak rate under a schedule
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = False  # SGD only, with momentum > 0
    weight_decay: float = Field(default=0.0, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    # "warmup_decay": per step, linear from 0 to learning_rate over the first `warmup` share of all
    # steps, then linear down to 0 at the last one — relative to `epochs`, so --epochs rescales it
    lr_schedule: Literal["constant", "warmup_decay"] = "constant"
    warmup: float = Field(default=0.0, ge=0, lt=1)
    # "warmup_decay" from lr_start x learning_rate up to it, then down to lr_end x learning_rate
    # (airbench94: 0.2 and 0.07; the defaults 0 and 0 give the plain triangle)
    lr_start: float = Field(default=0.0, ge=0, le=1)
    lr_end: float = Field(default=0.0, ge=0, le=1)
    # airbench94's lookahead: every 5 steps the weights move to their running average (decay
    # 0.95^5 x (step / total steps)^3) and the average is what training continues from
    lookahead: bool = False
    # test-time augmentation: "flip" averages the logits of x and its mirror; "flip+translate" also
    # those of x shifted one pixel up-left and down-right (airbench94's 6 views; train.predict_logits)
    tta: Literal["none", "flip", "flip+translate"] = "none"
    seed: int = 0
    # seeded per (seed, epoch, sample): random crop (zero pad 4) and/or horizontal flip
    # "translate" / "altflip": airbench94's 2-pixel reflect-padded shift / alternating flip
    augment: Annotated[Literal["none", "crop", "flip", "crop+flip", "translate", "altflip", "translate+flip",
                               "crop+altflip", "translate+altflip"], BeforeValidator(_augment)] = "crop+flip"
    # airbench96's cutout: a grey square of this side over each training image (0: none); it must
    # be smaller than the images' side (checked against the data)
    cutout: int = Field(default=0, ge=0, le=1024)
    threshold: float = Field(default=0.0, ge=0)  # early stop on the epoch's train loss
    report_every: int = Field(default=1, gt=0)
    limit_train: int | None = Field(default=None, gt=0)  # use the first N shuffled samples
    limit_test: int | None = Field(default=None, gt=0)
    device: str = Field(default="cpu", pattern=r"^(cpu|cuda(:[0-9]+)?)$")  # cuda is used only when asked
    image_size: ImageSize = None
    # "bf16": forward passes (training and scoring) under bfloat16 autocast; weights, gradients and
    # the optimizer stay float32. Pays on CPUs with AMX / AVX-512 BF16 and on GPUs; emulated (far
    # slower) elsewhere. "auto": bf16 exactly where the hardware has it, else fp32
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    sync_every: SyncEvery = 1  # local steps between parameter averages (1: all-reduce every step)
    compress: Compress = "none"  # fp16 / bf16 collective payloads

    @model_validator(mode="after")
    def _check_optimizer(self) -> CNNConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov: needs optimizer 'sgd' with momentum > 0")
        if self.lookahead and (self.sync_every != 1 or self.compress != "none"):
            raise ValueError("lookahead: needs sync_every 1 and compress 'none' (one model on every worker)")
        return self

    @property
    def kind(self) -> str:
        return "cnn"


TrainConfig = MLPConfig | CNNConfig


def format_validation_error(exc: ValidationError, source: str, model: type[BaseModel]) -> str:
    """The first validation problem as one line naming the key and what is allowed. An unknown
    key comes first (a typo also makes the key it misspells "missing"): it is named, with the
    known key it is closest to ("did you mean …?"), or the allowed keys where none is close."""
    import difflib

    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        known = list(model.model_fields) if len(err["loc"]) == 1 else []
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1, cutoff=0.75)
        if close:
            return f"{source}: unknown key '{loc}' (did you mean '{close[0]}'?)"
        allowed = ", ".join(model.model_fields)
        return f"{source}: unknown key '{loc}' (allowed: {allowed})"
    if kind == "missing":
        return f"{source}: missing required key '{loc}'"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        return f"{source}: {msg}"
    return f"{source}: {loc}: {msg} (got {err.get('input')!r})"


def parse_config(data: Any, source: str = "config") -> TrainConfig:
    """Validate a dict as a CNN config (if it names a ``model``) or an MLP config."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
    model: type[BaseModel] = CNNConfig if "model" in data else MLPConfig
    try:
        return model.model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, model)) from None


def read_json_file(path: str | Path, hint: str) -> Any:
    """The JSON in ``path``, or ConfigError with one line (``hint``: what to pass instead, e.g.
    "--params with a parameters.json")."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file; pass {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read it as UTF-8 text ({exc.__class__.__name__})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a JSON config file; ``overrides`` (CLI options that are not None) replace keys."""
    p = Path(path)
    data = read_json_file(p, "--params with a parameters.json")
    if isinstance(data, dict) and overrides:
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return parse_config(data, source=p.name)


def itsacat_defaults() -> dict[str, Any]:
    """itsacat's parameters.json, verbatim (used when no --params is given)."""
    return {
        "epochs": 5000,
        "layers": 4,
        "activations": {"layer1": "relu", "layer2": "relu", "layer3": "relu", "layer4": "sigmoid"},
        "neurons": {"layer1": 20, "layer2": 7, "layer3": 5, "layer4": 1},
        "learning_rate": 0.0075,
        "batch_size": 64,
        "threshold": 0.0019,
    }
