"""The CIFAR-10 CNN track: PyTorch models trained by lambdanet's engine and served like the MLP.

Modules:

- :mod:`.models`      the wide LeNet, VGG11-bn, ``fast`` and ``airbench`` (``build_model(name)``)
- :mod:`.data`        CIFAR-10 loading, normalisation (mean 0.5 / std 0.5), random crop + flip
- :mod:`.flat`        parameters / gradients as one flat float32 buffer (one all-reduce per step)
- :mod:`.train`       the collective-agnostic data-parallel training loop (``train_epochs``)
- :mod:`.lookahead`   airbench94's lookahead weight averaging (checkpointed with the run)
- :mod:`.checkpoint`  model + optimizer state as safetensors bytes (never ``torch.load``)
- :mod:`.export`      registry weights and model metadata
- :mod:`.predictor`   :class:`CNNPredictor` (a :class:`lambdanet.predictor.Predictor`)
- :mod:`.strategy`    the engine's "data" strategy for ``kind == "cnn"``

Importing anything here needs the ``torch`` extra (``pip install 'lambdanet[torch]'``).
"""
