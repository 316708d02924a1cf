"""The Evaluate page in a real browser: the real Streamlit server, headless Chromium, a real lm-eval run.

Two of the sample run's checkpoints and one relex export are scored with the sample task through
lm-eval, in the background: the Overview page is visited meanwhile, and on return the chart shows the
three points with the values stored in scores.csv, and hover names the folder. A new tab (a second
session) shows them again without scoring. A second job is cancelled from its button. Screenshots go
to test-artifacts/ (git-ignored).
"""

import time

import pytest

from relex_core import open_run
from relex_core.evaluate import read_scores
from relex_dashboard import evaluate

from .conftest import SAMPLE_RUN
from .test_browser import ARTIFACTS, RENDERED, REPORT_BUTTON, assert_no_exception, browser, new_tab, streamlit_server

__all__ = ["browser"]  # the fixture, imported so pytest finds it here
LIMIT = 20
SCORES_TITLE = "Held-out score of the run's checkpoints and of relex exports"
# Every marker of the scores chart as the browser drew it (_fullData: typed arrays decoded): [series, step,
# score, stderr, folder].
DRAWN = """(title) => {
    const chart = [...document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot')]
        .find(chart => chart.layout && chart.layout.title && chart.layout.title.text.includes(title));
    if (!chart) return null;
    return chart._fullData.filter(trace => trace.mode.includes('markers')).flatMap(trace => Array.from(trace.x)
        .map((x, i) => [trace.name, x, trace.y[i], trace.customdata[i][0], trace.customdata[i][1]]));
}"""
# A folder's scoring in progress on the bar (or, on a fast machine, the job already done).
SCORING_SHOWN = """() => {
    const text = document.querySelector('[data-testid="stMain"]').innerText;
    return /scoring \\//.test(text) || text.includes('Last scoring');
}"""


@pytest.fixture(scope="module")
def server(relex_cache, tmp_path_factory):
    """The dashboard server, offline for the Hugging Face libraries and on one torch thread (tiny model)."""
    export_root = tmp_path_factory.mktemp("evaluate-exports")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("OMP_NUM_THREADS", "1"),
                            ("HF_HOME", str(tmp_path_factory.mktemp("hf")))):
            patch.setenv(name, value)
        log = tmp_path_factory.mktemp("evaluate-server") / "streamlit.log"
        with streamlit_server(relex_cache, export_root, log) as url:
            yield url, export_root


def wait_evaluate(tab, charts: int, text: str = REPORT_BUTTON, timeout: float = 120_000) -> None:
    """The Evaluate page drawn with `charts` charts and `text` on it, nothing stale."""
    tab.wait_for_function(RENDERED, arg=["Evaluate", charts, text], timeout=timeout, polling=100)


def click_nav(tab, title: str) -> None:
    tab.locator('[data-testid="stSidebarNav"] a', has_text=title).click()


def set_field(tab, locator, value) -> None:
    locator.fill(str(value))
    locator.press("Enter")
    tab.wait_for_function("() => document.querySelector('[data-stale=\"true\"]') === null", timeout=30_000)


def test_scoring_runs_in_the_background_and_the_chart_shows_the_stored_scores(server, browser):
    url, export_root = server
    tab = new_tab(browser)
    tab.goto(f"{url}/evaluate?run=sample&window=48%3A720")
    wait_evaluate(tab, 1)  # the training reward only: nothing scored yet
    main = tab.locator('[data-testid="stMain"]')
    assert "No scores for this run yet." in main.inner_text()
    main.get_by_text("lm-eval task", exact=True).click()
    set_field(tab, main.get_by_role("spinbutton", name="Limit"), LIMIT)
    set_field(tab, main.get_by_role("spinbutton", name="k", exact=True), 15)  # checkpoints 720 and 1440
    set_field(tab, main.get_by_role("textbox", name="relex exports from window 48:720 at target steps"), 1440)
    planned = "To score: 2 checkpoint(s) (steps 720, 1440); 1 relex export(s) (target steps 1440)."
    main.get_by_text(planned).wait_for(timeout=30_000)
    started = time.perf_counter()
    main.get_by_role("button", name="Score", exact=True).click()
    main.get_by_role("button", name="Cancel scoring").wait_for(timeout=30_000)
    tab.wait_for_function(SCORING_SHOWN, timeout=60_000, polling=100)
    tab.screenshot(path=str(ARTIFACTS / "evaluate-scoring.png"), full_page=True)

    click_nav(tab, "Overview")  # the page stays usable: visit another one while the job runs
    tab.wait_for_function(RENDERED, arg=["Overview", 3, REPORT_BUTTON], timeout=60_000, polling=100)
    click_nav(tab, "Evaluate")
    wait_evaluate(tab, 2, "Last scoring", timeout=180_000)
    seconds = time.perf_counter() - started
    assert_no_exception(tab)
    assert "3 scored, 0 already scored and unchanged, 0 failed" in main.inner_text()
    assert planned in main.inner_text()  # the settings outlived the visit to another page

    folder = export_root / evaluate.scores_folder(open_run(SAMPLE_RUN)).name  # the server's export root
    stored = read_scores(folder / evaluate.SCORES_FILE)
    assert stored["path"].tolist() == [str(SAMPLE_RUN / "checkpoint-720"), str(SAMPLE_RUN / "checkpoint-1440"),
                                       str(folder / "run-w48-720-r1-s1440")]
    expected = sorted([["RL checkpoints", 720, stored["value"][0], stored["stderr"][0], "checkpoint-720"],
                       ["RL checkpoints", 1440, stored["value"][1], stored["stderr"][1], "checkpoint-1440"],
                       ["relex from window 48:720", 1440, stored["value"][2], stored["stderr"][2],
                        "run-w48-720-r1-s1440"]])
    assert sorted(tab.evaluate(DRAWN, SCORES_TITLE)) == expected

    chart = main.locator(".js-plotly-plot").first
    chart.scroll_into_view_if_needed()
    star = chart.locator(".scatterlayer .trace").nth(1).locator(".point").first  # the relex export's marker
    box = star.bounding_box()  # the drag layer above the markers takes the pointer: move the mouse there
    tab.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    hover = chart.locator(".hoverlayer .hovertext")
    hover.wait_for(timeout=10_000)
    assert "run-w48-720-r1-s1440" in hover.text_content()  # hover names the folder
    tab.screenshot(path=str(ARTIFACTS / "evaluate-scored.png"), full_page=True)
    (ARTIFACTS / "evaluate-timing.txt").write_text(f"score 2 checkpoints + 1 export (lm-eval, limit {LIMIT}), "
                                                    f"click to chart: {seconds:.1f} s (recorded, not asserted)\n")

    second = new_tab(browser)  # another session: the stored scores, read back, nothing scored again
    second.goto(f"{url}/evaluate?run=sample&window=48%3A720")
    wait_evaluate(second, 2)
    assert sorted(second.evaluate(DRAWN, SCORES_TITLE)) == expected
    assert second.outside_requests == [] and tab.outside_requests == []
    second.context.close()

    # a longer job (every checkpoint) is cancelled from its button; what was scored before stays
    set_field(tab, main.get_by_role("spinbutton", name="k", exact=True), 1)
    main.get_by_role("button", name="Score", exact=True).click()
    main.get_by_role("button", name="Cancel scoring").click()
    wait_evaluate(tab, 2, "Last scoring (cancelled)", timeout=120_000)
    assert_no_exception(tab)
    after = read_scores(folder / evaluate.SCORES_FILE)
    assert after["path"].tolist()[:3] == stored["path"].tolist() and len(after) < 3 + 29  # stopped early
    tab.context.close()
