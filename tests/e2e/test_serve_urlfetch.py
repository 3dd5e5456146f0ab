"""itsacat's GET /image?image=URL through a real server: off by default, and the URL guard.

Every address here is loopback. The server's address policy is its real one (public addresses
only) plus ONE admitted loopback port, the test's image server — so a fetch can succeed, and a
redirect from it to any other loopback port shows that every hop is checked again."""

from __future__ import annotations

import http.server
import ipaddress
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from lambdanet.objects.folder import FolderStore
from lambdanet.registry import ModelRegistry
from lambdanet.serve.app import create_app
from lambdanet.serve.urlguard import IPAddress, is_public_address
from tests.conftest import CATVNONCAT, IMAGES
from tests.support.serving import UvicornThread, register_catvnoncat_mlp

GRUMPY = (IMAGES / "grumpy_cat.jpeg").read_bytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"missing"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _http_server(routes: dict[str, tuple[int, dict[str, str], bytes]]) -> tuple[http.server.HTTPServer, list[str]]:
    handler = type("H", (_Handler,), {"routes": routes, "hits": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler.hits


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    reg = ModelRegistry(FolderStore(tmp_path_factory.mktemp("registry")))
    register_catvnoncat_mlp(reg, CATVNONCAT / "datasets.h5")
    target, target_hits = _http_server({"/cat.jpg": (200, {"Content-Type": "image/jpeg"}, GRUMPY)})
    target_port = target.server_address[1]
    images, image_hits = _http_server({
        "/cat.jpg": (200, {"Content-Type": "image/jpeg"}, GRUMPY),
        "/big.jpg": (200, {}, b"\xff" * 3_000_000),
        "/to-loopback": (302, {"Location": f"http://127.0.0.1:{target_port}/cat.jpg"}, b""),
        "/to-localhost": (301, {"Location": f"http://localhost:{target_port}/cat.jpg"}, b""),
        "/to-file": (302, {"Location": "file:///etc/passwd"}, b""),
        "/to-metadata": (307, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
    })
    admitted = images.server_address[1]

    def policy(ip: IPAddress, port: int) -> bool:
        return (ip == ipaddress.ip_address("127.0.0.1") and port == admitted) or is_public_address(ip)

    fetching = create_app(reg, allow_url_fetch=True, url_policy=policy, fetch_max_bytes=2_000_000)
    with UvicornThread(fetching) as on, UvicornThread(create_app(reg)) as off, \
            httpx.Client(base_url=on.url, timeout=30) as c_on, httpx.Client(base_url=off.url, timeout=30) as c_off:
        yield {"on": c_on, "off": c_off, "images": f"http://127.0.0.1:{admitted}", "server_port": on.port,
               "target": f"http://127.0.0.1:{target_port}", "target_hits": target_hits, "image_hits": image_hits}
    images.shutdown()
    target.shutdown()


def test_image_url_is_off_by_default(setup: dict) -> None:
    r = setup["off"].get("/image", params={"image": setup["images"] + "/cat.jpg"})
    assert r.status_code == 403 and "--allow-url-fetch" in r.json()["error"]
    assert setup["image_hits"] == []


def test_image_url_fetch_returns_itsacat_html(setup: dict) -> None:
    r = setup["on"].get("/image", params={"image": setup["images"] + "/cat.jpg", "model": "itsacat"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    label = setup["on"].post("/predict", content=GRUMPY, headers={"content-type": "image/jpeg"}).json()["label"]
    assert f"The Image Prediction API predicts a {label.upper()} image" in r.text


@pytest.mark.parametrize("url, needle", [
    ("file:///etc/passwd", "only http:// and https://"),
    ("ftp://127.0.0.1/x.png", "only http:// and https://"),
    ("http:///x.png", "no host"),
    ("http://127.0.0.1:{server}/v2/health/live", "not a public address"),
    ("http://localhost:{server}/", "not a public address"),
    ("http://[::1]:{server}/", "not a public address"),
    ("http://[::ffff:127.0.0.1]:{server}/", "not a public address"),
    ("http://0.0.0.0:{server}/", "not a public address"),
    ("{target}/cat.jpg", "not a public address"),
])
def test_refused_urls(setup: dict, url: str, needle: str) -> None:
    url = url.replace("{server}", str(setup["server_port"])).replace("{target}", setup["target"])
    r = setup["on"].get("/image", params={"image": url})
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]


@pytest.mark.parametrize("path, needle", [
    ("/to-loopback", "not a public address"),
    ("/to-localhost", "not a public address"),
    ("/to-file", "only http:// and https://"),
    ("/to-metadata", "169.254.169.254"),
    ("/loop", "redirects"),
])
def test_redirects_are_checked_hop_by_hop(setup: dict, path: str, needle: str) -> None:
    r = setup["on"].get("/image", params={"image": setup["images"] + path})
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]
    assert path in setup["image_hits"]  # the admitted first hop was fetched …
    assert setup["target_hits"] == []  # … but never the loopback target it redirected to


def test_fetch_size_limit(setup: dict) -> None:
    r = setup["on"].get("/image", params={"image": setup["images"] + "/big.jpg"})
    assert r.status_code == 413 and "2000000" in r.json()["error"]


def test_missing_image_parameter(setup: dict) -> None:
    r = setup["on"].get("/image")
    assert r.status_code == 400 and "image" in r.json()["error"]


def test_not_found_upstream(setup: dict, tmp_path: Path) -> None:
    r = setup["on"].get("/image", params={"image": setup["images"] + "/nothing-here"})
    assert r.status_code == 400 and "HTTP 404" in r.json()["error"]
