"""Micro-batching with real models: fairness asserted on order and batch composition (never on
time), and batched answers equal to unbatched ones and to an independent forward pass.

The independent references (``tests/e2e/serve_support.py``): a plain numpy forward of the
registered MLP weights and a plain torch functional LeNet — never the server's own
``load_predictor``.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from lambdanet.data.readers import load_dataset
from lambdanet.objects.folder import FolderStore
from lambdanet.predictor import load_predictor
from lambdanet.registry import ModelRegistry
from lambdanet.serve.app import create_app
from lambdanet.serve.batching import MicroBatcher
from tests.conftest import CATVNONCAT
from tests.e2e.serve_support import numpy_forward, torch_lenet
from tests.support.cnn import cifar_subset, train_tiny_lenet
from tests.support.serving import UvicornThread, register_catvnoncat_mlp


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    reg = ModelRegistry(FolderStore(tmp_path_factory.mktemp("registry")))
    register_catvnoncat_mlp(reg, CATVNONCAT / "datasets.h5")
    train_tiny_lenet(reg, n_train=200, epochs=1, n_test=40)
    return reg


@pytest.fixture(scope="module")
def cats() -> np.ndarray:
    return load_dataset(CATVNONCAT / "datasets.h5").x_train[:24]  # uint8 (24, 64, 64, 3)


@pytest.fixture(scope="module")
def cifar() -> np.ndarray:
    return cifar_subset(n_train=200, n_test=40)[2][:24]  # uint8 (24, 32, 32, 3), held out


# ---- fairness: order and composition ----------------------------------------------------------
class GatedForward:
    """The real predictor, held at its first call until released; records what each pass saw."""

    def __init__(self, predict: object) -> None:
        self.predict = predict
        self.seen: list[np.ndarray] = []  # the images of each forward pass
        self.first_started = threading.Event()
        self.release = threading.Event()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.seen.append(images.copy())
        self.first_started.set()
        assert self.release.wait(timeout=60)
        return self.predict(images)  # type: ignore[operator]


def _burst(batcher: MicroBatcher, gate: GatedForward, requests: list[np.ndarray]) -> list[np.ndarray]:
    """Request 0 starts a pass that the gate holds; requests 1.. arrive, in order, while it runs."""

    async def main() -> list[np.ndarray]:
        first = asyncio.ensure_future(batcher.predict(requests[0]))
        assert await asyncio.to_thread(gate.first_started.wait, 60)
        rest = []
        for images in requests[1:]:  # one at a time: the arrival order is the list's order
            rest.append(asyncio.ensure_future(batcher.predict(images)))
            await asyncio.sleep(0)
        while batcher.queued < len(requests) - 1:
            await asyncio.sleep(0.001)
        gate.release.set()
        return [await first, *(await asyncio.gather(*rest))]

    return asyncio.run(main())


def test_a_burst_is_served_fifo_behind_at_most_the_running_pass(registry: ModelRegistry,
                                                                cifar: np.ndarray) -> None:
    mv = registry.load("cifar-lenet")
    predictor = load_predictor(mv)
    gate = GatedForward(predictor.predict_proba)
    batcher = MicroBatcher(gate, max_batch_size=4, inline_max_rows=0)  # passes in the batcher's thread
    requests = [cifar[i:i + 1] for i in range(11)]  # 11 requests of one image, arrival order 0..10
    results = _burst(batcher, gate, requests)

    # request 0 went alone (the worker was idle); the 10 that arrived while it ran formed full
    # batches in arrival order, then the remainder: nobody waited behind a later arrival
    assert list(batcher.history) == [(0,), (1, 2, 3, 4), (5, 6, 7, 8), (9, 10)]
    expected_passes = [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert len(gate.seen) == len(expected_passes)
    for seen, members in zip(gate.seen, expected_passes, strict=True):  # what the model really got
        np.testing.assert_array_equal(seen, cifar[members])
    # batched answers equal unbatched ones and the independent forward pass
    reference = torch_lenet(mv, cifar[:11])  # (11, 10)
    for i, probs in enumerate(results):
        np.testing.assert_allclose(probs, predictor.predict_proba(cifar[i:i + 1]), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(probs[0], reference[i], rtol=1e-4, atol=1e-6)


def test_a_request_that_does_not_fit_is_not_overtaken(registry: ModelRegistry, cats: np.ndarray) -> None:
    mv = registry.load("itsacat")
    gate = GatedForward(load_predictor(mv).predict_proba)
    batcher = MicroBatcher(gate, max_batch_size=4, inline_max_rows=0)
    sizes = [1, 3, 2, 2, 1]  # rows per request
    starts = np.cumsum([0, *sizes[:-1]])
    requests = [cats[s:s + n] for s, n in zip(starts, sizes, strict=True)]
    results = _burst(batcher, gate, requests)

    # request 4 (one row) would fit beside request 1 (three rows) but arrived after requests 2
    # and 3: it waits for its turn rather than jumping the queue
    assert list(batcher.history) == [(0,), (1,), (2, 3), (4,)]
    assert [len(s) for s in gate.seen] == [1, 3, 4, 1]
    reference = numpy_forward(mv, cats[:sum(sizes)])  # (9, 2)
    for probs, s, n in zip(results, starts, sizes, strict=True):
        np.testing.assert_allclose(probs, reference[s:s + n], rtol=1e-5, atol=1e-6)


def test_a_lone_request_leads_its_own_pass_and_a_burst_behind_it_batches(registry: ModelRegistry,
                                                                         cifar: np.ndarray) -> None:
    """No worker task: the lone request starts its pass itself; those that arrive meanwhile run
    next, together, started by its completion."""
    mv = registry.load("cifar-lenet")
    predictor = load_predictor(mv)
    gate = GatedForward(predictor.predict_proba)
    batcher = MicroBatcher(gate, max_batch_size=8, inline_max_rows=0)
    results = _burst(batcher, gate, [cifar[i:i + 1] for i in range(6)])

    assert list(batcher.history) == [(0,), (1, 2, 3, 4, 5)] and batcher.passes_led == 1
    np.testing.assert_allclose(np.vstack(results), torch_lenet(mv, cifar[:6]), rtol=1e-4, atol=1e-6)


def test_an_idle_quick_model_runs_a_lone_request_at_once_and_batches_a_burst(registry: ModelRegistry,
                                                                              cats: np.ndarray) -> None:
    """A pass that runs on the event loop blocks it: nobody could join, so a lone request runs
    at once. A second one in the same loop turn means a burst: it leads the rest of the burst."""
    mv = registry.load("itsacat")
    batcher = MicroBatcher(load_predictor(mv).predict_proba, max_batch_size=4, inline_max_rows=4)

    async def main() -> list[np.ndarray]:
        lone = []
        for i in range(3):  # one request per loop turn
            lone.append(await batcher.predict(cats[i:i + 1]))
            await asyncio.sleep(0)
        burst = await asyncio.gather(*(batcher.predict(cats[i:i + 1]) for i in range(3, 6)))  # one turn
        return [*lone, *burst]

    results = asyncio.run(main())
    assert list(batcher.history) == [(0,), (1,), (2,), (3,), (4, 5)] and batcher.queued == 0
    assert batcher.passes_led == 1  # request 4 led; 0-3 ran alone at once
    np.testing.assert_allclose(np.vstack(results), numpy_forward(mv, cats[:6]), rtol=1e-5, atol=1e-6)


# ---- over HTTP: batched answers equal unbatched ones ---------------------------------------------
@pytest.fixture(scope="module")
def servers(registry: ModelRegistry) -> Iterator[tuple[FastAPI, str, str]]:
    """(the batching app, its URL, the URL of a server without batching)."""
    batching_app = create_app(registry)
    with UvicornThread(batching_app) as batched, UvicornThread(create_app(registry, batching=False)) as unbatched:
        yield batching_app, batched.url, unbatched.url


def _concurrently(url: str, calls: list[tuple[str, dict]]) -> list[httpx.Response]:
    local = threading.local()

    def send(call: tuple[str, dict]) -> httpx.Response:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60)
        return local.client.post(call[0], **call[1])

    with ThreadPoolExecutor(12) as pool:
        return list(pool.map(send, calls))


def test_batched_and_unbatched_servers_answer_the_same(servers: tuple[FastAPI, str, str],
                                                       registry: ModelRegistry, cats: np.ndarray,
                                                       cifar: np.ndarray) -> None:
    mlp_calls = [("/v2/models/itsacat/infer", {"json": {"inputs": [  # two images per request
        {"name": "input", "datatype": "UINT8", "shape": [2, 64, 64, 3], "data": cats[i:i + 2].ravel().tolist()}]}})
        for i in range(0, 24, 2)]
    lenet_calls = [("/predict?model=cifar-lenet", {"json": {"data": base64.b64encode(
        img.transpose(2, 0, 1).tobytes()).decode()}}) for img in cifar]  # raw 3×32×32 bytes
    calls = [c for pair in zip(mlp_calls + mlp_calls, lenet_calls, strict=True) for c in pair]
    batching_app, *urls = servers
    answers = []
    for url in urls:
        responses = _concurrently(url, calls)
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
        answers.append([r.json() for r in responses])
    batched, unbatched = answers
    mlp_reference = numpy_forward(registry.load("itsacat"), cats)  # (24, 2)
    lenet_reference = torch_lenet(registry.load("cifar-lenet"), cifar)  # (24, 10)
    for k, (call, on, off) in enumerate(zip(calls, batched, unbatched, strict=True)):
        if call[0].startswith("/v2"):
            i = 2 * ((k // 2) % 12)
            p_on, p_off = (np.asarray(a["outputs"][0]["data"]).reshape(2, 2) for a in (on, off))
            expected = mlp_reference[i:i + 2]
            assert on["outputs"][1]["data"] == off["outputs"][1]["data"]  # labels
        else:
            p_on, p_off = (np.asarray(list(a["probabilities"].values())) for a in (on, off))
            expected = lenet_reference[k // 2]
            assert on["label"] == off["label"]
        np.testing.assert_allclose(p_on, p_off, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(p_on, expected, rtol=1e-4, atol=1e-6)
    # every pass of the batching server took its requests in arrival order
    served = batching_app.state.models.loaded()
    assert {(m.name, m.version) for m in served} == {("itsacat", 1), ("cifar-lenet", 1)}
    for model in served:
        order = [seq for batch in model.batcher.history for seq in batch]
        assert order == sorted(order)
