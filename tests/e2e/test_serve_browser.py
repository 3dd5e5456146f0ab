"""The photo page in headless Debian Chromium (Playwright): pick a photo, see the label."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lambdanet.objects.folder import FolderStore
from lambdanet.registry import ModelRegistry
from lambdanet.serve.app import create_app
from tests.conftest import CATVNONCAT, IMAGES
from tests.support.serving import UvicornThread, register_catvnoncat_mlp

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornThread]:
    reg = ModelRegistry(FolderStore(tmp_path_factory.mktemp("registry")))
    register_catvnoncat_mlp(reg, CATVNONCAT / "datasets.h5")
    reg.set_alias("itsacat", "production", 1)
    with UvicornThread(create_app(reg, api_key="pagekey")) as s:
        yield s


@pytest.fixture(scope="module")
def page(server: UvicornThread) -> Iterator[object]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                      is_mobile=True, has_touch=True)  # a phone
        yield context.new_page()
        context.close()
        browser.close()


def test_photo_page_shows_label_probabilities_and_what_the_model_saw(
        page: object, server: UvicornThread, artifacts: Path) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    photo = IMAGES / "grumpy_cat.jpeg"
    expected = httpx.post(f"{server.url}/predict?model=itsacat@production", content=photo.read_bytes(),
                          headers={"content-type": "image/jpeg", "X-API-Key": "pagekey"}, timeout=30).json()

    page.goto(server.url + "/")
    expect(page.locator("#keyrow")).to_be_visible()  # /models answered 401: the page asks for the key
    page.fill("#apikey", "pagekey")
    page.dispatch_event("#apikey", "change")
    expect(page.locator("#model option[value='itsacat@production']")).to_have_count(1)
    page.select_option("#model", "itsacat@production")
    page.set_input_files("#file", str(photo))

    expect(page.locator("#label")).to_have_text(expected["label"], timeout=30_000)
    expect(page.locator("#meta")).to_contain_text(f"itsacat:{expected['version']}")
    bars = page.locator("#bars .bar")
    expect(bars).to_have_count(2)
    expect(page.locator("#seencap")).to_contain_text("64×64")
    natural = page.eval_on_selector("#seen", "img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [64, 64]
    assert page.locator("#error").inner_text() == ""
    shot = artifacts / "serve_photo_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_camera_input_asks_for_the_back_camera(page: object, server: UvicornThread) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.goto(server.url + "/")
    camera = page.locator("#camera")
    assert camera.get_attribute("capture") == "environment"
    assert camera.get_attribute("accept") == "image/*"
