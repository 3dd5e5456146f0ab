"""The photo page with a model of five classes, in headless Debian Chromium (Playwright): a photo
of another size and shape shows the top 3 classes, best first, and the 32x32 centre crop the
model saw."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from lambdanet.objects.folder import FolderStore
from lambdanet.registry import ModelRegistry
from lambdanet.serve.app import create_app
from tests.e2e.photos_support import ODD, expected_input, make_photo_folder
from tests.support.serving import UvicornThread

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CLASSES5 = ["ant", "bee", "cat", "dog", "eel"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_photo_folder(tmp_path_factory.mktemp("photos") / "photos")
    return root / ODD[0] / ODD[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornThread]:
    reg = ModelRegistry(FolderStore(tmp_path_factory.mktemp("registry")))
    rng = np.random.default_rng(7)
    n_x = 32 * 32 * 3
    weights = {"W1": rng.normal(0, 0.05, (5, n_x)).astype(np.float32), "b1": np.zeros((5, 1), np.float32)}
    reg.register("five", weights, {"kind": "mlp", "classes": CLASSES5, "input_shape": [32, 32, 3],
                                   "dtype": "float32", "architecture": {"layer_dims": [n_x, 5],
                                                                        "activations": ["softmax"]}})
    with UvicornThread(create_app(reg)) as s:
        yield s


@pytest.fixture(scope="module")
def page(server: UvicornThread) -> Iterator[object]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        yield context.new_page()
        context.close()
        browser.close()


def test_the_photo_page_shows_the_top_3_of_5_classes(page: object, server: UvicornThread, photo: Path,
                                                     artifacts: Path) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    expected = httpx.post(f"{server.url}/predict?preview=1", content=photo.read_bytes(),
                          headers={"content-type": "image/png"}, timeout=30).json()
    ranked = sorted(expected["probabilities"].items(), key=lambda kv: -kv[1])
    page.goto(server.url + "/")
    page.set_input_files("#file", str(photo))
    expect(page.locator("#label")).to_have_text(expected["label"], timeout=30_000)
    bars = page.locator("#bars .bar")
    expect(bars).to_have_count(3)
    shown = [bars.nth(i).locator("span").first.inner_text() for i in range(3)]
    assert shown == [name for name, _ in ranked[:3]]  # the three most probable, best first
    expect(page.locator("#more")).to_have_text("top 3 of 5 classes")
    natural = page.eval_on_selector("#seen", "img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [32, 32]
    seen = page.eval_on_selector("#seen", "img => img.src")
    assert seen == expected["preview"]  # the page shows what the model saw: the 32x32 centre crop
    import base64
    import io

    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(seen.split(",", 1)[1]))))
    np.testing.assert_array_equal(pixels, expected_input(photo, 32))
    page.screenshot(path=str(artifacts / "photos_top3_page.png"), full_page=True)
