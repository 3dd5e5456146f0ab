"""CNNPredictor: a registered CNN model version that classifies uint8 images.

Usage::

    predictor = CNNPredictor(registry.load("cifar-lenet"), device="cpu")
    probs = predictor.predict_proba(images)       # uint8 (N, 32, 32, 3) -> float32 (N, 10)
    predictor.classes[int(probs[0].argmax())]     # "cat"

Normalisation (``x / 255``, mean 0.5 / std 0.5) happens inside, exactly as in training
(:func:`lambdanet.torchnet.data.to_tensor`); callers only fit photos to ``input_shape``
(:func:`lambdanet.data.images.photo_to_array`, the policy ``.fit`` names). A model trained with
``tta: "flip"`` (or ``"flip+translate"``) is answered as it was scored: the mean logits of each
image and its mirror (and of its one-pixel shifts, :func:`~lambdanet.torchnet.train.predict_logits`).
Serving computes in float32 whatever the training ``precision`` (bf16 pays only on some CPUs).
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from lambdanet.errors import ImageError, LambdanetError, ModelCorrupt
from lambdanet.registry import ModelVersion
from lambdanet.torchnet.checkpoint import load_state_tensors
from lambdanet.torchnet.data import to_tensor
from lambdanet.torchnet.models import build_model
from lambdanet.torchnet.train import predict_logits, resolve_device


class CNNPredictor:
    """Implements :class:`lambdanet.predictor.Predictor` for ``kind == "cnn"`` model versions."""

    def __init__(self, mv: ModelVersion, device: str = "cpu", batch_size: int = 256) -> None:
        meta = mv.meta  # typed metadata, parsed once by the registry
        self.name = mv.name
        self.version = mv.version
        ref = f"{mv.name}:{mv.version}"
        self.classes: list[str] = list(meta.classes)
        self.input_shape: tuple[int, int, int] = meta.input_shape or (32, 32, 3)
        self.fit: str = meta.preprocessing.fit  # the resize policy of lambdanet.data.images (center_crop)
        self.tta = str(meta.config.get("tta") or "none")  # test-time augmentation, as scored (predict_logits)
        arch = meta.architecture.model
        if meta.kind != "cnn":
            raise ModelCorrupt(f"model {ref} is a {meta.kind} model, not a CNN")
        if not arch or not self.classes:
            missing = "architecture.model" if not arch else "classes"
            raise ModelCorrupt(f"model {ref} is corrupt: model.json lacks {missing}; register it again")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        try:
            self.model = build_model(arch, n_classes=len(self.classes))
        except LambdanetError as exc:
            raise ModelCorrupt(f"model {ref} is corrupt: {exc}") from None
        tensors = {f"model.{k}": torch.from_numpy(np.array(v)) for k, v in mv.weights.items()}
        try:
            load_state_tensors(tensors, self.model, None)
        except (LambdanetError, RuntimeError, KeyError, ValueError) as exc:
            raise ModelCorrupt(f"model {ref} is corrupt: its weights do not fit {arch} ({exc})") from None
        self.model.to(self.device).eval()
        self._lock = threading.Lock()  # one forward at a time per model (servers call from threads)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) -> float32 (N, n_classes), rows summing to 1."""
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ImageError(
                f"model {self.name}:{self.version} takes uint8 images of shape "
                f"(N, {', '.join(map(str, self.input_shape))}), got {x.dtype} {tuple(x.shape)}"
            )
        out = []
        with self._lock, torch.inference_mode():
            for i in range(0, len(x), self.batch_size):
                logits = predict_logits(self.model, to_tensor(x[i : i + self.batch_size], self.device), self.tta)
                out.append(torch.softmax(logits, dim=1).to("cpu", torch.float32).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)
