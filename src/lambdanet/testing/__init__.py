"""Deliberate, public helpers for testing and benchmarking lambdanet (as httpx ships
``MockTransport``): nothing in the package's own code paths imports them.

- :mod:`.serving`           small real models (trained by the numpy reference), a uvicorn thread, ``free_port``
- :mod:`.cnn`               ``train_tiny_lenet(registry, …)`` and ``cifar_subset`` on the shared CIFAR-10
- :mod:`.probes`            module-level worker functions that check an executor (echo, fail, crash, meet, sleep)
- :mod:`.itsacat_baseline`  itsacat's one-call-per-neuron shape, the engine benchmark's baseline

They are real: models are trained, servers are uvicorn, workers run on the executor under test.
"""
