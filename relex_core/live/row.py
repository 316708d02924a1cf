"""The live row: what one update of `relex watch` says about the run so far, from the Gram alone.

Every figure is a pure function of a RunGram (window fits via WindowFit):
- the window A:latest's whole-model rank-1 energy and R² (as `relex analyze` reports them);
- the predicted whole-model update at the target step S, ‖δ̂(S)‖, and how much it moved since the
  previous update's window A:previous (and since the update k updates ago, for the advice):
  ‖δ̂_now(S) − δ̂_before(S)‖ / ‖δ̂_before(S)‖. Both predictions
  are weighted sums of checkpoint deltas, δ̂ = Σ_t w_t Δ_t (`WindowFit.weights`), so the distance is
  the quadratic form (w − w')ᵀ G (w − w') of the current Gram, summed over tensors;
- how well earlier windows forecast what has since been observed: the window that ended `lag`
  checkpoints before the latest, A:s, and its mean whole-model relative error ‖δ̂(s_i) − Δ_i‖/‖Δ_i‖
  over the `lag` checkpoints after s (`WindowFit.backtest_frame`).
"""

import math

import numpy as np

from ..analysis import WindowFit
from ..errors import RelexError
from ..gram import RunGram

FORECAST_LAGS = 3  # windows ending 1, 2, 3 checkpoints before the latest


def _fit(run_gram: RunGram, start: int, end: int, **fit_options) -> WindowFit | None:
    """The fit of window start:end, or None where the window cannot take it (too few checkpoints)."""
    try:
        return WindowFit(run_gram, (int(start), int(end)), **fit_options)
    except RelexError:
        return None


def full_weights(fit: WindowFit, target_step: int) -> np.ndarray:
    """(n_tensors, N) the prediction's weight on every checkpoint of the run (0 outside the window)."""
    weights = np.zeros((len(fit.run_gram.names), len(fit.run_gram.steps)))
    weights[:, fit.window_positions] = fit.weights([target_step])[:, :, 0]
    return weights


def squared_norm(gram: np.ndarray, weights: np.ndarray) -> float:
    """Σ_tensors wᵀ G w: the whole-model ‖Σ_t w_t Δ_t‖²."""
    return float(np.einsum("ni,nij,nj->", weights, gram, weights))


def predicted_norm(fit: WindowFit, target_step: int) -> float:
    """‖δ̂(S)‖ of the whole model: sqrt Σ_tensors wᵀ G w."""
    return math.sqrt(max(0.0, squared_norm(fit.run_gram.gram, full_weights(fit, target_step))))


def prediction_change(run_gram: RunGram, start: int, end: int, previous_end: int, target_step: int,
                      **fit_options) -> float:
    """‖δ̂_{A:end}(S) − δ̂_{A:previous_end}(S)‖ / ‖δ̂_{A:previous_end}(S)‖, whole model; NaN when either
    window cannot be fitted (or the earlier one's checkpoints are no longer in the Gram)."""
    if previous_end not in set(run_gram.steps.tolist()):
        return math.nan
    now, before = _fit(run_gram, start, end, **fit_options), _fit(run_gram, start, previous_end, **fit_options)
    if now is None or before is None:
        return math.nan
    before_weights = full_weights(before, target_step)
    difference = full_weights(now, target_step) - before_weights
    reference = squared_norm(run_gram.gram, before_weights)
    if reference <= 0:
        return math.nan
    return math.sqrt(max(0.0, squared_norm(run_gram.gram, difference)) / reference)


def forecast_error(run_gram: RunGram, start: int, lag: int, **fit_options) -> float:
    """Mean whole-model relative error of the window A:s, s the checkpoint `lag` before the latest,
    on the `lag` checkpoints after it (the relex method). NaN when that window cannot be fitted."""
    if lag >= len(run_gram.steps):
        return math.nan
    fit = _fit(run_gram, start, int(run_gram.steps[-1 - lag]), **fit_options)
    if fit is None:
        return math.nan
    frame = fit.backtest_frame()
    errors = frame.loc[frame["method"] == "relex", "rel_error"].to_numpy(dtype=np.float64)
    return float(errors.mean()) if len(errors) and np.isfinite(errors).all() else math.nan


def live_row(run_gram: RunGram, start: int, target_step: int, previous_end: int | None = None,
             settle_end: int | None = None, lags: int = FORECAST_LAGS, **fit_options) -> dict:
    """The Gram figures of one update (window start:latest). fit_options: rank, fit, ... of WindowFit.

    previous_end: the latest step of the previous update; settle_end: that of the update k updates
    ago (the advice's horizon). Keys: latest_step, n_checkpoints, window_start, energy_rank1, r2,
    target_step, predicted_norm, prediction_change (against the previous update; NaN on the first),
    settle_change (against k updates ago), forecast_error_lag1 … lagN and forecast_error (their
    largest; NaN until every lag has a window).
    """
    latest = int(run_gram.steps[-1])
    fit = WindowFit(run_gram, (int(start), latest), **fit_options)
    model = fit.summary_frame("model").iloc[0]

    def change_since(end):
        return math.nan if end is None else prediction_change(run_gram, start, latest, end, target_step, **fit_options)

    row = {"latest_step": latest, "n_checkpoints": len(run_gram.steps), "window_start": int(fit.window_steps[0]),
           "energy_rank1": float(model.energy_rank1), "r2": float(model.r2), "target_step": int(target_step),
           "predicted_norm": predicted_norm(fit, target_step), "prediction_change": change_since(previous_end),
           "settle_change": change_since(settle_end)}
    errors = [forecast_error(run_gram, start, lag, **fit_options) for lag in range(1, lags + 1)]
    for lag, error in enumerate(errors, start=1):
        row[f"forecast_error_lag{lag}"] = error
    row["forecast_error"] = max(errors) if errors and all(np.isfinite(errors)) else math.nan
    return row


def rows_for_updates(run_gram: RunGram, update_ends, start: int, target_step: int, settle_updates: int = 3,
                     lags: int = FORECAST_LAGS, **fit_options) -> list[dict]:
    """The live rows a watch wrote at updates that ended at these steps, recomputed from the run's Gram
    now (each update's Gram is the leading block of today's). Updates whose window cannot be fitted
    (fewer than two checkpoints from `start`) are left out. Used by the dashboard's live mode."""
    steps = run_gram.steps
    ends = [int(end) for end in update_ends if int(end) in set(steps.tolist())]
    rows, kept_ends = [], []
    for end in ends:
        prefix = run_gram.select(np.flatnonzero(steps <= end))
        try:
            row = live_row(prefix, start, target_step, kept_ends[-1] if kept_ends else None,
                           kept_ends[-settle_updates] if len(kept_ends) >= settle_updates else None, lags,
                           **fit_options)
        except RelexError:  # this update's window cannot be fitted yet
            continue
        rows.append(row)
        kept_ends.append(end)
    return rows
