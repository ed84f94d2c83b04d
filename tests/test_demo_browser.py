"""demo.py in a real browser: start the app on a free port, open it in headless Chromium
(Debian's chromium + chromium-driver, driven by selenium), upload a photo, move the yaw
slider and check that a new output image appears. Skips without Gradio, selenium or
Chromium.

    RR_DEMO_SCREENSHOT=docs/demo.png python -m pytest -q tests/test_demo_browser.py

also saves the page with its outputs as the README's screenshot (made from the
public-domain astronaut portrait).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
PRETRAINED = os.path.join(REPO, "pretrained", "blend_lfw.safetensors")
SCREENSHOT_BYTES = 300_000
pytestmark = pytest.mark.slow  # about 50 s: the app's start-up and a browser

pytest.importorskip("gradio", reason="gradio not installed (requirements-demo.txt)")
pytest.importorskip("selenium", reason="selenium not installed (requirements-demo.txt)")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("chromium / chromedriver not found (apt-get install chromium chromium-driver)",
                allow_module_level=True)
if not os.path.exists(PRETRAINED):
    pytest.skip(f"shipped generator not found: {PRETRAINED}", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "demo.py", "--port", str(port), "--checkpoint",
                                 PRETRAINED], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"demo.py exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"demo.py did not serve {url} in 180 s:\n{log.read_text()}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1500,1000", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # to list its requests
    # The system driver: selenium's own manager would try to download one.
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(CHROMEDRIVER))
    yield driver
    driver.quit()


def output_src(driver, elem_id: str = "output") -> str:
    imgs = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
    return imgs[0].get_attribute("src") if imgs else ""


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for since the last call (Chrome's network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def fetch_image(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=30) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))


def test_upload_then_slider_shows_a_new_output(app_url, browser, example_dir):
    browser.get(app_url)
    wait = WebDriverWait(browser, 120, poll_frequency=0.5)
    upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#photo input[type=file]"))
    upload.send_keys(str(example_dir / "astronaut.png"))
    first = wait.until(output_src)
    image = fetch_image(first)
    assert image.shape == (256, 256, 3) and len(np.unique(image)) > 64
    assert "astronaut.png at yaw +30" in browser.find_element(By.ID, "message").text

    yaw = browser.find_element(By.CSS_SELECTOR, "#yaw input[type=number]")
    yaw.send_keys(Keys.CONTROL, "a")
    yaw.send_keys("-40", Keys.ENTER)
    second = wait.until(lambda d: (src := output_src(d)) != first and src)
    turned = fetch_image(second)
    assert turned.shape == (256, 256, 3)
    assert np.abs(turned.astype(int) - image).mean() > 5, "the output did not turn"
    wait.until(lambda d: "yaw -40" in d.find_element(By.ID, "message").text)

    browser.find_element(By.ID, "sweep_button").click()
    gif = wait.until(lambda d: output_src(d, "sweep"))
    with urllib.request.urlopen(gif, timeout=30) as r, Image.open(io.BytesIO(r.read())) as im:
        assert im.format == "GIF" and im.n_frames == 24 and im.size == (256, 256)

    # Offline: the page loaded nothing from anywhere but the app (no CDN fonts or scripts).
    urls = requested_urls(browser)
    assert urls and all(u.startswith((app_url, "data:", "blob:")) for u in urls), [
        u for u in urls if not u.startswith((app_url, "data:", "blob:"))]

    target = os.environ.get("RR_DEMO_SCREENSHOT")
    if target:
        save_screenshot(browser, target)


@pytest.mark.parametrize("name, message", [
    ("notes.jpg", "notes.jpg: not a readable image: not an image (unrecognised format)"),
    ("wall.png", "wall.png: no face found"),
])
def test_a_bad_upload_gives_its_message(app_url, browser, tmp_path, name, message):
    browser.get(app_url)
    wait = WebDriverWait(browser, 60, poll_frequency=0.5)
    bad = tmp_path / name
    if name.endswith(".png"):
        Image.fromarray(np.full((200, 240, 3), 128, np.uint8)).save(bad)
    else:
        bad.write_bytes(b"not a photo")
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#photo input[type=file]")).send_keys(
        str(bad))
    wait.until(lambda d: message in d.find_element(By.ID, "message").text)
    assert output_src(browser) == ""


def test_an_example_button_shows_its_photo(app_url, browser):
    browser.get(app_url)
    wait = WebDriverWait(browser, 60, poll_frequency=0.5)
    button = wait.until(lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button")
                                        if b.text == "Grace Hopper"), False))
    button.click()
    wait.until(lambda d: "grace_hopper.jpg at yaw +30" in d.find_element(By.ID, "message").text)
    assert fetch_image(wait.until(output_src)).shape == (256, 256, 3)


def save_screenshot(driver, target: str) -> None:
    """The page cropped to its content, as a PNG under SCREENSHOT_BYTES: full colour,
    scaled down as far as needed (its photos are the astronaut's)."""
    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    ink = np.nonzero((np.asarray(shot) < 250).any(-1))
    margin = 12
    shot = shot.crop((max(0, ink[1].min() - margin), max(0, ink[0].min() - margin),
                      min(shot.width, ink[1].max() + margin),
                      min(shot.height, ink[0].max() + margin)))
    for scale in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5):
        small = shot.resize((round(shot.width * scale), round(shot.height * scale)),
                            Image.LANCZOS)
        buf = io.BytesIO()
        small.save(buf, "PNG", optimize=True)
        if buf.tell() <= SCREENSHOT_BYTES:
            break
    assert buf.tell() <= SCREENSHOT_BYTES, f"screenshot {buf.tell()} bytes"
    from face3d.fileio import atomic_write

    with atomic_write(target, "wb") as f:
        f.write(buf.getvalue())
