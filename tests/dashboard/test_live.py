"""The dashboard's live watcher: one per run for every session, whose first update reuses the page's Gram."""

import time

import numpy as np
import pandas as pd

from relex_core import compute_gram, open_run
from relex_core.live import AdviceRule
from relex_dashboard import live


def test_sessions_on_one_run_share_one_watcher_and_its_first_update_is_a_cache_hit(relex_cache, other_run,
                                                                                   monkeypatch):
    monkeypatch.setattr(live, "POLL_SECONDS", 0.1)
    run = open_run(other_run)
    page_gram = compute_gram(run, progress=False)  # what the page's analysis did when the run was opened
    first, second = live.watcher_of(run), live.watcher_of(open_run(other_run))
    assert first is second and first.alive
    deadline = time.monotonic() + 60
    while first.snapshot()[0] is None:
        assert time.monotonic() < deadline, first.error
        time.sleep(0.05)
    run_gram, ends, version, error = first.snapshot()
    assert error is None and version == 1 and ends == (int(run.steps[-1]),)
    assert run_gram.from_cache  # no second pass over the run
    np.testing.assert_array_equal(run_gram.gram, page_gram.gram)
    time.sleep(0.5)
    assert first.snapshot()[2] == 1  # polls of an unchanged run add no update
    first.stop.set()


def test_the_advice_chart_draws_both_curves_and_their_thresholds():
    rule = AdviceRule()
    rows = pd.DataFrame({"latest_step": [100, 150, 200], "settle_change": [np.nan, 0.2, 0.04],
                         "forecast_error": [np.nan, 0.5, 0.2]})
    figure = live.advice_chart(rows, rule, 900)
    assert [list(trace.y) for trace in figure.data][1][1:] == [0.5, 0.2]
    assert sorted(shape.y0 for shape in figure.layout.shapes) == [rule.change_tolerance, rule.forecast_tolerance]
    assert live.advice_chart(rows.iloc[:0], rule, 900).data == ()


def test_live_view_on_the_overview_and_window_pages_under_apptest(relex_cache, run_gram):
    from relex_core.evaluate import SampleScorer, score
    from relex_dashboard import evaluate

    from .conftest import SAMPLE_RUN

    from .apptest import assert_no_exception, decode, figures, numbers, on_page, open_app, texts, trace

    app = open_app()
    assert app.toggle(key="overview.live").value is False  # the sample run is not growing: off by default
    app.toggle(key="overview.live").set_value(True).run()
    deadline = time.monotonic() + 60
    while "Live · 30 checkpoints after the base, latest step 1440" not in texts(app):
        assert time.monotonic() < deadline, texts(app)
        time.sleep(0.2)
        app.run()
    assert_no_exception(app)
    charts = figures(app)
    distance = trace(charts["overview.live_distance"], "‖θ<sub>t</sub> − θ<sub>0</sub>‖")
    np.testing.assert_allclose(numbers(distance["y"])[1:], np.sqrt(np.einsum("ntt->t", run_gram.gram)), rtol=1e-12)
    assert "overview.live_advice" in charts and "overview.live_scores" not in charts
    # Scores the Evaluate page made for this run (its scores.csv under the export root) show beside the live view.
    folder = evaluate.scores_folder(run_gram.run)
    checkpoint = SAMPLE_RUN / "checkpoint-1440"
    (outcome,) = score([checkpoint], SampleScorer(limit=20), out=folder / evaluate.SCORES_FILE)
    app.run()
    drawn = [list(numbers(decode(item["y"]))) for item in figures(app)["overview.live_scores"]["data"] if "y" in item]
    assert outcome.status == "scored" and [outcome.rows[0]["value"]] in drawn
    on_page(app, "window")
    assert app.toggle(key="window.live").value is False
    app.toggle(key="window.live").set_value(True).run()
    assert "window.live_advice" in figures(app)
    assert_no_exception(app)
