"""The live row from the Gram alone agrees with a float64 brute force on explicit vectors."""

from pathlib import Path

import numpy as np
import pytest

from relex_core import RunGram
from relex_core.io.discover import Checkpoint, Run
from relex_core.live import forecast_error, live_row, predicted_norm, prediction_change
from relex_core.analysis import WindowFit
from tests.brute_force import line_fit, rank1_drift, relex_prediction, trajectory_svd

STEPS = np.array([40, 80, 120, 160, 200, 240, 280, 320, 360])
TARGET = 900


def run_gram_of(deltas: list, steps=STEPS) -> RunGram:
    """A RunGram built from explicit per-tensor deltas (N, d_n)."""
    rng = np.random.default_rng(1)
    names = [f"model.layers.{index}.mlp.up_proj.weight" for index in range(len(deltas))]
    run = Run(source=Path("run"), base=Checkpoint(0, Path("run/checkpoint-0")),
              checkpoints=tuple(Checkpoint(int(step), Path(f"run/checkpoint-{step}")) for step in steps))
    bases = [rng.standard_normal(delta.shape[1]) for delta in deltas]
    return RunGram(run=run, steps=np.array(steps), names=names, shapes=[(delta.shape[1],) for delta in deltas],
                   dtypes=["float64"] * len(deltas), gram=np.stack([delta @ delta.T for delta in deltas]),
                   base_sq_norm=np.array([base @ base for base in bases]))


@pytest.fixture(scope="module")
def deltas():
    rng = np.random.default_rng(3)
    return [rank1_drift(STEPS, size, noise, rng) * scale
            for size, noise, scale in ((50, 0.05, 1.0), (80, 0.2, 2.0), (30, 0.5, 0.5))]


def brute_predictions(deltas, start_index, end_index, target, rank=1):
    """Per tensor δ̂(target) from the stacked deltas of window checkpoints start_index…end_index."""
    window = slice(start_index, end_index + 1)
    return [relex_prediction(delta[window], STEPS[window], target, rank) for delta in deltas]


def norm_of(vectors) -> float:
    return float(np.sqrt(sum(vector @ vector for vector in vectors)))


@pytest.mark.parametrize("rank", [1, 2])
def test_predicted_norm_and_its_change_match_explicit_predictions(deltas, rank):
    run_gram = run_gram_of(deltas)
    fit = WindowFit(run_gram, (STEPS[1], STEPS[-1]), rank=rank)
    now = brute_predictions(deltas, 1, len(STEPS) - 1, TARGET, rank)
    assert predicted_norm(fit, TARGET) == pytest.approx(norm_of(now), rel=1e-10)
    for previous_index in (len(STEPS) - 2, len(STEPS) - 4):
        before = brute_predictions(deltas, 1, previous_index, TARGET, rank)
        expected = norm_of([a - b for a, b in zip(now, before)]) / norm_of(before)
        change = prediction_change(run_gram, STEPS[1], STEPS[-1], STEPS[previous_index], TARGET, rank=rank)
        assert change == pytest.approx(expected, rel=1e-8)


def test_forecast_error_is_the_mean_relative_error_of_an_earlier_window_on_the_checkpoints_since(deltas):
    run_gram = run_gram_of(deltas)
    for lag in (1, 2, 3):
        end = len(STEPS) - 1 - lag
        errors = []
        for target in range(end + 1, len(STEPS)):
            predictions = brute_predictions(deltas, 0, end, STEPS[target])
            observed = [delta[target] for delta in deltas]
            errors.append(norm_of([p - o for p, o in zip(predictions, observed)]) / norm_of(observed))
        assert forecast_error(run_gram, STEPS[0], lag) == pytest.approx(np.mean(errors), rel=1e-8)


def test_live_row_energy_and_r2_are_the_whole_model_sums(deltas):
    run_gram = run_gram_of(deltas)
    row = live_row(run_gram, STEPS[0], TARGET, previous_end=STEPS[-2], settle_end=STEPS[-4], lags=2)
    top, total, residual, spread = 0.0, 0.0, 0.0, 0.0
    for delta in deltas:
        sigma, directions = trajectory_svd(delta)
        top += sigma[0] ** 2
        total += (sigma**2).sum()
        coefficients = delta @ directions[0]
        slope, intercept, _ = line_fit(STEPS, coefficients)
        residual += ((coefficients - slope * STEPS - intercept) ** 2).sum()
        spread += ((coefficients - coefficients.mean()) ** 2).sum()
    assert row["energy_rank1"] == pytest.approx(top / total, rel=1e-10)
    assert row["r2"] == pytest.approx(1 - residual / spread, rel=1e-8)
    assert row["latest_step"] == STEPS[-1] and row["n_checkpoints"] == len(STEPS) and row["window_start"] == STEPS[0]
    assert row["prediction_change"] == pytest.approx(
        prediction_change(run_gram, STEPS[0], STEPS[-1], STEPS[-2], TARGET), rel=1e-12)
    assert row["settle_change"] == pytest.approx(
        prediction_change(run_gram, STEPS[0], STEPS[-1], STEPS[-4], TARGET), rel=1e-12)
    assert row["forecast_error"] == max(row["forecast_error_lag1"], row["forecast_error_lag2"])
    assert "forecast_error_lag3" not in row


def test_windows_too_short_to_fit_give_nan_not_errors(deltas):
    run_gram = run_gram_of([delta[:3] for delta in deltas], STEPS[:3])
    row = live_row(run_gram, STEPS[0], TARGET, previous_end=STEPS[1], lags=3)
    assert np.isnan(row["forecast_error_lag2"]) and np.isnan(row["forecast_error_lag3"])
    assert np.isnan(row["forecast_error"])  # not every lag has a window yet
    assert np.isnan(row["settle_change"])   # no update k updates ago
    assert np.isfinite(row["prediction_change"])
    # A previous window whose checkpoints left the analysis (rotation) has no comparable prediction.
    assert np.isnan(prediction_change(run_gram, STEPS[0], STEPS[2], 7, TARGET))


def test_rows_for_updates_recompute_what_each_update_wrote(deltas):
    from relex_core.live import rows_for_updates

    run_gram = run_gram_of(deltas)
    ends = [STEPS[1], STEPS[3], STEPS[4], STEPS[6], STEPS[8]]  # some updates took several checkpoints
    rows = rows_for_updates(run_gram, ends, STEPS[0], TARGET, settle_updates=2, lags=2)
    assert [row["latest_step"] for row in rows] == ends
    for index, end in enumerate(ends):
        count = list(STEPS).index(end) + 1
        prefix = run_gram_of([delta[:count] for delta in deltas], STEPS[:count])
        expected = live_row(prefix, STEPS[0], TARGET, ends[index - 1] if index else None,
                            ends[index - 2] if index >= 2 else None, 2)
        for key, value in expected.items():
            np.testing.assert_allclose(rows[index][key], value, rtol=1e-12, err_msg=key)
