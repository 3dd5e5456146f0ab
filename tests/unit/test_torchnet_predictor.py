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


def test_a_model_scored_with_flip_tta_is_served_with_it(registry: ModelRegistry, trained) -> None:
    """The same weights registered with ``tta: "flip"`` answer the softmax of the mean logits of
    each image and its mirror (computed here with a plain module), as the test pass scored them."""
    from lambdanet.torchnet.models import build_model

    mv = registry.load("cifar-lenet")
    meta = {k: v for k, v in mv.metadata.items() if k not in ("name", "version", "created_at")}
    meta["config"] = {**meta["config"], "tta": "flip"}
    registry.register("cifar-lenet-tta", mv.weights, meta)
    x = cifar_subset(n_train=100, n_test=50)[2][:8]
    model = build_model("lenet", n_classes=10).eval()
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in mv.weights.items()})
    images = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        want = torch.softmax((model(images) + model(torch.flip(images, dims=(3,)))) / 2, dim=1).numpy()
    np.testing.assert_allclose(load_predictor(registry.load("cifar-lenet-tta")).predict_proba(x), want, atol=1e-6)
    assert not np.allclose(load_predictor(mv).predict_proba(x), want, atol=1e-4)  # without tta: the image alone


def test_a_model_scored_with_flip_translate_tta_is_served_with_it(registry: ModelRegistry, trained) -> None:
    """Registered with ``tta: "flip+translate"``, the weights answer the softmax of airbench's
    6-view mean (computed here with numpy shifts and a plain module)."""
    from lambdanet.torchnet.models import build_model

    mv = registry.load("cifar-lenet")
    meta = {k: v for k, v in mv.metadata.items() if k not in ("name", "version", "created_at")}
    meta["config"] = {**meta["config"], "tta": "flip+translate"}
    registry.register("cifar-lenet-tta6", mv.weights, meta)
    x = cifar_subset(n_train=100, n_test=50)[2][:8]
    model = build_model("lenet", n_classes=10).eval()
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in mv.weights.items()})
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    views = [x, padded[:, :32, :32], padded[:, 2:, 2:]]

    def flip_mean(v: np.ndarray) -> torch.Tensor:
        images = (torch.from_numpy(np.ascontiguousarray(v)).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
        return (model(images) + model(torch.flip(images, dims=(3,)))) / 2

    with torch.no_grad():
        logits = 0.5 * flip_mean(views[0]) + 0.25 * flip_mean(views[1]) + 0.25 * flip_mean(views[2])
    want = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(load_predictor(registry.load("cifar-lenet-tta6")).predict_proba(x), want, atol=1e-6)
