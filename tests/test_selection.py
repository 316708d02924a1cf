"""Model selection: backtests over every window end, and the suggested window."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from relex_core import RelexError, WindowFit, compute_gram, open_run, selection

SAMPLE_RUN = Path(__file__).resolve().parents[1] / "sample_data" / "run"


@pytest.fixture(scope="module")
def run_gram(tmp_path_factory):
    return compute_gram(open_run(SAMPLE_RUN), cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def test_window_end_backtests_concatenate_one_window_fit_per_end(run_gram):
    steps = [int(step) for step in run_gram.steps]
    table = selection.window_end_backtests(run_gram, steps[2], rank=3)
    ends = sorted(table["window_end"].unique())
    assert ends == steps[4:-1]  # a window of two checkpoints is too small for rank 3; the last leaves no target
    for end in (steps[4], steps[15]):
        expected = WindowFit(run_gram, (steps[2], end), rank=3).backtest_frame()
        got = table[table["window_end"] == end].drop(columns="window_end").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected)


def test_window_end_backtests_take_the_fit_settings_and_skip_windows_that_cannot_take_them(run_gram):
    steps = [int(step) for step in run_gram.steps]
    settings = {"fit": "poly2", "fit_last": 5, "refit_every": 3}
    table = selection.window_end_backtests(run_gram, steps[0], rank=1, **settings)
    assert sorted(table["window_end"].unique()) == steps[4:-1]  # fit_last 5 needs five window checkpoints
    for end in (steps[4], steps[20]):
        expected = WindowFit(run_gram, (steps[0], end), **settings).backtest_frame()
        got = table[table["window_end"] == end].drop(columns="window_end").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected)


def fake_backtests(scores: dict, targets=(80, 90, 100)) -> pd.DataFrame:
    """rel_error of each window end on each target: the score, plus a target-dependent offset that averages out."""
    rows = []
    for end, score in scores.items():
        for target, offset in zip(targets, (-0.01, 0.0, 0.01)):
            rows.append((end, target, "relex", score + offset, 1.0))
            rows.append((end, target, "last", 10.0, 1.0))
        rows.append((end, end + 5, "relex", 0.0, 1.0))  # a near target, before the held-out set: ignored
    return pd.DataFrame(rows, columns=["window_end", "target_step", "method", "rel_error", "cosine"])


def test_suggest_window_picks_the_shortest_window_within_tolerance_of_the_best():
    backtests = fake_backtests({20: 0.50, 30: 0.30, 40: 0.215, 50: 0.20, 60: 0.21})
    suggestion = selection.suggest_window(backtests, start=10, holdout_from=80, tolerance=0.1)
    assert suggestion.window == (10, 40) and suggestion.score == pytest.approx(0.215)
    assert suggestion.best_window == (10, 50) and suggestion.best_score == pytest.approx(0.20)
    assert suggestion.holdout == (80, 100)
    assert "10:40" in suggestion.reason and "10:50" in suggestion.reason and "10%" in suggestion.reason
    strict = selection.suggest_window(backtests, start=10, holdout_from=80, tolerance=0.0)
    assert strict.window == (10, 50) and "lowest" in strict.reason
    np.testing.assert_allclose(suggestion.scores["mean_rel_error"], [0.50, 0.30, 0.215, 0.20, 0.21])


def test_suggest_window_scores_every_candidate_on_the_same_held_out_steps():
    backtests = fake_backtests({20: 0.5, 30: 0.4, 90: 0.01})  # end 90 is inside the held-out steps: no candidate
    suggestion = selection.suggest_window(backtests, start=10, holdout_from=80, tolerance=0.1)
    assert list(suggestion.scores["window_end"]) == [20, 30]
    with pytest.raises(RelexError, match="ends before the held-out steps"):
        selection.suggest_window(backtests, start=10, holdout_from=15)


def test_suggest_window_on_the_sample_run(run_gram):
    holdout, start = selection.default_holdout(run_gram.steps), int(run_gram.steps[0])
    suggestion = selection.suggest_window(selection.window_end_backtests(run_gram, start), start, holdout)
    assert suggestion.window[1] < holdout and suggestion.score <= suggestion.best_score * 1.1


def test_default_holdout_is_the_last_quarter_of_the_checkpoints():
    assert selection.default_holdout([10, 20, 30, 40, 50, 60, 70, 80]) == 70
    assert selection.default_holdout([10, 20]) == 20
