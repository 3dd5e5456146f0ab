"""Shapes, parameter counts, seeded init and bad names of the CNN models; flat buffers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lambdanet.errors import ConfigError
from lambdanet.torchnet.flat import (
    flat_buffers,
    flat_grads,
    flat_params,
    param_count,
    set_flat_buffers,
    set_flat_grads,
    set_flat_params,
)
from lambdanet.torchnet.models import build_model, count_parameters


def test_lenet_forward_shape_and_size() -> None:
    model = build_model("lenet", seed=0)
    out = model(torch.zeros(4, 3, 32, 32))
    assert out.shape == (4, 10)
    # conv1 3*32*25+32, conv2 32*64*25+64, fc 1600*120+120, 120*84+84, 84*10+10
    assert count_parameters(model) == 2432 + 51264 + 192120 + 10164 + 850


def test_vgg11_bn_forward_backward_tiny_batch() -> None:
    model = build_model("vgg11_bn", seed=0)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    grads = flat_grads(model)
    assert grads.shape == (param_count(model),)
    assert np.isfinite(grads).all() and np.abs(grads).sum() > 0
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 8
    assert flat_buffers(model).size == 2 * (64 + 128 + 256 * 2 + 512 * 4)


def test_seeded_init_is_reproducible_and_seed_dependent() -> None:
    a, b, c = build_model("lenet", seed=3), build_model("lenet", seed=3), build_model("lenet", seed=4)
    assert np.array_equal(flat_params(a), flat_params(b))
    assert not np.array_equal(flat_params(a), flat_params(c))


def test_unknown_model_is_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown CNN model 'resnet'.*lenet, vgg11_bn"):
        build_model("resnet")


def test_flat_roundtrips() -> None:
    model = build_model("vgg11_bn", seed=1)
    p = flat_params(model)
    set_flat_params(model, p * 2)
    assert np.allclose(flat_params(model), p * 2)
    g = np.arange(p.size, dtype=np.float32)
    set_flat_grads(model, g)
    assert np.array_equal(flat_grads(model), g)
    b = np.full(flat_buffers(model).size, 0.25, np.float32)
    set_flat_buffers(model, b)
    assert np.array_equal(flat_buffers(model), b)
    with pytest.raises(ValueError, match="flat buffer has shape"):
        set_flat_grads(model, g[:-1])
