"""CNNPredictor from a registered version: probabilities, classification, metadata, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lambdanet.errors import ImageError
from lambdanet.objects.folder import FolderStore
from lambdanet.predictor import Predictor, load_predictor
from lambdanet.registry import ModelRegistry
from lambdanet.torchnet.data import CIFAR10_CLASSES
from tests.support.cnn import cifar_subset, train_tiny_lenet


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    return ModelRegistry(FolderStore(tmp_path_factory.mktemp("objects")))


@pytest.fixture(scope="module")
def trained(registry: ModelRegistry):
    # 100 images, 15 epochs: the LeNet starts to memorise them (training and serving agree)
    return train_tiny_lenet(registry, n_train=100, epochs=15, n_test=50)


def test_registered_version_has_cnn_metadata(registry: ModelRegistry, trained) -> None:
    mv = registry.load("cifar-lenet")
    assert mv.version == trained.version == 1
    meta = mv.metadata
    assert meta["kind"] == "cnn" and meta["architecture"] == {"model": "lenet"}
    assert meta["classes"] == CIFAR10_CLASSES and meta["input_shape"] == [32, 32, 3]
    assert meta["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and meta["preprocessing"]["std"] == [0.5] * 3
    assert set(meta["metrics"]) >= {"final_cost", "train_accuracy", "test_accuracy"}
    assert mv.weights["conv1.weight"].shape == (32, 3, 5, 5)


def test_predictor_classifies_the_images_it_learned(registry: ModelRegistry, trained) -> None:
    predictor = load_predictor(registry.load("cifar-lenet:1"))
    assert isinstance(predictor, Predictor)
    assert predictor.input_shape == (32, 32, 3) and predictor.classes == CIFAR10_CLASSES
    x, y, x_test, _ = cifar_subset(n_train=100, n_test=50)
    probs = predictor.predict_proba(x)
    assert probs.shape == (100, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    train_acc = float((probs.argmax(1) == y).mean())
    assert train_acc >= 0.4, train_acc  # chance is 0.1 (measured: 0.59)
    one = predictor.predict_proba(x_test[0])  # a single (H, W, C) image works too
    assert one.shape == (1, 10)
    np.testing.assert_allclose(one[0], predictor.predict_proba(x_test[:3])[0], atol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((1, 64, 64, 3), np.uint8), np.zeros((1, 32, 32, 3), np.float32)])
def test_wrong_image_shape_or_dtype_is_image_error(registry: ModelRegistry, trained, bad) -> None:
    predictor = load_predictor(registry.load("cifar-lenet"))
    with pytest.raises(ImageError, match=r"takes uint8 images of shape \(N, 32, 32, 3\)"):
        predictor.predict_proba(bad)


def test_weights_file_is_safetensors(registry: ModelRegistry, trained) -> None:
    blob = registry.objects.get("models/cifar-lenet/versions/1/weights.safetensors")
    from safetensors.numpy import load

    arrays = load(blob)
    assert arrays["fc3.weight"].shape == (10, 84)


def _registered_with_tta(registry: ModelRegistry, tta: str) -> tuple[str, torch.nn.Module]:
    """The trained LeNet's weights registered again with ``tta`` (its name) and as a plain module."""
    from lambdanet.torchnet.models import build_model

    mv = registry.load("cifar-lenet")
    meta = {k: v for k, v in mv.metadata.items() if k not in ("name", "version", "created_at")}
    meta["config"] = {**meta["config"], "tta": tta}
    name = f"cifar-lenet-{tta.replace('+', '-')}"
    registry.register(name, mv.weights, meta)
    model = build_model("lenet", n_classes=10).eval()
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in mv.weights.items()})
    return name, model


def _flip_mean(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    """The mean logits of uint8 images ``x`` (n, H, W, 3) and of their mirrors, by a plain module."""
    images = (torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        out: torch.Tensor = (model(images) + model(torch.flip(images, dims=(3,)))) / 2
    return out


def test_a_model_scored_with_flip_tta_is_served_with_it(registry: ModelRegistry, trained) -> None:
    """The same weights registered with ``tta: "flip"`` answer the softmax of the mean logits of
    each image and its mirror (computed here with a plain module), as the test pass scored them."""
    name, model = _registered_with_tta(registry, "flip")
    x = cifar_subset(n_train=100, n_test=50)[2][:8]
    want = torch.softmax(_flip_mean(model, x), dim=1).numpy()
    np.testing.assert_allclose(load_predictor(registry.load(name)).predict_proba(x), want, atol=1e-6)
    plain = load_predictor(registry.load("cifar-lenet"))
    assert not np.allclose(plain.predict_proba(x), want, atol=1e-4)  # without tta: the image alone


def test_a_model_scored_with_flip_translate_tta_is_served_with_it(registry: ModelRegistry, trained) -> None:
    """Registered with ``tta: "flip+translate"``, the weights answer the softmax of airbench's
    6-view mean (computed here with numpy shifts and a plain module)."""
    name, model = _registered_with_tta(registry, "flip+translate")
    x = cifar_subset(n_train=100, n_test=50)[2][:8]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")  # (n, 34, 34, 3)
    logits = 0.5 * _flip_mean(model, x) + 0.25 * _flip_mean(model, padded[:, :32, :32]) + 0.25 * _flip_mean(
        model, padded[:, 2:, 2:])
    want = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(load_predictor(registry.load(name)).predict_proba(x), want, atol=1e-6)
