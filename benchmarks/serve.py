"""Prediction-service benchmark: `lambdanet serve` with and without micro-batching, beside a
plain Flask app doing the same work, at 1, 8 and 32 concurrent clients — in one run, with ratios.

    python benchmarks/serve.py                        # MLP (itsacat 12288-20-7-5-1), LeNet, VGG11-bn
    python benchmarks/serve.py --seconds 1 --models mlp   # a quick check

Run it in the environment a user has: it sets no thread variables (OPENBLAS_NUM_THREADS…); the
server process sets its own BLAS thread budget (``lambdanet.serve.process``).

For each model it prints:

* bare forward    — ``predictor.predict_proba`` on one uint8 image in this process (median), and
  the same plus the upload's decode/resize (what every server below also does per request);
* for each client count: p50 / p99 latency, requests/s and the server's CPU time per request of
  a real ``lambdanet serve`` (uvicorn) subprocess with batching (default options) and with
  ``--no-batching``, and of a plain Flask app (werkzeug threaded server, keep-alive) doing
  decode_image + prepare_image + predict_proba per request; then batching's p99 and requests/s
  over no batching's.

Every request is ``POST /predict`` with a PNG body of the model's input size. The load
generator is a light asyncio HTTP/1.1 keep-alive client (one connection per client) in this
process. The three servers run side by side and are measured in rotating order over a few
rounds, so a shared machine's noise spreads evenly; ``cpu ms/req`` (the server process's CPU
time per request) is the figure least disturbed by other load.

Targets (issue 12): batching's p99 <= 1.1x no batching's and its requests/s >= no batching's at
every client count, for every model; VGG: batching >= 2x the requests/s of no batching at 32
clients; MLP: server CPU per request <= 0.30 ms (batching, 32 clients). Each round measures
both servers, so every round gives a paired ratio: a batching / no-batching ratio on the wrong
side of its bound is reported as a *tie* when the 95 % confidence interval of the per-round
ratios (Student t) still contains the bound — at one client both servers run the same code path
(nothing to batch), and such a ratio lands on either side of 1 by chance — and as *missed*
otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.support: the tiny LeNet the serving tests train too
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
        from tests.support.cnn import train_tiny_lenet

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
    # the command a user runs, with its defaults (log level info, no access log)
    cmd = [sys.executable, "-m", "lambdanet.cli.main", "serve", "--registry", str(root), "--port", str(port)]
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
P99_RATIO_MAX = 1.1  # batching's p99 over no batching's, every model and client count
VGG_RPS_RATIO_MIN = 2.0  # VGG, the largest client count: batching's requests/s over no batching's
MLP_CPU_MS_MAX = 0.30  # MLP: the batching server's CPU per request, the largest client count


def run(models: list[str], seconds: float, client_counts: list[int], rounds: int) -> dict:
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
                phases: dict[tuple[str, int], list[Phase]] = {(s, n): [] for s in SERVERS for n in client_counts}
                for r in range(rounds):
                    order = SERVERS[r % 3:] + SERVERS[:r % 3]
                    for name in order:
                        port, proc = procs[name]
                        for n in client_counts:
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
            for n in client_counts:  # each round measured both servers: paired ratios, batching / no batching
                pairs = list(zip(phases[("batching", n)], phases[("no_batching", n)], strict=True))
                row[f"rounds_{n}"] = {"rps": [on.rps / off.rps for on, off in pairs],
                                      "p99": [on.pct(99) / off.pct(99) for on, off in pairs]}
            row["targets"] = targets(kind, row, client_counts)
            results[kind] = row
            report(kind, ref, row, client_counts)
    return results


# two-sided 95 % Student t quantiles by degrees of freedom (rounds - 1)
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


def verdict(value: float, bound: float, per_round: list[float], at_least: bool) -> str:
    """"met" when ``value`` is on the right side of ``bound``; "tie" when it is not, but the 95 %
    confidence interval of the paired per-round ratios still contains the bound (no measurable
    difference: two servers running the same code path land on either side of 1 by chance);
    else "missed"."""
    if (value >= bound) if at_least else (value <= bound):
        return "met"
    if len(per_round) >= 3:
        mean = float(np.mean(per_round))
        half = T95.get(len(per_round) - 1, 1.96) * float(np.std(per_round, ddof=1)) / len(per_round) ** 0.5
        if mean - half <= bound <= mean + half:
            return "tie"
    return "missed"


def targets(kind: str, row: dict, client_counts: list[int]) -> list[dict]:
    """Each target of issue 12 for this model: what, the figure, the limit, the verdict."""
    out = []
    for n in client_counts:
        on, off, rounds = row[f"batching_{n}"], row[f"no_batching_{n}"], row[f"rounds_{n}"]
        p99 = on["p99_ms"] / off["p99_ms"]
        out.append({"target": f"p99 batching / no batching, {n} clients", "value": p99, "rounds": rounds["p99"],
                    "limit": f"<= {P99_RATIO_MAX}", "verdict": verdict(p99, P99_RATIO_MAX, rounds["p99"], False)})
        rps = on["rps"] / off["rps"]
        out.append({"target": f"req/s batching / no batching, {n} clients", "value": rps, "rounds": rounds["rps"],
                    "limit": ">= 1", "verdict": verdict(rps, 1.0, rounds["rps"], True)})
    top = max(client_counts)
    if kind == "vgg":
        ratio = row[f"batching_{top}"]["rps"] / row[f"no_batching_{top}"]["rps"]
        out.append({"target": f"VGG req/s batching / no batching, {top} clients", "value": ratio,
                    "limit": f">= {VGG_RPS_RATIO_MIN}", "verdict": "met" if ratio >= VGG_RPS_RATIO_MIN else "missed"})
    if kind == "mlp":
        cpu = row[f"batching_{top}"]["cpu_ms_per_request"]
        out.append({"target": f"MLP server cpu ms/req (batching, {top} clients)", "value": cpu,
                    "limit": f"<= {MLP_CPU_MS_MAX}", "verdict": "met" if cpu <= MLP_CPU_MS_MAX else "missed"})
    for t in out:
        t["met"] = t["verdict"] == "met"
    return out


def report(kind: str, ref: str, row: dict, client_counts: list[int]) -> None:
    print(f"\n== {kind.upper()} ({ref}) ==")
    print(f"bare forward (1 image, in process): {row['bare_forward_ms']:.3f} ms   decode+resize+forward: "
          f"{row['decode_and_forward_ms']:.3f} ms")
    print(f"{'server':<13}{'clients':>8}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}{'cpu ms/req':>11}{'errors':>7}"
          f"   batching / this: p99, req/s")
    for name in SERVERS:
        for n in client_counts:
            r, on = row[f"{name}_{n}"], row[f"batching_{n}"]
            ratio = "" if name == "batching" else f"{on['p99_ms'] / r['p99_ms']:.2f}x, {on['rps'] / r['rps']:.2f}x"
            print(f"{name:<13}{n:>8}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['rps']:>8.0f}"
                  f"{r['cpu_ms_per_request']:>11.3f}{r['errors']:>7}   {ratio}")
    for t in row["targets"]:
        rounds = t.get("rounds")
        spread = f"; rounds {min(rounds):.2f}-{max(rounds):.2f}" if rounds and len(rounds) > 1 else ""
        word = {"met": "met", "tie": "tie (no measurable difference)", "missed": "MISSED"}[t["verdict"]]
        print(f"target: {t['target']}: {t['value']:.2f} ({t['limit']}{spread}) {word}")


THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--flask-server":
        flask_server(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,cnn,vgg", help="comma-separated: mlp, cnn (LeNet), vgg")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per server and client count")
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds the seconds are split into (paired batching / no-batching ratios per round)")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated concurrent client counts")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    client_counts = sorted({int(c) for c in args.clients.split(",") if c.strip()})
    threads = ", ".join(f"{v}={os.environ[v]}" for v in THREAD_VARIABLES if v in os.environ) or "none set"
    print(f"cpus: {os.cpu_count()}  load average: {os.getloadavg()[0]:.2f}  python {sys.version.split()[0]}  "
          f"thread variables: {threads}")
    results = run([m.strip() for m in args.models.split(",") if m.strip()], args.seconds, client_counts,
                  args.rounds)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    verdicts = [t["verdict"] for row in results.values() for t in row["targets"]]
    print(f"targets: {verdicts.count('met')} met, {verdicts.count('tie')} tied (the paired rounds' 95 % "
          f"interval contains the bound), {verdicts.count('missed')} missed")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
