"""The plan's cost model against hand computations: every term of wall time, worker-seconds,
bytes and dollars, for a Lambda plan and a local one, with round figures so each line below can
be checked with a pencil."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lambdanet.plan.model import Measured, RunShape, Workload, all_reduce_bytes, counts, predict
from lambdanet.plan.prices import LambdaFigures

WORK = Workload(kind="mlp", model="mlp 99-10-1", params=1000, train_samples=100, test_samples=20, batch_size=10,
                epochs=4, epochs_per_round=1000, param_bytes=4, data_bytes=1_000_000)
FIGURES = LambdaFigures(gb_second_usd_arm64=1e-5, request_usd=1e-6, durable_operation_usd=1e-5,
                        network_low_bytes_s=10e6, network_high_bytes_s=10e6, store_node_bytes_s=1e6,
                        store_step_latency_s=0.001, store_node_usd_per_hour=0.036, cold_start_s_numpy=3.0,
                        round_overhead_s=1.5, driver_memory_mb=1769)
MEASURED = Measured(cpu="test cpu", cores=2, threads=1, together=2, sample_seconds=1e-4, sample_seconds_1=0.002,
                    eval_sample_seconds=0.001, data_load_seconds=0.5, store_latency_s=1e-4, store_bytes_s=1e8,
                    round_start_s=0.0, driver_s=0.1)


def test_lambda_plan_is_the_hand_computation() -> None:
    shape = RunShape(workers=4, strategy="data", sync_every=2, compress="fp16", target="lambda", memory_mb=3538,
                     arch="arm64")
    p = predict(WORK, shape, MEASURED, FIGURES)
    # 4 epochs x ceil(100 / 10) = 40 steps; a sync every 2 steps: 20 syncs
    assert (p.steps, p.syncs) == (40, 20)
    # reduce-scatter + all-gather of 1000 fp16 numbers among 4: (3 x 4 - 2) x 1000 x 2 bytes
    assert p.bytes_per_sync == 20_000 and p.bytes == 400_000
    # 3538 MB = 2 vCPUs: 0.002 / 2 s a sample, 25 samples a worker an epoch, 4 epochs
    compute = 4 * 25 * 0.001
    # per sync: 2 steps of 1 ms + the slower of 5000 B / 10 MB/s (a worker) and 20000 B / 1 MB/s (the node)
    # + the round-time vote every 8 epochs: 0.5 steps of 1 ms
    sync = 20 * (2 * 0.001 + 0.02) + 0.5 * 0.001
    data = 1_000_000 / 10e6 + 0.5  # the file at 10 MB/s, then read
    state = 3 * 1000 * 4 / 10e6  # weights + optimizer state, once a round
    worker = 3.0 + data + state + compute + sync  # + the 3 s cold start
    finish = (100 + 20) * 0.001 / 1.0  # the driver scores 120 samples on 1 vCPU
    wall = 0.1 + 1.5 + worker + finish
    assert p.rounds == 1
    assert p.breakdown["compute"] == pytest.approx(compute, abs=1e-4)
    assert p.breakdown["sync"] == pytest.approx(sync, abs=1e-4)
    assert p.wall_seconds == pytest.approx(wall, abs=1e-3)
    assert p.worker_seconds == pytest.approx(4 * worker, abs=1e-3)
    usd = (4 * worker * 3538 / 1024 * 1e-5  # workers' GB-s at the arm64 price
           + wall * 1769 / 1024 * 1e-5  # the durable driver's GB-s
           + (4 + 1 + 1) * 1e-6  # requests: 4 workers, the driver's first invocation and one per 15 min
           + (2 + 2) * 1e-5  # durable operations: begin + finish, 2 for the round
           + wall / 3600 * 0.036)  # the Redis node's hours
    assert p.usd == pytest.approx(usd, rel=1e-4)  # usd is rounded to 8 decimals
    assert any("vCPU" in u for u in p.uncertain) and any("sync_every 2" in u for u in p.uncertain)


def test_local_plan_is_the_hand_computation() -> None:
    shape = RunShape(workers=2, strategy="data", target="local", memory_mb=2048)
    p = predict(WORK, shape, MEASURED, FIGURES)
    assert (p.steps, p.syncs) == (40, 40)
    assert p.bytes_per_sync == (3 * 2 - 2) * 1000 * 4 and p.bytes == 40 * 16_000
    compute = 4 * 50 * 1e-4  # two workers measured side by side: no further overlap factor
    sync = 40 * (2 * 1e-4 + 8000 / 1e8) + 0.5 * 1e-4
    finish = 120 * 0.001 * 1 / 2  # the driver scores 120 samples on both cores (1 thread measured)
    assert p.breakdown["finish"] == pytest.approx(finish, abs=1e-4)
    assert p.wall_seconds == pytest.approx(0.1 + 0.5 + compute + sync + finish, abs=1e-3)
    assert p.worker_seconds == pytest.approx(2 * (compute + sync), abs=1e-3)
    # the run's estimated_cost_usd: worker GB-s at 2 GB x the x86 price + 2 requests x $0.20/M
    assert p.usd == pytest.approx(2 * (compute + sync) * 2 * 0.0000166667 + 2 * 1e-6, rel=1e-3)


def test_one_worker_moves_nothing_and_more_workers_than_measured_time_slice() -> None:
    assert predict(WORK, RunShape(workers=1, target="local"), MEASURED, FIGURES).bytes == 0
    p8 = predict(WORK, RunShape(workers=8, target="local"), MEASURED, FIGURES)
    assert p8.breakdown["compute"] == pytest.approx(4 * 13 * 1e-4 * 8 / 2, abs=1e-4)  # 8 workers, 2 measured


def test_small_all_reduce_is_one_gather_and_neuron_syncs_every_step() -> None:
    assert all_reduce_bytes(100, 3, 4) == (3 * 3 * 100 * 4, 1)
    assert all_reduce_bytes(16_384 * 3, 3, 4) == (7 * 16_384 * 3 * 4, 2)
    neuron = RunShape(workers=2, strategy="neuron", target="local")
    assert counts(WORK, neuron) == (40, 40)
    wide = WORK.model_copy(update={"first_width": 10})
    assert predict(wide, neuron, MEASURED, FIGURES).bytes_per_sync == 2 * 2 * 10 * 10 * 4  # K^2 x (10 x 10) x 4


def test_a_cnn_driver_scores_at_most_its_sample_of_training_images() -> None:
    """The CNN strategy's finish scores a sample of at most 2,000 training images and reuses the
    last epoch's test pass; the plan charged all 60,000 (6.7 s of a fast CIFAR-10 run's 20)."""
    from lambdanet.plan.model import CNN_FINISH_TRAIN_SAMPLES
    from lambdanet.torchnet.strategy import FINISH_TRAIN_SAMPLES

    assert CNN_FINISH_TRAIN_SAMPLES == FINISH_TRAIN_SAMPLES
    cnn = WORK.model_copy(update={"kind": "cnn", "train_samples": 50_000, "test_samples": 10_000})
    p = predict(cnn, RunShape(workers=1, target="lambda", memory_mb=1769), MEASURED, FIGURES)
    assert p.breakdown["finish"] == pytest.approx(2_000 * 0.001, abs=1e-4)  # on the driver's 1 vCPU
    small = cnn.model_copy(update={"train_samples": 500})
    assert predict(small, RunShape(workers=1, target="local"), MEASURED, FIGURES).breakdown["finish"] \
        == pytest.approx(500 * 0.001 / 2, abs=1e-4)


@pytest.mark.parametrize("bad", [{"workers": 0}, {"memory_mb": 127}, {"memory_mb": 10_241}, {"sync_every": 0},
                                 {"compress": "zip"}, {"target": "gcp"}, {"arch": "riscv"}])
def test_bad_shapes_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RunShape(**{"workers": 1, **bad})  # type: ignore[arg-type]


def test_a_cnn_calibration_never_multiplies_a_round_s_cost_by_the_data_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CNN calibration's runs, timed by a pencil formula (a driver's fixed cost, a round's
    cost, a warm epoch, a fresh round's slower first epoch): the epoch is the warm one and a round
    costs a round — the old 1-vs-2-epoch slope on 2 batches multiplied each round's torch import and
    warm-up by the data set's size over 2 batches (CIFAR process plans were 4x too long)."""
    from lambdanet.config import parse_config
    from lambdanet.plan import calibrate

    fixed, per_round, warm_up, per_sample = 2.0, 3.0, 0.7, 0.004

    def run(data: str, config: object, shape: RunShape, store: str, executor: str,
            per_round_epochs: int | None = None) -> tuple[float, list[float]]:
        epochs, n = config.epochs, config.limit_train  # type: ignore[attr-defined]
        epoch = -(-n // shape.workers) * per_sample
        rows = [epoch + (warm_up if e == 0 or per_round_epochs == 1 else 0.0) for e in range(epochs)]
        rounds = epochs if per_round_epochs == 1 else 1
        return fixed + rounds * per_round + sum(rows), rows

    monkeypatch.setattr(calibrate, "_engine_run", run)
    config = parse_config({"model": "fast", "epochs": 30, "batch_size": 256})
    work = Workload(kind="cnn", model="fast", params=2_000_000, train_samples=50_000, test_samples=10_000,
                    batch_size=256, epochs=30, epochs_per_round=1)
    got = calibrate.measure_engine("cifar.npz", config, work, RunShape(workers=2), "memory://", "local", 0.1)
    assert got["epoch_s"] / got["samples"] == pytest.approx(per_sample)  # a warm epoch, per sample of a worker
    assert got["round_s"] == pytest.approx(per_round + warm_up)  # a further round: its start and its warm-up
    assert got["fixed_s"] == pytest.approx(fixed + per_round)  # the driver and the first round's start
    assert got["scored"] == 4 * 256  # the driver's final scoring: the training images (the test pass is reused)
