"""Handoff overhead: a run continued across durable invocations beside one uninterrupted process.

    python benchmarks/handoff.py                  # 4 rounds of about 10 s, a handoff after each
    python benchmarks/handoff.py --rounds 3 --round-epochs 1500
    python benchmarks/engine.py --handoff         # the same rows from the engine benchmark

The same run (itsacat's [12288, 20, 7, 5, 1] network, full batch, float32, seed 1; rounds of a
fixed number of epochs so that both paths do identical work) is trained twice on embedded
defaults (memory store, local executor, SQLite ledger, a folder object store):

* **uninterrupted** — ``Driver.train`` in this process: one session, one lease, every round;
* **durable** — the S3 upload trigger's durable handler (:mod:`lambdanet.functions.training_function`) under AWS's
  official local runner (``DurableFunctionTestRunner``; the upload in moto's S3 server), with the
  invocation limit set just above one round, so that every round is followed by a handoff: the
  invocation closes its session and waits; the next one replays the checkpointed steps, takes the
  lease over, reopens the store and the executor and trains the next round.

Each run's wall time is read from its ledger record (``ended_at - started_at``: from the run's
creation to its completion, so the upload's download is not counted); the two paths alternate
and the best of each is shown (a shared machine varies by more than a handoff costs). The
handoff itself is read from the runner's operation timestamps: the time between the end of one
round step and the start of the next, across the wait — shown as a share of a round (every round
handing off) and of a 15-minute invocation (the real cadence). Target: ≤ 2 % of wall time per
handoff for 10-second rounds. The default environment (no thread variables set).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "catvnoncat" / "datasets.h5"
PARAMS = REPO / "examples" / "itsacat" / "parameters.json"


def _config(epochs: int) -> dict[str, Any]:
    raw = json.loads(PARAMS.read_text())
    return {**raw, "epochs": epochs, "batch_size": 209, "threshold": 0.0, "seed": 1, "report_every": epochs}


def _run_seconds(home: Path, run_id: str) -> tuple[float, int]:
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    os.environ["LAMBDANET_HOME"] = str(home)
    services = Services.open(Settings.from_env())
    try:
        rec = services.ledger.get_run(run_id)
        assert rec.status == "completed", rec.error
        return float(rec.ended_at or 0) - float(rec.started_at or 0), int(rec.metrics.get("rounds", 0))
    finally:
        services.close()


def uninterrupted(tmp: Path, raw: dict[str, Any], round_epochs: int) -> tuple[float, int]:
    from lambdanet.config import parse_config
    from lambdanet.engine.driver import Driver, TrainRequest
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    home = tmp / "uninterrupted"
    os.environ["LAMBDANET_HOME"] = str(home)
    services = Services.open(Settings.from_env())
    try:
        result = Driver(services).train(TrainRequest(
            data=str(DATA), config=parse_config(raw, source="benchmark"), epochs_per_round=round_epochs,
            round_seconds=3600.0))
    finally:
        services.close()
    return _run_seconds(home, result.run_id)


def durable(tmp: Path, raw: dict[str, Any], round_epochs: int,
            invocation_s: float) -> tuple[float, int, int, list[float]]:
    import boto3
    from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner
    from moto.server import ThreadedMotoServer

    from lambdanet.functions import training_function

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    home = tmp / "durable"
    os.environ.update({
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1", "LAMBDANET_HOME": str(home),
        "LAMBDANET_EPOCHS_PER_ROUND": str(round_epochs), "LAMBDANET_ROUND_SECONDS": "3600",
        "LAMBDANET_INVOCATION_SECONDS": str(invocation_s),
    })
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        s3.put_object(Bucket="bench", Key="training_input/parameters.json", Body=json.dumps(raw).encode())
        s3.upload_file(str(DATA), "bench", "training_input/datasets.h5")
        etag = s3.head_object(Bucket="bench", Key="training_input/datasets.h5")["ETag"].strip('"')
        event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                              "s3": {"bucket": {"name": "bench"},
                                     "object": {"key": "training_input/datasets.h5", "eTag": etag}}}]}
        with DurableFunctionTestRunner(handler=training_function.handler, execution_timeout=3600) as runner:
            result = runner.run(input=json.dumps(event), execution_timeout=3600)
        outcome = json.loads(result.result or "{}")["results"][0]
        assert outcome["status"] == "completed", outcome
        ops = sorted(result.get_all_operations(), key=lambda op: op.start_timestamp or 0)
        handoffs = sum(1 for op in ops if "-handoff-" in str(op.name))
        rounds = [op for op in ops if "-round-" in str(op.name)]
        # the time no round runs across a handoff: end of one round step -> start of the next
        gaps = [(b.start_timestamp - a.end_timestamp).total_seconds() for a, b in itertools.pairwise(rounds)
                if a.end_timestamp and b.start_timestamp]
        if os.environ.get("HANDOFF_TIMELINE"):
            for op in ops:
                print("  ", op.name, op.start_timestamp, op.end_timestamp)
        seconds, n_rounds = _run_seconds(home, outcome["run_id"])
        return seconds, n_rounds, handoffs, gaps
    finally:
        server.stop()


def handoff_rows(rounds: int = 4, round_epochs: int = 2700, repeat: int = 2) -> list[str]:
    """The table's lines (also used by ``benchmarks/engine.py --handoff``). The two paths run
    alternately ``repeat`` times; the best of each is compared (the machine is shared)."""
    raw = _config(rounds * round_epochs)
    base: list[tuple[float, int]] = []
    dur: list[tuple[float, int, int, list[float]]] = []
    t0 = time.perf_counter()
    for i in range(repeat):
        with tempfile.TemporaryDirectory(prefix="lambdanet-handoff-") as tmp_name:
            tmp = Path(tmp_name)
            base.append(uninterrupted(tmp / f"u{i}", raw, round_epochs))
            round_s = base[-1][0] / max(1, base[-1][1])
            # an invocation a little longer than one round: the driver hands off after every round
            dur.append(durable(tmp / f"d{i}", raw, round_epochs, invocation_s=round_s * 1.5 + 1.0))
    total = time.perf_counter() - t0
    base_s, base_rounds = min(base)
    dur_s, dur_rounds, handoffs, _ = min(dur, key=lambda d: d[0])
    round_s = base_s / max(1, base_rounds)
    gaps = sorted(g for d in dur for g in d[3])
    gap = gaps[len(gaps) // 2]
    share = gap / round_s * 100
    per_invocation = gap / (900.0 + gap) * 100
    return [
        f"handoff overhead — {rounds} rounds x {round_epochs} epochs (≈ {round_s:.1f} s a round), itsacat net, "
        f"full batch, memory/local, default environment, best of {repeat} alternating runs",
        "| run | rounds | handoffs | run wall s | ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| uninterrupted (`Driver.train`, one process) | {base_rounds} | 0 | {base_s:.2f} | 1.00 |",
        f"| durable handler, local runner, a handoff after every round | {dur_rounds} | {handoffs} | "
        f"{dur_s:.2f} | {dur_s / base_s:.3f} |",
        f"a handoff (end of a round step -> start of the next, median of {len(gaps)}): {gap:.3f} s, of which "
        f"1.000 s is the SDK's shortest wait; = {share:.1f} % of a {round_s:.1f}-s round when every round hands "
        f"off (target ≤ 2 %: {'met' if share <= 2 else 'missed'}); = {per_invocation:.2f} % of the wall time "
        f"when a 15-min invocation hands off once (target ≤ 2 %: {'met' if per_invocation <= 2 else 'missed'}); "
        f"benchmark took {total:.0f} s",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--round-epochs", type=int, default=2700, help="≈ 10 s a round on 2 cores")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    for line in handoff_rows(args.rounds, args.round_epochs, args.repeat):
        print(line)


if __name__ == "__main__":
    main()
