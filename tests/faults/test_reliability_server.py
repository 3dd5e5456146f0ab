"""SIGTERM to ``lambdanet serve`` while requests are in flight: every one of them finishes.

24 requests are sent over raw sockets, each without the last byte of its body, so every one is in
flight (headers parsed, the handler reading the body); the server gets SIGTERM, must keep
running, refuses new connections, and once the last bytes arrive every request must still get
its 200 with a prediction; the server then exits by itself (uvicorn's graceful shutdown: status
0, or -SIGTERM as uvicorn re-raises the signal after shutting down), and a connection made after
the signal is refused.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import IMAGES, free_port
from tests.security.reliability_counts import record
from tests.security.seed import seed_mlp_model, serve

pytestmark = [pytest.mark.slow]
N = 24


def _request(port: int, body: bytes, hold: int = 0) -> socket.socket:
    """Send a /predict request, keeping back its last ``hold`` bytes (the request is then in
    flight: its headers are parsed and the handler waits for the rest of the body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    s.sendall(head + body[: len(body) - hold])
    return s


def _response(s: socket.socket) -> tuple[int, dict]:  # type: ignore[type-arg]
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    finally:
        s.close()
    raw = b"".join(chunks)
    assert raw, "the connection was closed without an answer"
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return status, json.loads(body)


def _unchunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path) -> None:
    home = tmp_path / "home"
    seed_mlp_model(home / "objects", "graceful", (64, 64, 3), hidden=8)
    port = free_port()
    photo = (IMAGES / "grumpy_cat.jpeg").read_bytes()
    with serve(home, port) as proc:
        warm = _request(port, photo)  # loads the model
        assert _response(warm)[0] == 200
        sockets = [_request(port, photo, hold=1) for _ in range(N)]
        time.sleep(0.3)  # the server has read every request's headers and waits for the last byte
        for s in sockets:  # none can have an answer: they are in flight when the signal comes
            s.settimeout(0)
            with pytest.raises(BlockingIOError):
                s.recv(1, socket.MSG_PEEK)
            s.settimeout(30)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None, "the server quit with requests in flight"
        with pytest.raises(OSError):  # but it takes no new connection
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        for s in sockets:
            s.sendall(photo[-1:])
        answers = [_response(s) for s in sockets]
        code = proc.wait(timeout=60)
    assert [status for status, _ in answers] == [200] * N
    assert all(doc["label"] in ("a", "b") and doc["model"] == "graceful" for _, doc in answers)
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
    record("faults", {"sigterm_in_flight_requests": N, "sigterm_in_flight_completed": N,
                      "sigterm_command": "pytest tests/faults/test_reliability_server.py"})
