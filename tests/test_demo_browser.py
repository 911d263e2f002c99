"""The web demo in a real browser (Debian's Chromium through chromedriver): upload, classes, overlay, legend,
and a bad class list shown as one line in the page.

Set ``PROTOSEG_DEMO_SCREENSHOTS=docs`` to also save the page before and after a run as
``docs/demo_before.png`` and ``docs/demo_after.png`` (the pictures of the docs).
"""

import os
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from skimage import data

from protoseg.demo import DemoSettings, SegmenterCache, build_demo, operator_banks
from protoseg.offline.examples import bank_from_examples
from protoseg.worlds import PARTS_WORLD_CLASSES, write_examples

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The demo page on a free local port, on a small parts-world bank; yields (url, scene, photo)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    root = tmp_path_factory.mktemp("browser")
    write_examples(root / "train", 4, seed=7, size=224)  # seed 7: every class appears
    write_examples(root / "test", 1, seed=6, size=448)
    bank_from_examples(root / "train", "handcrafted").save(root / "demo" / "bank")
    Image.fromarray(data.astronaut()).resize((128, 128)).save(root / "astronaut.jpg")
    before = os.getcwd()
    os.chdir(root)  # the page shows the bank as the README's commands name it: demo/bank
    settings = DemoSettings(banks=tuple(operator_banks(["demo/bank"], {})), preset="handcrafted", device="cpu")
    app = build_demo(settings, root / "out", SegmenterCache())
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               allowed_paths=[str(root / "out")], footer_links=[], css=app.protoseg_css)
    try:
        yield f"http://127.0.0.1:{port}/", root / "test" / "images" / "scene_00000.png", root / "astronaut.jpg"
    finally:
        app.close()
        os.chdir(before)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1160", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def classes_box(driver):
    return driver.find_element(By.CSS_SELECTOR, "#classes textarea, #classes input")


def fill(driver, wait, image: Path, classes: str) -> None:
    """Upload ``image`` and type ``classes``."""
    driver.find_element(By.CSS_SELECTOR, "#images input[type=file]").send_keys(str(image))
    wait.until(lambda d: image.stem in d.find_element(By.ID, "images").text)  # uploaded
    box = classes_box(driver)
    box.clear()
    box.send_keys(classes)


def screenshot(driver, name: str, tmp_path: Path) -> None:
    driver.save_screenshot(str(tmp_path / name))
    target = os.environ.get("PROTOSEG_DEMO_SCREENSHOTS")
    if target:
        folder = Path(__file__).parents[1] / target  # a relative folder is the repository's (the page runs elsewhere)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, folder / name)


def test_upload_classes_overlay_and_legend_in_the_browser(served, browser, tmp_path):
    url, scene, _ = served
    wait = WebDriverWait(browser, 120)
    browser.get(url)
    wait.until(ec.element_to_be_clickable((By.ID, "segment")))
    assert browser.find_element(By.CSS_SELECTOR, "#bank input, #bank textarea").get_attribute("value") == "demo/bank"
    fill(browser, wait, scene, ", ".join(PARTS_WORLD_CLASSES))
    screenshot(browser, "demo_before.png", tmp_path)
    browser.find_element(By.ID, "segment").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#legend .protoseg-legend-row"))
    overlay = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#overlays img"))
    width = wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                                  overlay))
    assert "scene_00000_overlay" in overlay.get_attribute("src")
    assert width >= 448 + 8 + 448  # input | overlay, as the server wrote it
    rows = browser.find_elements(By.CSS_SELECTOR, "#legend .protoseg-legend-row")
    names = [r.find_element(By.CLASS_NAME, "protoseg-class").text for r in rows]
    shares = [float(r.find_element(By.CLASS_NAME, "protoseg-share").text.rstrip(" %")) for r in rows]
    assert sorted(names) == sorted(PARTS_WORLD_CLASSES)
    assert shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(100, abs=0.5)
    assert shares[0] > 10
    assert "segmented 1 image(s)" in browser.find_element(By.ID, "status").text
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#downloads a")]
    assert any(link.endswith("/scene_00000.png") for link in links), links  # the label map to download
    assert not browser.find_elements(By.CLASS_NAME, "protoseg-error")
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, "demo_after.png", tmp_path)


@pytest.mark.parametrize(("image", "classes", "message"), [
    ("scene", ",,", "error: empty class name at position(s) 1, 2, 3"),
    ("scene", "sky, zebra", "zebra"),
    ("photo", "sky, car", "error: preset 'handcrafted' uses the hand-crafted test backend"),  # a real photo
])
def test_a_bad_request_is_one_line_in_the_page(served, browser, image, classes, message):
    url, scene, photo = served
    wait = WebDriverWait(browser, 120)
    browser.get(url)
    wait.until(ec.element_to_be_clickable((By.ID, "segment")))
    fill(browser, wait, scene if image == "scene" else photo, classes)
    browser.find_element(By.ID, "segment").click()
    error = wait.until(lambda d: d.find_element(By.CLASS_NAME, "protoseg-error"))
    assert message in error.text and "\n" not in error.text and "Traceback" not in browser.page_source
    assert not browser.find_elements(By.CSS_SELECTOR, "#overlays img")
