"""MLPPredictor: classify uint8 images with a registered numpy MLP model version.

>>> p = MLPPredictor(mv)                     # mv: lambdanet.registry.ModelVersion (kind "mlp")
>>> probs = p.predict_proba(images)          # uint8 (N, H, W, C) -> (N, n_classes)

Photos are fitted to ``input_shape`` by the caller (:func:`lambdanet.data.images.photo_to_array`,
the policy ``preprocessing.fit`` names, read into ``.fit``); the rest of the model's
preprocessing happens here exactly as in training: flatten each image to a column,
divide by ``preprocessing.scale`` (255), optionally subtract ``mean`` / divide by ``std`` per
channel, then the forward pass. A sigmoid model returns ``[1 - p, p]`` per image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lambdanet.errors import ImageError, ModelCorrupt
from lambdanet.nn import mlp

if TYPE_CHECKING:
    from lambdanet.registry import ModelVersion

FIX = "register it again (lambdanet train)"


class MLPPredictor:
    """A :class:`lambdanet.predictor.Predictor` for ``kind: "mlp"`` model versions.

    Reads the version's typed metadata (``mv.meta``, parsed once by the registry); a version whose
    metadata lacks what an MLP needs or does not fit its weights raises
    :class:`~lambdanet.errors.ModelCorrupt` (a server-side error, HTTP 500).
    """

    def __init__(self, mv: ModelVersion) -> None:
        md = mv.meta
        self.name: str = mv.name
        self.version: int = int(mv.version)
        ref = f"{mv.name}:{mv.version}"
        arch = md.architecture
        missing = [key for key, value in (("architecture.layer_dims", arch.layer_dims),
                                          ("architecture.activations", arch.activations),
                                          ("input_shape", md.input_shape)) if not value]
        if md.kind != "mlp":
            raise ModelCorrupt(f"model {ref} is a {md.kind} model, not an MLP")
        if missing:
            raise ModelCorrupt(f"model {ref} is corrupt: model.json lacks {', '.join(missing)}; {FIX}")
        assert arch.layer_dims is not None and arch.activations is not None and md.input_shape is not None
        self.layer_dims: list[int] = list(arch.layer_dims)
        self.activations: list[str] = list(arch.activations)
        self.input_shape: tuple[int, int, int] = md.input_shape
        if len(self.layer_dims) != len(self.activations) + 1:
            raise ModelCorrupt(f"model {ref} is corrupt: {len(self.activations)} activations for "
                               f"{len(self.layer_dims) - 1} layers; {FIX}")
        self.dtype = np.dtype(md.dtype)
        pre = md.preprocessing
        self.fit: str = pre.fit  # the resize policy of lambdanet.data.images (center_crop)
        self.scale = float(pre.scale)
        self.mean = None if pre.mean is None else np.asarray(pre.mean, dtype=self.dtype)
        self.std = None if pre.std is None else np.asarray(pre.std, dtype=self.dtype)
        n_out = self.layer_dims[-1]
        n_classes = 2 if self.activations[-1] == "sigmoid" else n_out
        self.classes: list[str] = list(md.classes) if md.classes else [str(i) for i in range(n_classes)]
        if len(self.classes) != n_classes:
            raise ModelCorrupt(f"model {ref} is corrupt: metadata names {len(self.classes)} classes but the "
                               f"network outputs {n_classes}; {FIX}")
        if int(np.prod(self.input_shape)) != self.layer_dims[0]:
            raise ModelCorrupt(f"model {ref} is corrupt: input_shape {list(self.input_shape)} does not match "
                               f"the first layer's {self.layer_dims[0]} inputs; {FIX}")
        L = len(self.activations)
        try:
            self.params = {f"{k}{l}": np.asarray(mv.weights[f"{k}{l}"], dtype=self.dtype)
                           for l in range(1, L + 1) for k in ("W", "b")}  # noqa: E741
        except KeyError as exc:
            raise ModelCorrupt(f"model {ref} is corrupt: weights lack {exc.args[0]}; {FIX}") from None
        for l in range(1, L + 1):  # noqa: E741
            want = (self.layer_dims[l], self.layer_dims[l - 1])
            if self.params[f"W{l}"].shape != want:
                raise ModelCorrupt(f"model {ref} is corrupt: W{l} has shape {self.params[f'W{l}'].shape}, "
                                   f"expected {want}; {FIX}")
            if self.params[f"b{l}"].size != want[0]:
                raise ModelCorrupt(f"model {ref} is corrupt: b{l} has {self.params[f'b{l}'].size} values, "
                                   f"expected {want[0]}; {FIX}")
            self.params[f"b{l}"] = self.params[f"b{l}"].reshape(-1, 1)  # (n_l, 1)

    def matrix(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) -> the network's input (n_x, N), preprocessed as in training."""
        x = np.asarray(images)
        if x.ndim == len(self.input_shape):
            x = x[np.newaxis]  # one image
        if x.shape[1:] != self.input_shape:
            raise ImageError(f"images have shape {tuple(x.shape[1:])} but model {self.name}:{self.version} "
                             f"expects {self.input_shape}; fit them with lambdanet.data.images.photo_to_array")
        if x.dtype != np.uint8:
            raise ImageError(f"images must be uint8 pixels 0..255, got dtype {x.dtype}")
        n = x.shape[0]
        a = x.astype(self.dtype) / self.scale  # (N, H, W, C)
        if self.mean is not None:
            a -= self.mean
        if self.std is not None:
            a /= self.std
        return a.reshape(n, -1).T  # (n_x, N)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) -> (N, n_classes) probabilities, rows summing to 1."""
        AL = mlp.predict_proba(self.params, self.matrix(images), self.activations)  # (n_L, N)
        if self.activations[-1] == "sigmoid":
            p = AL[0]  # (N,)
            return np.stack([1 - p, p], axis=1)  # (N, 2)
        return np.ascontiguousarray(AL.T)  # (N, C)
