"""The report page of a real run, rendered in headless Chromium and checked as a person would look at it.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them) and selenium (dev extra).
MMSELECT_REPORT_SCREENSHOT=docs/report.png keeps the screenshot of the demo run there; the run is then
`make demo`'s own (relative paths, written to demo-out/), so the picture shows what a user sees.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "examples" / "mini"
CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DOCS_HEIGHT = 2600  # the top of the page (headline, composition, scores) for docs/report.png


def _find(*names: str) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    chromium = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("chromium / chromedriver not found (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}", "--window-size=1200,900"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`make demo`: DataTailor, 20% of examples/mini, features from tiny-llava."""
    from mmselect import pipeline

    if not os.environ.get("MMSELECT_REPORT_SCREENSHOT"):
        out = tmp_path_factory.mktemp("demo-out")
        pipeline.run(MINI / "data.json", method="datatailor", budget=0.2, out=out, model="tiny-llava",
                     image_root=MINI / "images", progress=False, device="cpu")
        return out
    previous = os.getcwd()
    os.chdir(REPO)
    try:
        pipeline.run("examples/mini/data.json", method="datatailor", budget=0.2, out="demo-out", model="tiny-llava",
                     image_root="examples/mini/images", progress=False, device="cpu")
    finally:
        os.chdir(previous)
    return REPO / "demo-out"


def _open(browser, page: Path) -> list[dict]:
    browser.get_log("browser")  # drop what an earlier page logged
    browser.get(page.as_uri())
    browser.execute_script("return document.readyState")
    return browser.get_log("browser")


def _screenshot(browser, path: Path, height: int | None = None) -> bytes:
    full = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1200, min(height or full, 16000))
    browser.save_screenshot(str(path))
    browser.set_window_size(1200, 900)
    return path.read_bytes()


def test_report_page_renders_with_loaded_images_charts_and_the_manifest_numbers(browser, demo_run, tmp_path):
    manifest = json.loads((demo_run / "manifest.json").read_text())
    log = _open(browser, demo_run / "report.html")
    assert [entry for entry in log if entry["level"] == "SEVERE"] == []

    images = browser.execute_script(
        "return [...document.images].map(i => [i.complete, i.naturalWidth, i.src.slice(0, 5)])"
    )
    assert len(images) >= 10
    assert all(complete and width > 0 and src == "data:" for complete, width, src in images)

    charts = browser.execute_script(
        "return [...document.querySelectorAll('svg.chart')].map(s => {const r = s.getBoundingClientRect();"
        " return [s.dataset.chart, r.width, r.height, s.querySelectorAll('rect[height]:not([height=\"0.0\"]), circle').length]})"
    )
    names = {name for name, *_ in charts}
    assert {"composition-task", "composition-turns", "score-score", "score-informativeness", "map"} <= names
    assert all(width > 100 and height > 100 and marks > 2 for _, width, height, marks in charts)

    shown = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('[data-count]')]"
        ".map(e => [e.dataset.count, [e.dataset.value, e.textContent]]))"
    )
    for name, value in manifest["counts"].items():
        assert int(shown[name][0]) == value and int(shown[name][1].replace(",", "")) == value
    assert int(shown["usable"][0]) == manifest["counts"]["selected"] + manifest["counts"]["not_selected"]
    assert int(shown["budget_samples"][0]) == manifest["budget_samples"]
    fields = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('[data-field]').values()].map(e => [e.dataset.field, e.textContent]))"
    )
    assert fields == {"method": manifest["method"], "budget": manifest["budget"]}

    png = _screenshot(browser, tmp_path / "report.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(tmp_path / "report.png") as image:
        assert len(image.convert("RGB").getcolors(1 << 20)) > 50  # not a blank page
    if os.environ.get("MMSELECT_REPORT_SCREENSHOT"):
        _screenshot(browser, Path(os.environ["MMSELECT_REPORT_SCREENSHOT"]), height=DOCS_HEIGHT)


def test_compare_page_renders(browser, demo_run, tmp_path):
    from mmselect import pipeline
    from mmselect.report import compare

    other = tmp_path / "random"
    pipeline.select(demo_run / "features", method="random", budget=0.2, out=other, data=MINI / "data.json",
                    image_root=MINI / "images")
    page = compare([demo_run, other], tmp_path / "cmp")
    log = _open(browser, page)
    assert [entry for entry in log if entry["level"] == "SEVERE"] == []
    images = browser.execute_script("return [...document.images].map(i => i.complete && i.naturalWidth > 0)")
    assert images and all(images)
    overlap = browser.execute_script("return document.querySelector('svg[data-chart=jaccard]').querySelectorAll('rect').length")
    assert overlap == 4
