"""The dashboard in a real browser: `streamlit run app.py` as a subprocess, driven by headless Chromium.

Every page renders its Plotly charts without a Streamlit exception, the window slider redraws,
an export lands in the export root (and a path out of it is refused). Screenshots and the
measured timings go to test-artifacts/ (git-ignored).
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

from .conftest import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# Page title → Plotly charts it draws with its default settings.
PAGES = {"Overview": 2, "Spectra": 3, "Trajectory": 5, "Window": 5, "Export": 1, "Evaluate": 1}
PAGE_SECONDS, SLIDER_SECONDS = 3.0, 1.0  # the dashboard's speed targets, with the analysis cached
TIMINGS: dict = {}

# True once the run finished: the page's title is up, exactly `count` charts hold an SVG (none left over
# from the previous run), no element is stale.
RENDERED = """([title, count]) => {
    const heading = document.querySelector('[data-testid="stMain"] h1');
    const charts = [...document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot')]
        .filter(chart => chart.querySelector('svg.main-svg'));
    return heading !== null && heading.textContent.trim().startsWith(title) && charts.length === count
        && document.querySelector('[data-stale="true"]') === null;
}"""
FIRST_CHART_DATA = "() => JSON.stringify(document.querySelector('[data-testid=\"stMain\"] .js-plotly-plot').data)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(relex_cache, tmp_path_factory):
    """A real Streamlit server on localhost, exports confined to a temporary export root."""
    export_root = tmp_path_factory.mktemp("export-root")
    port = free_port()
    env = {**os.environ, "RELEX_CACHE_DIR": str(relex_cache), "RELEX_EXPORT_ROOT": str(export_root),
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    log = open(tmp_path_factory.mktemp("server") / "streamlit.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "relex_dashboard/app.py", "--server.headless", "true",
                                "--server.port", str(port), "--server.fileWatcherType", "none"],
                               cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            process.kill()
            pytest.fail(f"streamlit did not start:\n{log.read()}")
        time.sleep(0.2)
    yield url, export_root
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def page(server):
    """One browser tab on the app, after the first load (which reads the Gram from the disk cache or runs it)."""
    url, _ = server
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 2400})
        started = time.perf_counter()
        tab.goto(url)
        tab.wait_for_function(RENDERED, arg=["Overview", PAGES["Overview"]], timeout=120_000, polling=50)
        TIMINGS["first_load_s"] = round(time.perf_counter() - started, 2)
        yield tab
        browser.close()
    (ARTIFACTS / "timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")


def assert_no_exception(tab) -> None:
    boxes = tab.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.all_inner_texts()


def open_page(tab, title: str) -> float:
    """Click the page in the sidebar navigation; seconds until its charts are drawn."""
    started = time.perf_counter()
    tab.locator('[data-testid="stSidebarNav"] a', has_text=title).click()
    tab.wait_for_function(RENDERED, arg=[title, PAGES[title]], timeout=30_000, polling=50)
    return time.perf_counter() - started


def test_every_page_draws_its_charts_within_the_time_target(page):
    for title in PAGES:
        seconds = open_page(page, title)
        TIMINGS[f"page_{title.lower()}_s"] = round(seconds, 2)
        assert_no_exception(page)
        page.screenshot(path=str(ARTIFACTS / f"{title.lower()}.png"))
        assert seconds <= PAGE_SECONDS, f"{title}: charts after {seconds:.2f} s"


def test_moving_the_window_slider_redraws_within_the_time_target(page):
    open_page(page, "Window")
    end_thumb = page.locator('[data-testid="stMain"] [data-testid="stSlider"] input[type="range"]').nth(1)
    old_end = int(end_thumb.get_attribute("aria-valuetext"))
    before = page.evaluate(FIRST_CHART_DATA)
    end_thumb.focus()
    started = time.perf_counter()
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"""(before) => ({FIRST_CHART_DATA})() !== before
        && document.querySelector('[data-stale="true"]') === null""", arg=before, timeout=30_000, polling=20)
    seconds = time.perf_counter() - started
    TIMINGS["window_slider_redraw_s"] = round(seconds, 2)
    assert_no_exception(page)
    new_end = int(end_thumb.get_attribute("aria-valuetext"))
    assert new_end < old_end
    sidebar_end = page.locator('[data-testid="stSidebar"] [data-testid="stSlider"] input[type="range"]').nth(1)
    assert int(sidebar_end.get_attribute("aria-valuetext")) == new_end  # one window shared by all pages
    assert page.get_by_text("Backtest of window").first.inner_text().endswith(f":{new_end}")
    page.screenshot(path=str(ARTIFACTS / "window-after-slider.png"))
    assert seconds <= SLIDER_SECONDS, f"redraw after {seconds:.2f} s"


def export_into(tab, folder: str, outcome: str) -> None:
    """Type the output folder, press Export and wait for the text that tells the outcome."""
    field = tab.get_by_label("Output folder (inside the export root)")
    field.fill(folder)
    field.press("Enter")
    tab.wait_for_function(RENDERED, arg=["Export", PAGES["Export"]], timeout=30_000)
    tab.get_by_role("button", name="Export", exact=True).click()
    tab.get_by_text(outcome).wait_for(timeout=120_000)
    assert_no_exception(tab)


def test_export_writes_a_checkpoint_under_the_export_root_and_refuses_a_path_out(page, server):
    _, export_root = server
    open_page(page, "Export")
    export_into(page, "browser-export", "Wrote 1 checkpoint folder")
    written = export_root / "browser-export"
    assert (written / "config.json").is_file() and list(written.glob("*.safetensors"))
    page.get_by_role("button", name="Download as zip").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "export-done.png"))

    export_into(page, "../escaped", "must be inside the export root")
    assert not (export_root.parent / "escaped").exists()
