"""The dashboard in a real browser: `streamlit run relex_dashboard/app.py` as a subprocess, driven by headless Chromium.

A researcher's own run (a synthetic run written in the test) is picked in the sidebar and every page is
visited through the navigation: each shows that run's steps and none of the sample's; a reload of the URL
reopens the same run and window; a second browser context on the sample run meanwhile stays on the sample.
Also: a fresh server answers a page URL as its very first request, a heatmap click opens the tensor on the
Trajectory page, keyboard changes to the window slider all land, figures download as SVG, CSV and an HTML
report, and exports land under the export root only. Screenshots of every page on both runs and the measured
timings (recorded, never asserted: the machine is shared) go to test-artifacts/ (git-ignored).
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager

import pytest
from playwright.sync_api import sync_playwright

from .conftest import OTHER_STEPS, REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TITLES = ["Overview", "Spectra", "Trajectory", "Window", "Export", "Evaluate"]
# Plotly charts each page draws with its default settings, per run (the synthetic run logs no metrics).
CHARTS = {"sample": {"Overview": 3, "Spectra": 4, "Trajectory": 6, "Window": 6, "Export": 1, "Evaluate": 1},
          "other": {"Overview": 2, "Spectra": 4, "Trajectory": 6, "Window": 6, "Export": 1, "Evaluate": 0}}
TIMINGS: dict = {}

# True once the run finished: the page's title is up, exactly `count` charts hold an SVG (none left over
# from the previous page), its last element is drawn (the report button, or the note a page stops with),
# and no element is stale.
RENDERED = """([title, count, last]) => {
    const main = document.querySelector('[data-testid="stMain"]');
    const heading = main && main.querySelector('h1');
    const charts = [...main.querySelectorAll('.js-plotly-plot')].filter(chart => chart.querySelector('svg.main-svg'));
    return heading !== null && heading.textContent.trim().startsWith(title) && charts.length === count
        && main.innerText.includes(last) && document.querySelector('[data-stale="true"]') === null;
}"""
REPORT_BUTTON = "Download this page as an HTML report"
LAST_TEXT: dict = {}  # (run, page) whose last element is not the report button
CHART_X = """() => [...document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot')]
    .flatMap(chart => chart.data.filter(trace => trace.type !== 'heatmap' && trace.type !== 'histogram')
        .flatMap(trace => Array.from(trace.x || [])).filter(value => typeof value === 'number'))"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def streamlit_server(relex_cache, export_root, log_path):
    """A real Streamlit server on localhost, started from the repository root as `make dashboard` does."""
    port = free_port()
    env = {**os.environ, "RELEX_CACHE_DIR": str(relex_cache), "RELEX_EXPORT_ROOT": str(export_root),
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    log = open(log_path, "w+")
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "relex_dashboard/app.py",
                                "--server.headless", "true", "--server.port", str(port),
                                "--server.fileWatcherType", "none"],
                               cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"streamlit did not start:\n{log.read()}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def server(relex_cache, tmp_path_factory):
    export_root = tmp_path_factory.mktemp("export-root")
    with streamlit_server(relex_cache, export_root, tmp_path_factory.mktemp("server") / "streamlit.log") as url:
        yield url, export_root


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
    (ARTIFACTS / "timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")


def new_tab(browser):
    """A tab in a browser context of its own (its own Streamlit session); requests leaving the machine fail it."""
    context = browser.new_context(viewport={"width": 1400, "height": 2200}, accept_downloads=True)
    tab = context.new_page()
    outside = []
    tab.on("request", lambda request: outside.append(request.url)
           if not request.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
    tab.outside_requests = outside
    return tab


def wait_rendered(tab, title: str, run: str, timeout: float = 120_000) -> None:
    last = LAST_TEXT.get((run, title), REPORT_BUTTON)
    tab.wait_for_function(RENDERED, arg=[title, CHARTS[run][title], last], timeout=timeout, polling=50)


def assert_no_exception(tab) -> None:
    boxes = tab.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.all_inner_texts()


def open_page(tab, title: str, run: str) -> float:
    """Click the page in the sidebar navigation; seconds until its charts are drawn."""
    started = time.perf_counter()
    tab.locator('[data-testid="stSidebarNav"] a', has_text=title).click()
    wait_rendered(tab, title, run)
    return time.perf_counter() - started


def sidebar_caption(tab) -> str:
    return tab.locator('[data-testid="stSidebar"]').get_by_text("checkpoints after the base").inner_text()


def window_thumbs(tab) -> tuple:
    thumbs = tab.locator('[data-testid="stSidebar"] [data-testid="stSlider"] input[type="range"]')
    return tuple(int(thumbs.nth(index).get_attribute("aria-valuetext")) for index in range(2))


def assert_shows_other_run(tab, folder) -> None:
    caption = sidebar_caption(tab)
    assert f"10 checkpoints after the base, steps {OTHER_STEPS[0]}–{OTHER_STEPS[-1]}" in caption, caption
    main = tab.locator('[data-testid="stMain"]').inner_text()
    assert "1440" not in main and "1,440" not in main
    steps = set(tab.evaluate(CHART_X))
    assert not steps & {48, 96, 144, 192, 1440}, sorted(steps)[:20]
    assert tab.get_by_role("textbox", name="Run folder or manifest").input_value() == str(folder)


def test_a_fresh_server_answers_a_page_url_as_its_first_request(relex_cache, browser, other_run, tmp_path):
    with streamlit_server(relex_cache, tmp_path / "exports", tmp_path / "streamlit.log") as url:
        tab = new_tab(browser)
        query = urllib.parse.urlencode({"run": str(other_run), "window": "50:150"})
        started = time.perf_counter()
        tab.goto(f"{url}/spectra?{query}")
        wait_rendered(tab, "Spectra", "other")
        TIMINGS["fresh_server_first_page_s"] = round(time.perf_counter() - started, 2)
        assert_no_exception(tab)
        assert_shows_other_run(tab, other_run)
        assert window_thumbs(tab) == (50, 150)
        assert tab.locator('[data-testid="stSidebarNav"] a').count() == len(TITLES)  # the shell's navigation
        tab.context.close()
    # .streamlit/config.toml, read from the repository root, binds it to 127.0.0.1: no "Network URL" offered
    log = (tmp_path / "streamlit.log").read_text()
    assert "URL: http://localhost:" in log and "Network URL" not in log, log


def test_a_researchers_own_run_stays_chosen_on_every_page_and_after_a_reload(server, browser, other_run):
    url, _ = server
    tab = new_tab(browser)
    started = time.perf_counter()
    tab.goto(url)
    wait_rendered(tab, "Overview", "sample")
    TIMINGS["first_load_s"] = round(time.perf_counter() - started, 2)
    tab.locator('[data-testid="stSidebar"]').get_by_text("Folder on this server").click()
    field = tab.get_by_role("textbox", name="Run folder or manifest")
    field.fill(str(other_run))
    field.press("Enter")
    wait_rendered(tab, "Overview", "other")
    assert_shows_other_run(tab, other_run)
    assert window_thumbs(tab) == (50, 100)

    sample = new_tab(browser)  # a second user, on the sample run, meanwhile
    sample.goto(url)
    wait_rendered(sample, "Overview", "sample")
    for title in TITLES:
        TIMINGS[f"other_run_{title.lower()}_s"] = round(open_page(tab, title, "other"), 2)
        assert_no_exception(tab)
        assert_shows_other_run(tab, other_run)
        tab.screenshot(path=str(ARTIFACTS / f"other-{title.lower()}.png"), full_page=True)
        if title == "Spectra":  # its caption names the window: "0:100:" must not become an emoji
            caption = tab.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()
            assert "50:100" in caption and "💯" not in caption
        TIMINGS[f"sample_run_{title.lower()}_s"] = round(open_page(sample, title, "sample"), 2)
        assert_no_exception(sample)
        assert "30 checkpoints after the base, steps 48–1440" in sidebar_caption(sample)
        sample.screenshot(path=str(ARTIFACTS / f"sample-{title.lower()}.png"), full_page=True)

    assert "run=" in tab.url and "window=50%3A100" in tab.url
    tab.reload()
    wait_rendered(tab, "Evaluate", "other")
    assert_shows_other_run(tab, other_run)
    assert window_thumbs(tab) == (50, 100)
    open_page(tab, "Window", "other")
    assert "30 checkpoints after the base, steps 48–1440" in sidebar_caption(sample)
    assert tab.outside_requests == [] and sample.outside_requests == []  # nothing fetched from the network
    tab.context.close()
    sample.context.close()


@pytest.fixture(scope="module")
def sample_tab(server, browser):
    """One tab on the sample run, shared by the tests below."""
    url, _ = server
    tab = new_tab(browser)
    tab.goto(url)
    wait_rendered(tab, "Overview", "sample")
    yield tab
    tab.context.close()


def test_a_heatmap_click_opens_the_tensor_on_the_trajectory_page(sample_tab):
    tab = sample_tab
    open_page(tab, "Spectra", "sample")
    cell = tab.evaluate("""() => {
        const chart = document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot')[1];
        const box = chart.querySelectorAll('.scatterlayer .trace .point')[6].getBoundingClientRect();
        return {x: box.x + box.width / 2, y: box.y + box.height / 2, tensor: chart.data[1].customdata[6]};
    }""")
    assert cell["tensor"] == "model.layers.0.mlp.down_proj.weight"
    tab.mouse.move(cell["x"], cell["y"])
    tab.mouse.click(cell["x"], cell["y"])
    wait_rendered(tab, "Trajectory", "sample")
    title = tab.evaluate("() => document.querySelector('[data-testid=\"stMain\"] .js-plotly-plot').layout.title.text")
    assert title.replace("<b>", "").replace("</b>", "") == f"Coefficient c₁ of {cell['tensor']}"
    assert_no_exception(tab)


def test_keyboard_changes_to_the_window_slider_all_land(sample_tab):
    tab = sample_tab
    open_page(tab, "Window", "sample")
    end_thumb = tab.locator('[data-testid="stSidebar"] [data-testid="stSlider"] input[type="range"]').nth(1)
    old_end = int(end_thumb.get_attribute("aria-valuetext"))
    end_thumb.focus()
    started = time.perf_counter()
    for _ in range(3):  # three quick presses, each starting a rerun before the previous one ends
        tab.keyboard.press("ArrowRight")
    expected = old_end + 3 * 48
    tab.wait_for_function(f"""() => document.querySelector('[data-testid="stMain"] h3')
        && [...document.querySelectorAll('[data-testid="stMain"] h3')].some(h => h.textContent.includes(':{expected}'))
        && document.querySelector('[data-stale="true"]') === null""", timeout=60_000, polling=50)
    TIMINGS["window_slider_three_keys_s"] = round(time.perf_counter() - started, 2)
    wait_rendered(tab, "Window", "sample")
    assert_no_exception(tab)
    assert window_thumbs(tab) == (48, expected)
    assert f"window=48%3A{expected}" in tab.url
    tab.screenshot(path=str(ARTIFACTS / "window-after-slider.png"), full_page=True)


def test_figures_download_as_svg_csv_and_an_offline_html_report(sample_tab):
    tab = sample_tab
    open_page(tab, "Overview", "sample")
    chart = tab.locator('[data-testid="stMain"] .js-plotly-plot').first
    chart.hover()
    with tab.expect_download() as svg:
        chart.locator('.modebar-btn[data-title^="Download plot"]').click()
    assert svg.value.suggested_filename == "update_norm.svg"
    assert open(svg.value.path()).read().startswith("<svg")
    with tab.expect_download() as csv:
        tab.get_by_role("button", name="CSV of this chart").first.click()
    assert csv.value.suggested_filename == "update_norm.csv"
    assert open(csv.value.path()).readline().strip() == "step,update_norm,relative_update"
    with tab.expect_download() as report:
        tab.get_by_role("button", name="Download this page as an HTML report").click()
    text = open(report.value.path()).read()
    window = urllib.parse.parse_qs(urllib.parse.urlparse(tab.url).query)["window"][0]
    assert "relex · Overview" in text and f"<dd>{window}</dd>" in text and "sample_data/run" in text
    assert text.count("Plotly.newPlot(") == 3


def export_into(tab, folder: str, outcome: str) -> None:
    """Type the output folder, press Export and wait for the text that tells the outcome."""
    field = tab.get_by_role("textbox", name="Output folder (inside the export root)")
    field.fill(folder)
    field.press("Enter")
    wait_rendered(tab, "Export", "sample", timeout=30_000)
    tab.get_by_role("button", name="Export", exact=True).click()
    tab.get_by_text(outcome).wait_for(timeout=120_000)
    assert_no_exception(tab)


def test_export_writes_a_checkpoint_under_the_export_root_and_refuses_a_path_out(sample_tab, server):
    tab, (_, export_root) = sample_tab, server
    open_page(tab, "Export", "sample")
    export_into(tab, "browser-export", "Wrote 1 checkpoint folder")
    written = export_root / "browser-export"
    assert (written / "config.json").is_file() and list(written.glob("*.safetensors"))
    tab.get_by_role("button", name="Download as zip").wait_for(timeout=30_000)
    tab.screenshot(path=str(ARTIFACTS / "export-done.png"), full_page=True)

    export_into(tab, "../escaped", "must be inside the export root")
    assert not (export_root.parent / "escaped").exists()
