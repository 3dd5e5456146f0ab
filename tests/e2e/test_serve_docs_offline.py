"""The serving docs with no internet: ``/docs`` (Swagger UI) and ``/redoc`` render in headless
Chromium from a real ``lambdanet serve`` whose every request outside the server is refused; and
the v2 example of docs/serving.md, run exactly as written, answers on the shipped photo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from lambdanet.objects.folder import FolderStore
from lambdanet.registry import ModelRegistry
from tests.conftest import CATVNONCAT, IMAGES, REPO, SHARED, wait_for_port
from tests.support.serving import free_port, register_catvnoncat_mlp

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``lambdanet serve`` in a subprocess over a registry holding ``catvnoncat`` (the quick
    start's model name): its base URL."""
    objects = tmp_path_factory.mktemp("docs-registry")
    register_catvnoncat_mlp(ModelRegistry(FolderStore(objects)), CATVNONCAT / "datasets.h5", name="catvnoncat")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "LAMBDANET_HOME": str(objects.parent / "home")}
    env.pop("LAMBDANET_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "lambdanet", "serve", "--registry", str(objects), "--port",
                             str(port), "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout_s=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        assert b"Traceback" not in err, err.decode(errors="replace")[-2000:]


@pytest.fixture(scope="module")
def offline_browser(server: str) -> Iterator[tuple[object, list[str]]]:
    """A Chromium context in which every request that is not to the server fails, as with no
    network; the list collects those requests (``"resource type: URL"``)."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import Route, sync_playwright

    ours = urlsplit(server).netloc
    outside: list[str] = []

    def only_the_server(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == ours or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside.append(f"{route.request.resource_type}: {url}")
            route.abort("internetdisconnected")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route("**/*", only_the_server)
        yield context, outside
        context.close()
        browser.close()


@pytest.mark.browser
def test_swagger_ui_renders_offline(server: str, offline_browser: tuple[object, list[str]], artifacts: Path) -> None:
    from PIL import Image
    from playwright.sync_api import BrowserContext, expect

    context, outside = offline_browser
    assert isinstance(context, BrowserContext)
    page = context.new_page()
    page.goto(server + "/docs")
    operations = page.locator(".swagger-ui .opblock")
    expect(operations.first).to_be_visible(timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert len(paths) >= 10
    assert "/predict" in paths and "/v2/models/{name}/infer" in {p.replace("\u200b", "") for p in paths}
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("lambdanet prediction service")
    shot = artifacts / "serve_docs_offline.png"
    page.screenshot(path=str(shot))
    with Image.open(shot) as image:  # not a blank page: many colours, and dark text on many rows
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    assert (pixels.min(axis=(1, 2)) < 100).mean() > 0.2
    assert outside == [], outside
    page.close()


@pytest.mark.browser
def test_redoc_renders_offline(server: str, offline_browser: tuple[object, list[str]]) -> None:
    from playwright.sync_api import BrowserContext, expect

    context, outside = offline_browser
    assert isinstance(context, BrowserContext)
    page = context.new_page()
    page.goto(server + "/redoc")
    expect(page.locator("h1").first).to_contain_text("lambdanet prediction service", timeout=30_000)
    expect(page.get_by_text("/v2/models/{name}/infer").first).to_be_attached()
    # nothing it needs comes from outside; only ReDoc's "API docs by Redocly" logo, an image link
    # in its bundle, is missing
    assert [u for u in outside if u != "image: https://cdn.redoc.ly/redoc/logo-mini.svg"] == [], outside
    page.close()


def test_docs_assets_come_from_the_server(server: str) -> None:
    html = httpx.get(server + "/docs", timeout=20).text
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(u.startswith("/docs/assets/") for u in urls), urls
    for url in urls:
        r = httpx.get(server + url, timeout=20)
        assert r.status_code == 200 and len(r.content) > 1000, url


def documented_v2_example() -> str:
    """The bash block of docs/serving.md that sends the photo with ``--data-binary @body.json``."""
    text = (REPO / "docs" / "serving.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", text, re.DOTALL) if "--data-binary @body.json" in b]
    assert len(blocks) == 1, "docs/serving.md: expected one bash block using --data-binary @body.json"
    return blocks[0]


def test_the_documented_v2_example_runs_as_written(server: str, tmp_path: Path) -> None:
    script = documented_v2_example()
    assert "../shared/images/grumpy_cat.jpeg" in script and "127.0.0.1:8000" in script
    # a clone beside ../shared, as in the docs; only the port is this test server's
    clone = tmp_path / "clone"
    clone.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", script.replace("127.0.0.1:8000", urlsplit(server).netloc)],
                         cwd=clone, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    answer = json.loads(res.stdout)
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert answer["model_name"] == "catvnoncat"
    assert outputs["probabilities"]["shape"] == [1, 2]
    expected = httpx.post(server + "/predict?model=catvnoncat", content=(IMAGES / "grumpy_cat.jpeg").read_bytes(),
                          headers={"content-type": "image/jpeg"}, timeout=30).json()
    assert outputs["label"]["data"] == [expected["label"]]
    assert (clone / "body.json").stat().st_size > 1_000_000  # the whole photo went, in a file
