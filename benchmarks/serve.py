"""Prediction-service benchmark: the bare forward pass, `lambdanet serve` with and without
micro-batching, and a plain Flask app doing the same work — in one run, with ratios.

    python benchmarks/serve.py                     # MLP (itsacat 12288-20-7-5-1), LeNet, VGG11-bn
    python benchmarks/serve.py --models mlp --seconds 2

For each model it prints:

* bare forward    — ``predictor.predict_proba`` on one uint8 image in process (median), and the
  same plus the upload's decode/resize (what every server below also does per request);
* server, batching on / off — a real ``lambdanet serve`` (uvicorn) subprocess; p50/p99 latency
  and requests/s for 1 client (sequential requests) and 32 concurrent clients;
* Flask           — a plain Flask app (werkzeug threaded server, keep-alive) in a subprocess,
  doing decode_image + prepare_image + predict_proba per request, no batching.

Every request is ``POST /predict`` with a PNG body of the model's input size. The load
generator is a light asyncio HTTP/1.1 keep-alive client (one connection per client) in this
process. The three servers run side by side and are measured in rotating order over a few
rounds, so a shared machine's noise spreads evenly; ``cpu ms/req`` (the server process's CPU
time per request) is the figure least disturbed by other load.

Targets: MLP p50 (1 client) <= bare forward + 2 ms; 32 clients: batching >= 2x the requests/s
without batching and >= 3x Flask.
"""

from __future__ import annotations

import os

# Small matrix products gain nothing from BLAS threads, and on a busy machine those threads stall
# (a batch of 32 MLP images: ~1 ms, with 50-300 ms outliers). Every server below and the bare
# measurement run with one BLAS thread; set before numpy loads, inherited by the subprocesses.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / "shared" / "images"


# ---- models --------------------------------------------------------------------------------------
def build_registry(root: Path, models: list[str]) -> dict[str, str]:
    """Register the benchmark models; returns {kind: model ref}."""
    from lambdanet.nn.mlp import init_params
    from lambdanet.objects.folder import FolderStore
    from lambdanet.registry import ModelRegistry

    registry = ModelRegistry(FolderStore(root))
    refs = {}
    if "mlp" in models:
        dims, acts = [12288, 20, 7, 5, 1], ["relu", "relu", "relu", "sigmoid"]
        params = init_params(dims, acts, "deep", 1, "float32")  # latency does not depend on training
        registry.register("itsacat", params, {
            "kind": "mlp", "classes": ["non-cat", "cat"], "input_shape": [64, 64, 3], "dtype": "float32",
            "preprocessing": {"resize": "bilinear", "scale": 255.0, "mean": None, "std": None},
            "architecture": {"layer_dims": dims, "activations": acts}})
        refs["mlp"] = "itsacat"
    if "cnn" in models:
        from lambdanet.testing.cnn import train_tiny_lenet

        train_tiny_lenet(registry, n_train=100, epochs=1, name="lenet", n_test=10)
        refs["cnn"] = "lenet"
    if "vgg" in models:  # untrained: latency does not depend on the weights
        from lambdanet.config import CNNConfig
        from lambdanet.torchnet.export import model_metadata, registry_weights
        from lambdanet.torchnet.models import build_model
        classes = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        model = build_model("vgg11_bn", seed=0).eval()
        meta = model_metadata(CNNConfig(model="vgg11_bn", epochs=1), classes)
        registry.register("vgg", registry_weights(model), meta)
        refs["vgg"] = "vgg"
    return refs


def png_payload(shape: tuple[int, int, int]) -> bytes:
    from PIL import Image

    img = Image.open(IMAGES / "grumpy_cat.jpeg").convert("RGB").resize((shape[1], shape[0]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def bare_forward(root: Path, ref: str, payload: bytes, n: int = 300) -> tuple[float, float]:
    """Median seconds of predict_proba on one image, and of decode + resize + predict_proba."""
    from lambdanet.data.images import decode_image, prepare_image
    from lambdanet.objects.folder import FolderStore
    from lambdanet.predictor import load_predictor
    from lambdanet.registry import ModelRegistry

    predictor = load_predictor(ModelRegistry(FolderStore(root)).load(ref))
    x = prepare_image(decode_image(payload), predictor.input_shape)[None]  # (1, H, W, C)
    for _ in range(20):
        predictor.predict_proba(x)
    fwd, full = [], []
    for _ in range(n):
        t = time.perf_counter()
        predictor.predict_proba(x)
        fwd.append(time.perf_counter() - t)
        t = time.perf_counter()
        predictor.predict_proba(prepare_image(decode_image(payload), predictor.input_shape)[None])
        full.append(time.perf_counter() - t)
    return float(np.median(fwd)), float(np.median(full))


# ---- servers -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def start_lambdanet(root: Path, port: int, batching: bool) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "lambdanet.cli.main", "serve", "--registry", str(root), "--port", str(port),
           "--log-level", "warning"]
    if not batching:
        cmd.append("--no-batching")
    env = {k: v for k, v in os.environ.items() if k != "LAMBDANET_API_KEY"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_flask(root: Path, port: int, ref: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--flask-server", str(root), str(port), ref],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def flask_server(root: str, port: int, ref: str) -> None:
    """The baseline: Flask + werkzeug's threaded server, same preprocessing and forward pass."""
    from flask import Flask, jsonify, request
    from werkzeug.serving import WSGIRequestHandler, make_server

    from lambdanet.data.images import decode_image, prepare_image
    from lambdanet.objects.folder import FolderStore
    from lambdanet.predictor import load_predictor
    from lambdanet.registry import ModelRegistry

    predictor = load_predictor(ModelRegistry(FolderStore(root)).load(ref))
    app = Flask("baseline")

    @app.post("/predict")
    def predict():  # type: ignore[no-untyped-def]
        img = prepare_image(decode_image(request.get_data()), predictor.input_shape)
        probs = predictor.predict_proba(img[None])[0]  # (C,)
        k = int(probs.argmax())
        return jsonify(label=predictor.classes[k], probability=float(probs[k]),
                       probabilities={c: float(p) for c, p in zip(predictor.classes, probs, strict=True)},
                       model=predictor.name, version=predictor.version)

    WSGIRequestHandler.protocol_version = "HTTP/1.1"  # keep-alive, as the other servers
    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


# ---- load generator ------------------------------------------------------------------------------
@dataclass
class Phase:
    latencies: list[float]
    seconds: float
    errors: int
    server_cpu_s: float = 0.0  # CPU time the server process used during the phase

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


async def _client(port: int, request: bytes, deadline: float, out: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
            await reader.readexactly(int(fields.get("content-length", "0")))
            out.append(time.perf_counter() - t)
            if status != 200:
                errors[0] += 1
            if fields.get("connection", "").lower() == "close":
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


async def _load(port: int, request: bytes, clients: int, seconds: float) -> Phase:
    out: list[float] = []
    errors = [0]
    start = time.perf_counter()
    await asyncio.gather(*(_client(port, request, start + seconds, out, errors) for _ in range(clients)))
    return Phase(out, time.perf_counter() - start, errors[0])


def _cpu(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    times = [proc.cpu_times(), *(c.cpu_times() for c in proc.children(recursive=True))]
    return sum(t.user + t.system for t in times)


def measure(port: int, pid: int, ref: str, payload: bytes, clients: int, seconds: float,
            warm_up: bool = True) -> Phase:
    head = (f"POST /predict?model={ref} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    request = head + payload
    if warm_up:
        asyncio.run(_load(port, request, min(clients, 4), 0.5))  # model load, first-call paths
    before = _cpu(pid)
    phase = asyncio.run(_load(port, request, clients, seconds))
    phase.server_cpu_s = _cpu(pid) - before
    return phase


def merge(phases: list[Phase]) -> Phase:
    return Phase([x for p in phases for x in p.latencies], sum(p.seconds for p in phases),
                 sum(p.errors for p in phases), sum(p.server_cpu_s for p in phases))


# ---- main ----------------------------------------------------------------------------------------
SERVERS = ("batching", "no_batching", "flask")


def run(models: list[str], seconds: float, clients: int, rounds: int) -> dict:
    """All three servers run side by side; each round measures each of them in turn (the order
    rotating), so the noise of a shared machine spreads evenly over them."""
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "objects"
        refs = build_registry(root, models)
        for kind, ref in refs.items():
            shape = (64, 64, 3) if kind == "mlp" else (32, 32, 3)  # lenet, vgg: CIFAR-10 size
            payload = png_payload(shape)
            fwd, full = bare_forward(root, ref, payload)
            row: dict = {"bare_forward_ms": fwd * 1e3, "decode_and_forward_ms": full * 1e3}
            procs: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
            try:
                for name in SERVERS:
                    port = free_port()
                    proc = (start_flask(root, port, ref) if name == "flask"
                            else start_lambdanet(root, port, batching=name == "batching"))
                    procs[name] = (port, proc)
                for port, proc in procs.values():
                    wait_port(port, proc)
                phases: dict[tuple[str, int], list[Phase]] = {(s, n): [] for s in SERVERS for n in (1, clients)}
                for r in range(rounds):
                    order = SERVERS[r % 3:] + SERVERS[:r % 3]
                    for name in order:
                        port, proc = procs[name]
                        for n in (1, clients):
                            phases[(name, n)].append(measure(port, proc.pid, ref, payload, n, seconds / rounds,
                                                             warm_up=r == 0))
            finally:
                for _, proc in procs.values():
                    proc.terminate()
                    proc.wait(timeout=10)
            for (name, n), runs in phases.items():
                phase = merge(runs)
                row[f"{name}_{n}"] = {"p50_ms": phase.pct(50) * 1e3, "p99_ms": phase.pct(99) * 1e3,
                                      "rps": phase.rps, "requests": len(phase.latencies), "errors": phase.errors,
                                      "cpu_ms_per_request": phase.server_cpu_s * 1e3 / max(1, len(phase.latencies))}
            results[kind] = row
            report(kind, ref, row, clients)
    return results


def report(kind: str, ref: str, row: dict, clients: int) -> None:
    fwd = row["bare_forward_ms"]
    print(f"\n== {kind.upper()} ({ref}) ==")
    print(f"bare forward (1 image, in process): {fwd:.3f} ms   decode+resize+forward: "
          f"{row['decode_and_forward_ms']:.3f} ms")
    print(f"{'server':<13}{'clients':>8}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}{'cpu ms/req':>11}{'errors':>7}   ratio")
    for name in ("batching", "no_batching", "flask"):
        for n in (1, clients):
            r = row[f"{name}_{n}"]
            if n == 1:
                ratio = f"p50 = bare + {r['p50_ms'] - fwd:.2f} ms"
            else:
                ratio = (f"batching req/s = {row[f'batching_{clients}']['rps'] / r['rps']:.2f}x this"
                         if name != "batching" else "")
            print(f"{name:<13}{n:>8}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['rps']:>8.0f}"
                  f"{r['cpu_ms_per_request']:>11.3f}{r['errors']:>7}   {ratio}")
    on, off, fl = (row[f"{k}_{clients}"]["rps"] for k in ("batching", "no_batching", "flask"))
    p50 = row["batching_1"]["p50_ms"]

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print(f"targets: p50 (1 client) <= bare + 2 ms: {p50:.2f} <= {fwd + 2:.2f} {verdict(p50 <= fwd + 2)}; "
          f"{clients} clients: batching/no-batching {on / off:.2f}x (>= 2) {verdict(on >= 2 * off)}, "
          f"batching/Flask {on / fl:.2f}x (>= 3) {verdict(on >= 3 * fl)}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--flask-server":
        flask_server(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,cnn,vgg", help="comma-separated: mlp, cnn (LeNet), vgg")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per server and client count")
    parser.add_argument("--rounds", type=int, default=3, help="rounds the seconds are split into")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients of the loaded phase")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}  load average: {os.getloadavg()[0]:.2f}  python {sys.version.split()[0]}  "
          f"BLAS threads: {os.environ['OPENBLAS_NUM_THREADS']}")
    results = run([m.strip() for m in args.models.split(",") if m.strip()], args.seconds, args.clients, args.rounds)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
