"""The API key, when set, guards every route but health (and the photo page's static files).

``lambdanet serve --api-key K`` runs in a subprocess; the route list comes from the app itself
(``create_app(...).routes``), so a route added later is covered without editing this test.
Without a key, or with a wrong one, every guarded route answers 401 JSON; with the key none does.
"""

from __future__ import annotations

import re
import secrets

import httpx
import pytest
from tests.conftest import free_port
from tests.security.seed import seed_mlp_model, serve

KEY = "k" + secrets.token_hex(16)
PUBLIC = {"/", "/index.html", "/static/app.js", "/static/style.css"}  # the page: no data in it


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    from lambdanet.objects.folder import FolderStore
    from lambdanet.registry import ModelRegistry
    from lambdanet.serve.app import create_app

    app = create_app(ModelRegistry(FolderStore(tmp_path_factory.mktemp("routes"))), preload=False)
    out: set[tuple[str, str]] = set()

    def walk(routes: list, prefix: str = "") -> None:  # type: ignore[type-arg]
        for route in routes:
            inner = getattr(route, "original_router", None)  # FastAPI's lazily included routers
            if inner is not None:
                walk(inner.routes, prefix + (getattr(inner, "prefix", "") or ""))
                continue
            path = getattr(route, "path", None)
            if path:
                full = path if path.startswith(prefix) else prefix + path
                out.update((m, full) for m in (getattr(route, "methods", None) or {"GET"})
                           if m not in ("HEAD", "OPTIONS"))

    walk(app.routes)
    for path, ops in app.openapi()["paths"].items():  # the documented routes, as a cross-check
        out.update((m.upper(), path) for m in ops)
    return sorted(out)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("apikey") / "home"
    seed_mlp_model(home / "objects", "guarded")
    port = free_port()
    with serve(home, port, "--api-key", KEY) as proc:
        yield f"http://127.0.0.1:{port}", proc


def _fill(path: str) -> str:
    values = {"name": "guarded", "version": "1", "run_id": "r-x", "path": "x", "file_path": "app.js"}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "x"), path)


def test_every_route_but_health_needs_the_key(server, app_routes) -> None:  # type: ignore[no-untyped-def]
    base, proc = server
    guarded = [(m, p) for m, p in app_routes if not p.startswith("/v2/health") and p not in PUBLIC]
    assert len(guarded) >= 20, guarded  # v2, /predict, /image, /models, /metrics, /docs, dashboard …
    with httpx.Client(base_url=base, timeout=20, trust_env=False) as client:
        for method, path in guarded:
            url = _fill(path)
            for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                            {"Authorization": f"Basic {KEY}"}):
                r = client.request(method, url, headers=headers)
                assert r.status_code == 401, f"{method} {url} with {headers}: {r.status_code}"
                assert "API key" in r.json()["error"]
            for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
                r = client.request(method, url, headers=headers)
                assert r.status_code != 401, f"{method} {url} refused the right key"
                assert r.status_code < 500, f"{method} {url}: {r.status_code} {r.text[:200]}"
        for path in ("/v2/health/live", "/v2/health/ready"):
            assert client.get(path).status_code == 200
    assert proc.poll() is None


def test_the_key_never_appears_in_answers(server) -> None:  # type: ignore[no-untyped-def]
    base, _ = server
    with httpx.Client(base_url=base, timeout=20, trust_env=False) as client:
        for path in ("/v2", "/models", "/metrics", "/openapi.json", "/v2/models/guarded"):
            r = client.get(path, headers={"X-API-Key": KEY})
            assert r.status_code == 200, path
            assert KEY not in r.text, path
