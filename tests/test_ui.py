"""The browser page of `rmbg serve`, driven in a real Chromium (Debian's, through Playwright) against a
real server on 127.0.0.1: what the page shows and downloads must be what POST /v1/remove returns."""

from __future__ import annotations

import base64
import io
import itertools
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_server import REPO_ROOT, Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
# The machine's network is closed: nothing in the browser may try to phone home.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 120_000  # an image through the fixture model takes seconds on 2 busy cores
SCREENSHOT = REPO_ROOT / "docs" / "ui.png"

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need pip install playwright")
if not CHROMIUM.exists():
    pytest.skip(f"the browser tests need {CHROMIUM}: apt-get install chromium", allow_module_level=True)
expect = sync_api.expect


@dataclass
class Tab:
    """A page with every request the browser made from it."""

    page: object
    origin: str
    requests: list = field(default_factory=list)

    def open(self) -> Tab:
        self.page.on("request", lambda request: self.requests.append(request))
        self.page.goto(f"{self.origin}/")
        return self

    def pick(self, *paths: Path) -> None:
        self.page.set_input_files("#files", [str(p) for p in paths])

    def card(self, index: int):
        return self.page.locator(".card").nth(index)

    def posts(self) -> list:
        return [r for r in self.requests if r.method == "POST"]

    def read(self, url: str) -> bytes:
        """The bytes behind a URL as the page sees them (a blob: URL lives only inside the page)."""
        return base64.b64decode(self.page.evaluate(READ_URL, url))

    def download(self, card) -> tuple[str, bytes]:
        link = card.locator("a.download")
        expect(link).to_be_visible(timeout=WAIT_MS)
        return link.get_attribute("download"), self.read(link.get_attribute("href"))

    def assert_same_origin(self) -> None:
        # blob: URLs carry the origin that made them; anything else must be the server itself.
        outside = [
            r.url for r in self.requests if not r.url.startswith((f"{self.origin}/", f"blob:{self.origin}/"))
        ]
        assert self.requests and not outside, f"requests left the server's origin: {outside}"


SLIDE_TO_35 = "slider => { slider.value = 35; slider.dispatchEvent(new Event('input')); }"
READ_URL = """async (url) => {
  const blob = await (await fetch(url)).blob();
  return await new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.split(",")[1]);
    reader.readAsDataURL(blob);
  });
}"""


@pytest.fixture(scope="module")
def server(exported_model_dir):
    # One image per batch and one queued: a third image in flight gets 503. Bodies up to 0.25 MB.
    args = ("--max-batch", "1", "--max-queue", "1", "--max-delay-ms", "1", "--max-body-mb", "0.25")
    with Server(exported_model_dir, *args) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_tab(browser, server: Server, **context_options):
    # The page's Content-Security-Policy (checked on its own below) would also block Playwright's
    # evaluations; bypassing it here means any request the page attempts is seen, not blocked.
    context = browser.new_context(
        bypass_csp=True, accept_downloads=True, viewport={"width": 1280, "height": 900}, **context_options
    )
    return Tab(context.new_page(), server.url).open()


@pytest.fixture
def tab(browser, server):
    tab = open_tab(browser, server)
    try:
        yield tab
    finally:
        tab.page.context.close()


def scene(path: Path, seed: int, size: tuple[int, int] = (360, 270)) -> Path:
    """A small smooth picture (a round shape on a gradient): a few KB of PNG."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    sky = np.stack([170 + 50 * x / width, 195 + 40 * y / height, np.full_like(x, 235.0)], -1)
    image = Image.fromarray(sky.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    color = tuple(int(c) for c in rng.integers(30, 230, 3))
    draw.ellipse([width * 0.3, height * 0.15, width * 0.7, height * 0.8], fill=color)
    draw.rectangle([width * 0.42, height * 0.7, width * 0.58, height], fill=(90, 60, 40))
    image.save(path)
    return path


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def served(server: Server, path: Path, **params: str) -> np.ndarray:
    """What POST /v1/remove returns for this file and these options, decoded."""
    response = server.post("/v1/remove", params=params, content=path.read_bytes())
    assert response.status_code == 200, response.text
    return pixels(response.content)


def test_page_is_served_from_the_package_and_no_ui_turns_it_off(server, exported_model_dir):
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset, kind in (("app.js", "javascript"), ("app.css", "text/css"), ("icon.svg", "image/svg")):
        response = httpx.get(f"{server.url}/ui/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"], asset
    assert "/" not in httpx.get(f"{server.url}/openapi.json").json()["paths"]

    with Server(exported_model_dir, "--no-ui") as off:
        assert httpx.get(f"{off.url}/").status_code == 404
        assert httpx.get(f"{off.url}/ui/app.js").status_code == 404
        assert httpx.get(f"{off.url}/healthz").status_code == 200


def test_a_picked_image_downloads_what_v1_remove_returns(server, tab, tmp_path):
    photo = scene(tmp_path / "garden.png", seed=1)
    tab.pick(photo)
    card = tab.card(0)
    name, data = tab.download(card)
    assert name == "garden-cutout.png"
    assert np.array_equal(pixels(data), served(server, photo, format="png"))
    expect(card).to_have_attribute("data-state", "done")
    timing = card.locator(".timing").inner_text()
    for stage in ("queue", "decode", "preprocess", "inference", "postprocess", "encode", "batch"):
        assert stage in timing
    tab.assert_same_origin()


def test_errors_are_shown_in_words(tab, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("a shopping list, not a picture")
    too_large = tmp_path / "huge.png"
    too_large.write_bytes(b"\x89PNG" + os.urandom(300_000))  # over --max-body-mb 0.25
    tab.pick(text, too_large)
    for index, words in ((0, "Not an image the server can read"), (1, "Too large for this server")):
        card = tab.card(index)
        expect(card).to_have_attribute("data-state", "error", timeout=WAIT_MS)
        expect(card.locator(".status")).to_contain_text(words)
        expect(card.locator("a.download")).to_be_hidden()
    expect(tab.card(0).locator(".status")).to_contain_text("not an image format Pillow can read")
    expect(tab.card(1).locator(".status")).to_contain_text("--max-body-mb")
    tab.assert_same_origin()


def test_busy_server_is_retried_after_retry_after(tab, tmp_path):
    # Sizes differ so that each POST tells which image it carries by its Content-Length.
    photos = [scene(tmp_path / f"p{i}.png", seed=10 + i, size=(300 + 20 * i, 240)) for i in range(5)]
    tab.pick(*photos)
    for index in range(len(photos)):  # three in flight, the server admits two: 503s happen
        expect(tab.card(index)).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    tries = {str(photo.stat().st_size): [] for photo in photos}
    assert len(tries) == len(photos)
    for request in tab.posts():
        start_ms, timing, response = request.timing["startTime"], request.timing, request.response()
        tries[request.all_headers()["content-length"]].append(
            (start_ms, start_ms + timing["responseEnd"], response.status, response.headers.get("retry-after"))
        )  # fmt: skip
    assert sum(status == 503 for attempts in tries.values() for *_, status, _ in attempts) > 0
    for attempts in map(sorted, tries.values()):
        *refused, (_, _, last_status, _) = attempts
        assert last_status == 200 and all(status == 503 for *_, status, _ in refused)
        for (_, end_ms, _, retry_after), (next_start_ms, *_) in itertools.pairwise(attempts):
            assert next_start_ms - end_ms >= 1000 * float(retry_after) - 20, "sent again before Retry-After"
    tab.assert_same_origin()


def test_slider_and_controls_re_request_only_their_image(server, tab, tmp_path):
    first, second = scene(tmp_path / "first.png", seed=2), scene(tmp_path / "second.png", seed=3)
    page = tab.page
    page.keyboard.press("Tab")  # the file input is the first stop on a fresh page
    assert page.evaluate("document.activeElement.id") == "files"
    tab.pick(first, second)
    card, other = tab.card(0), tab.card(1)
    tab.download(card)
    tab.download(other)

    # The slider: keyboard and pointer move the split between the original and the result.
    after, split = card.locator("img.after"), card.locator("input.split")
    split.focus()
    page.keyboard.press("Home")
    assert after.evaluate("img => getComputedStyle(img).clipPath") == "inset(0px 0px 0px 0%)"
    page.keyboard.press("ArrowRight")
    assert after.evaluate("img => getComputedStyle(img).clipPath") == "inset(0px 0px 0px 1%)"
    box = split.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2)
    assert 70 <= int(split.input_value()) <= 80

    # The mask view is the cut-out's alpha, with no request of its own.
    mask = served(server, first, mask_only="true")
    posts = len(tab.posts())
    card.locator(".views label", has_text="Mask").click()
    expect(after).to_have_attribute("alt", "Mask: first.png")
    assert np.array_equal(pixels(tab.read(after.get_attribute("src")))[..., 0], mask)
    assert len(tab.posts()) == posts

    # Each control re-requests its own image only, and the new download is what /v1/remove returns.
    card.locator("input.mask-only").focus()
    page.keyboard.press("Space")
    name, data = tab.download(card)
    assert name == "first-mask.png" and np.array_equal(pixels(data), mask)
    assert len(tab.posts()) == posts + 1
    card.locator("select.format").select_option("webp")
    name, data = tab.download(card)
    assert name == "first-mask.webp" and data[8:12] == b"WEBP"
    assert np.array_equal(pixels(data), served(server, first, mask_only="true", format="webp"))
    other.locator("select.background").select_option("#ffffff")
    other.locator("input.refine").check()
    name, data = tab.download(other)
    assert name == "second-cutout.png"
    assert np.array_equal(pixels(data), served(server, second, background="#ffffff", refine="true"))
    assert len(tab.posts()) == posts + 4

    # "Apply to all" gives the other image these settings (one more request) and new images too.
    card.locator("button.apply-all").click()
    name, data = tab.download(other)
    assert name == "second-mask.webp"
    assert np.array_equal(pixels(data), served(server, second, mask_only="true", format="webp"))
    assert len(tab.posts()) == posts + 5

    # "Download all" saves every finished image under its link's name, with its link's bytes.
    downloads = []
    page.on("download", lambda download: downloads.append(download))
    page.click("#download-all")
    page.wait_for_timeout(2000)  # the page spaces its clicks out
    assert sorted(d.suggested_filename for d in downloads) == ["first-mask.webp", "second-mask.webp"]
    for download in downloads:
        link = page.locator(f'a.download[download="{download.suggested_filename}"]')
        assert Path(download.path()).read_bytes() == tab.read(link.get_attribute("href"))
    tab.assert_same_origin()


def test_timeouts_are_shown_in_words(exported_model_dir, browser, tmp_path):
    with Server(exported_model_dir, "--timeout-s", "0.001") as server:
        tab = open_tab(browser, server)
        try:
            tab.pick(scene(tmp_path / "slow.png", seed=4))
            card = tab.card(0)
            expect(card).to_have_attribute("data-state", "error", timeout=WAIT_MS)
            expect(card.locator(".status")).to_contain_text("The server did not finish in time")
            expect(card.locator(".status")).to_contain_text("--timeout-s")
            tab.assert_same_origin()
        finally:
            tab.page.context.close()


def test_light_dark_phone_and_screenshot(server, browser, tmp_path):
    """Readable in both colour schemes and on a phone; the README's screenshot comes from here
    (RMBG_UPDATE_SCREENSHOT=1 writes docs/ui.png)."""
    tab = open_tab(browser, server)
    try:
        page = tab.page
        photos = [scene(tmp_path / f"{name}.png", seed) for name, seed in (("tulip", 21), ("lamp", 22))]
        notes = tmp_path / "notes.txt"
        notes.write_text("not a picture")
        tab.pick(*photos, notes)
        for index in range(2):
            expect(tab.card(index)).to_have_attribute("data-state", "done", timeout=WAIT_MS)
        expect(tab.card(2)).to_have_attribute("data-state", "error", timeout=WAIT_MS)
        tab.card(1).locator(".views label", has_text="Mask").click()
        expect(tab.card(1).locator("img.after")).to_have_attribute("alt", "Mask: lamp.png")
        tab.card(0).locator("input.split").evaluate(SLIDE_TO_35)
        background = "getComputedStyle(document.body).backgroundColor"
        page.emulate_media(color_scheme="dark")
        dark = page.evaluate(background)
        page.emulate_media(color_scheme="light")
        assert page.evaluate(background) != dark
        shot = page.screenshot(path=tmp_path / "ui.png")
        assert len(shot) < 300_000, "keep the README's screenshot small"
        if os.environ.get("RMBG_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(exist_ok=True)
            SCREENSHOT.write_bytes(shot)

        page.set_viewport_size({"width": 390, "height": 844})  # a phone: one column, nothing cut off
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        boxes = [tab.card(i).bounding_box() for i in range(3)]
        assert all(box["x"] >= 0 and box["x"] + box["width"] <= 390 for box in boxes)
        assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"]
        tab.assert_same_origin()
    finally:
        tab.page.context.close()


def serve_help() -> str:
    command = [sys.executable, "-c", "from rmbg_runtime.cli import main; main()", "serve", "--help"]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60).stdout


def test_api_key_is_asked_for_and_kept_in_session_storage(exported_model_dir, browser, tmp_path):
    if "--api-key-file" not in serve_help():
        pytest.skip("this server has no --api-key-file (rmbg serve --help does not list it)")
    key = "s3cret-key-for-the-page"
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"{key}\n")
    with Server(exported_model_dir, "--api-key-file", str(key_file)) as server:
        tab = open_tab(browser, server)
        try:
            page, dialog = tab.page, tab.page.locator("#key-dialog")
            tab.pick(scene(tmp_path / "first.png", seed=5))
            expect(dialog).to_be_visible(timeout=WAIT_MS)
            page.fill("#key-input", "wrong-key")
            page.click("#key-dialog button[value=ok]")
            expect(dialog).to_be_visible(timeout=WAIT_MS)
            expect(page.locator("#key-reason")).to_contain_text("refused")
            page.fill("#key-input", key)
            page.click("#key-dialog button[value=ok]")
            expect(tab.card(0)).to_have_attribute("data-state", "done", timeout=WAIT_MS)
            assert page.evaluate("sessionStorage.getItem('rmbg-api-key')") == key
            assert tab.posts()[-1].headers.get("x-api-key") == key

            page.reload()  # the key is kept for the tab: no second question
            tab.pick(scene(tmp_path / "second.png", seed=6))
            expect(tab.card(0)).to_have_attribute("data-state", "done", timeout=WAIT_MS)
            expect(dialog).to_be_hidden()
            tab.assert_same_origin()
        finally:
            tab.page.context.close()
