"""The dashboard's live mode in a real browser while a writer process replays the sample run.

A real `streamlit run` server, headless Chromium, and tests/live/replay.py writing checkpoints the
way a trainer does. The Overview page is opened on the run while it has a few checkpoints; with
live mode on, the live caption and the distance-from-base chart follow the new checkpoints, while
the sidebar (the page's own analysis) stays as it was: only the fragment reruns.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.parse

import pytest

from relex_core.live import open_when_ready

from .conftest import REPO_ROOT, SAMPLE_RUN
from .test_browser import ARTIFACTS, assert_no_exception, new_tab, streamlit_server

COUNT = 7
LAST_STEP = 48 * COUNT
LIVE_LABEL = "Live: follow the run as checkpoints land"
LIVE_CHART_X = """() => {
    const charts = [...document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot')];
    const distance = charts.find(chart => chart.layout && chart.layout.title
        && String(chart.layout.title.text).includes('Whole-model distance'));
    return distance ? distance._fullData.flatMap(trace => Array.from(trace.x || []).map(Number)) : [];
}"""


@pytest.fixture(scope="module")
def browser():
    from .test_browser import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_live_mode_follows_a_run_as_a_writer_adds_checkpoints(relex_cache, browser, tmp_path, monkeypatch):
    run, go = tmp_path / "run", tmp_path / "go"
    monkeypatch.setenv("RELEX_LIVE_REFRESH", "1")
    monkeypatch.setenv("RELEX_LIVE_POLL", "0.5")
    writer = None
    with streamlit_server(relex_cache, tmp_path / "exports", tmp_path / "streamlit.log") as url:
        try:
            writer = subprocess.Popen([sys.executable, "-m", "tests.live.replay", str(SAMPLE_RUN), str(run), "--count",
                                       str(COUNT), "--pause", "1", "--hold-after", "2", "--go", str(go)],
                                      cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 60
            while not run.is_dir() or (opened := open_when_ready(str(run))) is None or len(opened.checkpoints) < 2:
                assert time.monotonic() < deadline and writer.poll() is None
                time.sleep(0.1)
            tab = new_tab(browser)
            tab.goto(f"{url}/?{urllib.parse.urlencode({'run': str(run)})}")
            tab.get_by_text(LIVE_LABEL).wait_for(timeout=120_000)
            opened_caption = tab.locator('[data-testid="stSidebar"]').get_by_text("checkpoints after the base")
            opened_text = opened_caption.inner_text()
            switch = tab.get_by_role("switch", name=LIVE_LABEL)
            if not switch.is_checked():  # on by default only when a newer checkpoint folder is already there
                tab.get_by_text(LIVE_LABEL).click()
            tab.get_by_text("latest step 96 ").wait_for(timeout=120_000)  # the live view is up, at 2 checkpoints
            go.touch()  # the writer goes on: 5 more checkpoints, a second apart
            seen_latest = set()
            deadline = time.monotonic() + 180
            while LAST_STEP not in seen_latest:
                assert time.monotonic() < deadline, f"live view saw only steps {sorted(seen_latest)}"
                text = tab.locator('[data-testid="stMain"]').inner_text()
                for step in range(48, LAST_STEP + 1, 48):
                    if f"latest step {step} " in text:
                        seen_latest.add(step)
                time.sleep(0.2)
            assert len(seen_latest) >= 2  # the view moved on while the page stayed open
            try:
                tab.wait_for_function(f"() => ({LIVE_CHART_X})().includes({LAST_STEP})", timeout=30_000)
            except Exception:
                ARTIFACTS.mkdir(exist_ok=True)
                tab.screenshot(path=str(ARTIFACTS / "live-overview-failed.png"), full_page=True)
                print(tab.evaluate(LIVE_CHART_X))
                raise
            xs = tab.evaluate(LIVE_CHART_X)
            assert [step for step in range(0, LAST_STEP + 1, 48) if step in xs] == list(range(0, LAST_STEP + 1, 48))
            # Only the fragment reran: the sidebar still shows the analysis the page opened with.
            assert opened_caption.inner_text() == opened_text
            assert switch.is_checked()
            assert_no_exception(tab)
            ARTIFACTS.mkdir(exist_ok=True)
            tab.screenshot(path=str(ARTIFACTS / "live-overview.png"), full_page=True)
            tab.context.close()
        finally:
            if writer is not None and writer.poll() is None:
                os.kill(writer.pid, signal.SIGTERM)
            if writer is not None:
                writer.wait(timeout=30)
