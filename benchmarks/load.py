"""Load test of ``lambdanet serve``: N concurrent connections for S seconds per model, on loopback.

    python benchmarks/load.py                          # 64 connections, 60 s each on the MLP and LeNet
    python benchmarks/load.py --seconds 5 --models mlp --out test-artifacts/load-short.json

What it does:

1. builds a registry in a temp home: ``itsacat`` — the itsacat MLP (12288-20-7-5-1) trained for
   ``--mlp-epochs`` on catvnoncat through the real CLI — and ``cifar-lenet`` — a wide LeNet
   trained by ``tests.support.cnn.train_tiny_lenet`` (200 CIFAR-10 images);
2. starts ``lambdanet serve`` (uvicorn, default options) on a free loopback port;
3. per model: ``--warmup`` seconds of the same load, then the resident memory of the server
   (psutil) as the baseline, then ``--seconds`` of load from an httpx async client with
   ``--concurrency`` connections (each a loop of requests); then the memory again;
4. prints a table and writes JSON (``--out``): requests, requests/s, p50/p90/p99/max latency,
   status counts, 5xx, transport errors, RSS after warm-up / after the run and the growth.

Requests: MLP — ``POST /predict?model=itsacat`` with the grumpy-cat photo as a phone app sends it,
shrunk to a 64x64 JPEG (decode, EXIF, /255, forward; ``--full-photo`` sends the 3000x2049
original); LeNet — ``POST /predict?model=cifar-lenet`` with ``{"data": base64 of the raw 3x32x32
uint8 image}`` (the CIFAR-10 Lambda's format). The exit status is 1 when a 5xx or a
transport error occurred or the RSS grew by more than ``--max-rss-growth`` (default 10 %).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.support: the tiny LeNet the serving tests train too
SHARED = REPO.parent / "shared"
LAMBDANET = str(Path(sys.executable).with_name("lambdanet"))
MLP_PARAMS = {"epochs": 30, "layers": 4,
              "activations": {"layer1": "relu", "layer2": "relu", "layer3": "relu", "layer4": "sigmoid"},
              "neurons": {"layer1": 20, "layer2": 7, "layer3": 5, "layer4": 1}, "learning_rate": 0.0075,
              "batch_size": 64}


@dataclass
class Figures:
    model: str
    concurrency: int
    seconds: float
    requests: int = 0
    requests_per_s: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    status: dict[str, int] = field(default_factory=dict)
    server_errors_5xx: int = 0
    transport_errors: int = 0
    rss_after_warmup_mb: float = 0.0
    rss_after_run_mb: float = 0.0
    rss_growth_pct: float = 0.0
    sample_label: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


# ---- the registry --------------------------------------------------------------------------------
def build_registry(home: Path, models: list[str], mlp_epochs: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDANET_")}
    env["LAMBDANET_HOME"] = str(home)
    if "mlp" in models:
        params = home.parent / "itsacat-params.json"
        params.write_text(json.dumps({**MLP_PARAMS, "epochs": mlp_epochs}))
        subprocess.run([LAMBDANET, "train", str(SHARED / "datasets" / "catvnoncat" / "datasets.h5"),
                        "--params", str(params), "--model", "itsacat", "--json"],
                       env=env, check=True, capture_output=True, text=True)
    if "lenet" in models:
        from tests.support.cnn import train_tiny_lenet

        from lambdanet.objects.folder import FolderStore
        from lambdanet.registry import ModelRegistry

        train_tiny_lenet(ModelRegistry(FolderStore(home / "objects")), n_train=200, epochs=1)


def request_for(model: str, full_photo: bool = False) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of the request the load repeats for ``model``."""
    if model == "mlp":
        photo = (SHARED / "images" / "grumpy_cat.jpeg").read_bytes()
        if not full_photo:  # as a phone app sends it: shrunk to the model's input size first
            import io

            from PIL import Image

            buf = io.BytesIO()
            Image.open(io.BytesIO(photo)).convert("RGB").resize((64, 64)).save(buf, format="JPEG", quality=90)
            photo = buf.getvalue()
        return "/predict?model=itsacat", photo, {"content-type": "image/jpeg"}
    rng = np.random.default_rng(0)
    chw = rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8)  # the CIFAR Lambda's raw format
    body = json.dumps({"data": base64.b64encode(chw.tobytes()).decode()}).encode()
    return "/predict?model=cifar-lenet", body, {"content-type": "application/json"}


# ---- the load --------------------------------------------------------------------------------------
async def drive(base: str, model: str, concurrency: int, seconds: float,
                full_photo: bool = False) -> tuple[list[float], Counter[str], str]:
    import httpx

    path, body, headers = request_for(model, full_photo)
    latencies: list[float] = []
    status: Counter[str] = Counter()
    label = ""
    # idle connections are dropped by the client after 2 s, before uvicorn's 5 s keep-alive timeout
    # closes them: otherwise a request can race the server's close (a client-side ReadError)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60.0, trust_env=False) as client:
        stop_at = time.perf_counter() + seconds

        async def one_connection() -> None:
            nonlocal label
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    status[f"transport:{type(exc).__name__}"] += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                status[str(r.status_code)] += 1
                if r.status_code == 200 and not label:
                    label = str(r.json().get("label"))

        await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return latencies, status, label


def rss_mb(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


def measure(base: str, pid: int, model: str, concurrency: int, seconds: float, warmup: float,
            full_photo: bool = False) -> Figures:
    asyncio.run(drive(base, model, concurrency, warmup, full_photo))
    rss0 = rss_mb(pid)
    t0 = time.perf_counter()
    latencies, status, label = asyncio.run(drive(base, model, concurrency, seconds, full_photo))
    elapsed = time.perf_counter() - t0
    rss1 = rss_mb(pid)
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return Figures(
        model=model, concurrency=concurrency, seconds=round(elapsed, 2), requests=len(latencies),
        requests_per_s=round(len(latencies) / elapsed, 1), p50_ms=round(float(np.percentile(lat, 50)), 2),
        p90_ms=round(float(np.percentile(lat, 90)), 2), p99_ms=round(float(np.percentile(lat, 99)), 2),
        max_ms=round(float(lat.max()), 2), status=dict(sorted(status.items())),
        server_errors_5xx=sum(v for k, v in status.items() if k.startswith("5")),
        transport_errors=sum(v for k, v in status.items() if k.startswith("transport")),
        rss_after_warmup_mb=round(rss0, 1), rss_after_run_mb=round(rss1, 1),
        rss_growth_pct=round(100.0 * (rss1 - rss0) / rss0, 2), sample_label=label,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measured seconds per model (default 60)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of load before the RSS baseline")
    ap.add_argument("--concurrency", type=int, default=64, help="concurrent connections (default 64)")
    ap.add_argument("--models", default="mlp,lenet", help="comma list of mlp, lenet")
    ap.add_argument("--mlp-epochs", type=int, default=30, help="epochs of the itsacat MLP trained for the test")
    ap.add_argument("--max-rss-growth", type=float, default=10.0, help="allowed RSS growth in percent")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    ap.add_argument("--full-photo", action="store_true",
                    help="MLP: send the 3000x2049 grumpy-cat JPEG (1.4 MB) instead of a 64x64 JPEG of it")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra argument for lambdanet serve")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - {"mlp", "lenet"}
    if unknown:
        ap.error(f"unknown model(s) {sorted(unknown)} (known: mlp, lenet)")

    with tempfile.TemporaryDirectory(prefix="lambdanet-load-") as tmp:
        home = Path(tmp) / "home"
        build_registry(home, models, args.mlp_epochs)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDANET_")}
        env["LAMBDANET_HOME"] = str(home)
        log = (Path(tmp) / "serve.log").open("wb")
        server = subprocess.Popen([LAMBDANET, "serve", "--host", "127.0.0.1", "--port", str(port),
                                   "--log-level", "warning", *args.serve_arg], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            wait_for_port(port)
            base = f"http://127.0.0.1:{port}"
            results = [measure(base, server.pid, m, args.concurrency, args.seconds, args.warmup, args.full_photo)
                       for m in models]
            alive = server.poll() is None
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
        server_log = (Path(tmp) / "serve.log").read_text(errors="replace")

    print(f"{'model':6} {'conc':>4} {'secs':>6} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'5xx':>4} {'transp':>6} {'RSS MB warm->after':>20} {'growth':>7}")
    for f in results:
        print(f"{f.model:6} {f.concurrency:>4} {f.seconds:>6.1f} {f.requests:>9} {f.requests_per_s:>8.1f} "
              f"{f.p50_ms:>8.1f} {f.p99_ms:>8.1f} {f.server_errors_5xx:>4} {f.transport_errors:>6} "
              f"{f.rss_after_warmup_mb:>9.1f} -> {f.rss_after_run_mb:<8.1f} {f.rss_growth_pct:>6.2f}%")
    payload: dict[str, Any] = {"models": [asdict(f) for f in results], "server_alive_after": alive,
                               "command": "python benchmarks/load.py " + " ".join(argv or sys.argv[1:]),
                               "cpu_count": os.cpu_count(), "traceback_in_server_log": "Traceback" in server_log}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
    bad = (not alive or any(f.server_errors_5xx or f.transport_errors or f.requests == 0
                            or f.rss_growth_pct > args.max_rss_growth for f in results))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
