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


# --------------------------------------------------------------------------- the verdict on one backtest


def brute_force_backtest(folder, window, rank=1) -> pd.DataFrame:
    """Whole-model rel_error of relex / last / linear on every checkpoint after the window, from the weights."""
    from safetensors.numpy import load_file

    from tests.brute_force import relex_prediction

    run = open_run(folder)
    steps = [int(step) for step in run.steps]
    base = load_file(run.base.path / "model.safetensors")
    weights = {step: load_file(checkpoint.path / "model.safetensors")
               for step, checkpoint in zip(steps, run.checkpoints)}
    inside = [step for step in steps if window[0] <= step <= window[1]]
    rows = []
    for target in [step for step in steps if step > window[1]]:
        squared = {"relex": 0.0, "last": 0.0, "linear": 0.0}
        norm = 0.0
        for name in base:
            deltas = {step: weights[step][name].astype(np.float64).ravel() - base[name].astype(np.float64).ravel()
                      for step in (*inside, target)}
            window_deltas = np.stack([deltas[step] for step in inside])
            predictions = {"relex": relex_prediction(window_deltas, inside, target, rank), "last": deltas[inside[-1]],
                           "linear": target / inside[-1] * deltas[inside[-1]]}
            for method, prediction in predictions.items():
                squared[method] += float(((prediction - deltas[target]) ** 2).sum())
            norm += float((deltas[target] ** 2).sum())
        rows += [(target, method, np.sqrt(value / norm)) for method, value in squared.items()]
    return pd.DataFrame(rows, columns=["target_step", "method", "rel_error"])


def test_the_verdict_on_a_rank_one_drift_is_the_brute_force_comparison_with_last_and_linear(tmp_path):
    from relex_core.synthetic import make_run

    folder = make_run(tmp_path / "drift", steps=(10, 20, 30, 40, 50, 60, 70, 80), noise=0.3)
    run_gram = compute_gram(open_run(folder), cache_dir=tmp_path / "cache", progress=False)
    window = (10, 40)
    verdict = selection.backtest_verdict(WindowFit(run_gram, window).backtest_frame())
    expected = brute_force_backtest(folder, window).pivot(index="target_step", columns="method", values="rel_error")
    assert verdict.held_out == (50, 80) and verdict.targets == 4
    for method in ("relex", "last", "linear"):
        assert verdict.mean_error[method] == pytest.approx(expected[method].mean(), rel=1e-6)
    assert verdict.wins == {method: int((expected["relex"] < expected[method]).sum()) for method in ("last", "linear")}
    assert verdict.wins["last"] == 4 and not verdict.loses_to_last_everywhere  # a line beats standing still
    lower = 1 - expected["relex"].mean() / expected["last"].mean()
    assert verdict.change("last") == pytest.approx(-lower, rel=1e-6)
    assert verdict.text.startswith(f"relex's held-out error is {lower:.0%} lower than keeping the last checkpoint")
    assert verdict.text.endswith("relex beats the last checkpoint at 4 of the 4.")


def test_the_verdict_says_plainly_when_relex_loses_to_the_last_checkpoint_everywhere(run_gram):
    backtests = WindowFit(run_gram, (48, 720)).backtest_frame()
    errors = backtests.pivot(index="target_step", columns="method", values="rel_error")
    assert (errors["relex"] > errors["last"]).all()  # true of the sample run with this window
    verdict = selection.backtest_verdict(backtests)
    assert verdict.loses_to_last_everywhere and verdict.wins["last"] == 0
    higher = errors["relex"].mean() / errors["last"].mean() - 1
    assert verdict.text.startswith(f"relex's held-out error is {higher:.0%} higher than keeping the last checkpoint")
    assert f"loses to the last checkpoint at every one of the {len(errors)} held-out checkpoints" in verdict.text


def test_the_verdict_needs_a_checkpoint_after_the_window(run_gram):
    with pytest.raises(RelexError, match="no later checkpoint"):
        selection.backtest_verdict(WindowFit(run_gram, (48, 1440)).backtest_frame())


def test_relex_backtest_prints_the_verdict_after_its_table(run_gram, tmp_path, capsys, monkeypatch):
    from relex_core.cli import main

    monkeypatch.setenv("RELEX_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["backtest", str(SAMPLE_RUN), "--window", "48:480", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    verdict = selection.backtest_verdict(WindowFit(run_gram, (48, 480)).backtest_frame())
    assert capsys.readouterr().out.splitlines()[-1] == verdict.text
