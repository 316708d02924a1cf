"""WindowFit's DataFrames agree with a float64 brute force on stacked deltas."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch

from relex_core import RelexError, RunGram, WindowFit, compute_gram, open_run, principal_angles_frame, stability_frame
from relex_core.io.discover import Checkpoint, Run
from relex_core.synthetic import make_run
from tests.brute_force import line_fit, rank1_drift, relex_prediction, trajectory_svd

STEPS = np.array([50, 100, 150, 200, 250, 300, 350, 400, 500, 600])
NAMES = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
         "model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.q_proj.weight", "model.norm.weight"]


@pytest.fixture(scope="module")
def trajectory():
    """Deltas (N, d) per tensor with known rank-1 structure, their bases, and the RunGram built from them."""
    rng = np.random.default_rng(7)
    sizes, noises = (40, 120, 90, 120, 8), (0.05, 0.1, 0.3, 0.1, 1.0)
    deltas = [rank1_drift(STEPS, size, noise, rng) * (index + 1) for index, (size, noise) in enumerate(zip(sizes, noises))]
    bases = [rng.standard_normal(size) for size in sizes]
    run = Run(source=Path("run"), base=Checkpoint(0, Path("run/checkpoint-0")),
              checkpoints=tuple(Checkpoint(int(step), Path(f"run/checkpoint-{step}")) for step in STEPS))
    run_gram = RunGram(run=run, steps=STEPS.copy(), names=NAMES, shapes=[(size,) for size in sizes],
                       dtypes=["float64"] * len(sizes), gram=np.stack([d @ d.T for d in deltas]),
                       base_sq_norm=np.array([base @ base for base in bases]))
    return deltas, bases, run_gram


def test_window_is_inclusive_and_excludes_the_base(trajectory):
    _, _, run_gram = trajectory
    assert list(WindowFit(run_gram, "0:200").window_steps) == [50, 100, 150, 200]
    assert list(WindowFit(run_gram, "1:200").window_steps) == [50, 100, 150, 200]
    assert list(WindowFit(run_gram, "300:").window_steps) == [300, 350, 400, 500, 600]
    assert list(WindowFit(run_gram).window_steps) == list(STEPS)


def test_windows_with_fewer_than_two_checkpoints_are_refused(trajectory):
    with pytest.raises(RelexError, match="at least two"):
        WindowFit(trajectory[2], "0:50")
    with pytest.raises(RelexError, match="A:B"):
        WindowFit(trajectory[2], "100")


def test_tensors_frame_matches_brute_force(trajectory):
    deltas, bases, run_gram = trajectory
    window = slice(0, 6)
    frame = WindowFit(run_gram, "0:300", rank=2).tensors_frame()
    for row, tensor_deltas in enumerate(deltas):
        sigma, directions = trajectory_svd(tensor_deltas[window])
        slope, intercept, r2 = line_fit(STEPS[window], tensor_deltas[window] @ directions[0])
        record = frame.iloc[row]
        assert record.sigma_1 == pytest.approx(sigma[0], rel=1e-9)
        assert record.sigma_2 == pytest.approx(sigma[1], rel=1e-7)
        assert record.energy_rank1 == pytest.approx(sigma[0] ** 2 / (sigma**2).sum(), rel=1e-9)
        assert record.energy_rank_k == pytest.approx((sigma[:2] ** 2).sum() / (sigma**2).sum(), rel=1e-9)
        assert record.slope == pytest.approx(slope, rel=1e-8)
        assert record.intercept == pytest.approx(intercept, rel=1e-7, abs=1e-10 * abs(slope) * 300)
        assert record.r2 == pytest.approx(r2, rel=1e-8)
        assert record.update_norm == pytest.approx(np.linalg.norm(tensor_deltas[5]), rel=1e-12)
        assert record.relative_update == pytest.approx(np.linalg.norm(tensor_deltas[5]) / np.linalg.norm(bases[row]))
    assert list(frame.layer.astype("object").where(frame.layer.notna(), None)) == [None, 0, 0, 1, None]
    assert list(frame.module) == ["embed_tokens", "q_proj", "down_proj", "q_proj", "final_norm"]


def test_backtest_matches_brute_force_for_every_method_and_later_checkpoint(trajectory):
    deltas, _, run_gram = trajectory
    window = slice(0, 5)  # steps 50..250; targets 300..600
    fit = WindowFit(run_gram, "0:250", rank=2)
    frame = fit.backtest_frame()
    assert sorted(frame.target_step.unique()) == [300, 350, 400, 500, 600]
    for target in range(5, len(STEPS)):
        step = STEPS[target]
        predictions = {
            "relex": [relex_prediction(d[window], STEPS[window], step, rank=2) for d in deltas],
            "last": [d[4] for d in deltas],
            "linear": [d[4] * step / STEPS[4] for d in deltas],
        }
        truth = np.concatenate([d[target] for d in deltas])
        for method, parts in predictions.items():
            prediction = np.concatenate(parts)
            record = frame[(frame.target_step == step) & (frame.method == method)].iloc[0]
            assert record.rel_error == pytest.approx(np.linalg.norm(prediction - truth) / np.linalg.norm(truth), rel=1e-8)
            assert record.cosine == pytest.approx(
                prediction @ truth / np.linalg.norm(prediction) / np.linalg.norm(truth), rel=1e-8)


def test_backtest_by_layer_sums_over_the_layer_tensors(trajectory):
    deltas, _, run_gram = trajectory
    frame = WindowFit(run_gram, "0:250").backtest_frame(by="layer")
    record = frame[(frame.layer == 0) & (frame.target_step == 400) & (frame.method == "relex")].iloc[0]
    prediction = np.concatenate([relex_prediction(deltas[i][:5], STEPS[:5], 400, 1) for i in (1, 2)])
    truth = np.concatenate([deltas[i][7] for i in (1, 2)])
    assert record.rel_error == pytest.approx(np.linalg.norm(prediction - truth) / np.linalg.norm(truth), rel=1e-8)


def test_summary_frame_sums_numerators_and_denominators(trajectory):
    deltas, _, run_gram = trajectory
    frame = WindowFit(run_gram, "0:400").summary_frame("module").set_index("module")
    sigmas = [trajectory_svd(deltas[i][:8])[0] for i in (1, 3)]
    expected = sum(s[0] ** 2 for s in sigmas) / sum((s**2).sum() for s in sigmas)
    assert frame.loc["q_proj", "energy_rank1"] == pytest.approx(expected, rel=1e-9)
    assert frame.loc["q_proj", "tensors"] == 2
    model = WindowFit(run_gram, "0:400").summary_frame("model").iloc[0]
    assert model.tensors == len(NAMES)
    assert model.numel == sum(d.shape[1] for d in deltas)


def test_weights_rebuild_the_prediction_from_the_window_checkpoints(trajectory):
    deltas, _, run_gram = trajectory
    fit = WindowFit(run_gram, "100:400", rank=3)
    weights = fit.weights([700, 900])
    window = slice(1, 8)
    for row, tensor_deltas in enumerate(deltas):
        for column, step in enumerate((700, 900)):
            expected = relex_prediction(tensor_deltas[window], STEPS[window], step, rank=3)
            np.testing.assert_allclose(weights[row, :, column] @ tensor_deltas[window], expected, rtol=1e-6,
                                       atol=1e-8 * np.abs(expected).max())
    linear = fit.weights([800], method="linear")
    assert np.all(linear[:, :-1] == 0) and np.allclose(linear[:, -1, 0], 800 / 400)


def test_reconstruction_is_the_rank_k_projection_of_an_observed_checkpoint(trajectory):
    deltas, _, run_gram = trajectory
    fit = WindowFit(run_gram, "0:300", rank=2)
    weights = fit.reconstruction_weights(500)
    for row, tensor_deltas in enumerate(deltas):
        _, directions = trajectory_svd(tensor_deltas[:6])
        expected = directions[:2].T @ (directions[:2] @ tensor_deltas[8])
        np.testing.assert_allclose(weights[row] @ tensor_deltas[:6], expected, rtol=1e-6,
                                   atol=1e-8 * np.abs(expected).max())


def test_coefficients_frame_holds_every_checkpoint_with_fit_and_residual(trajectory):
    deltas, _, run_gram = trajectory
    frame = WindowFit(run_gram, "0:300").coefficients_frame([NAMES[2]])
    _, directions = trajectory_svd(deltas[2][:6])
    np.testing.assert_allclose(frame.coefficient, deltas[2] @ directions[0], rtol=1e-8)
    slope, intercept, _ = line_fit(STEPS[:6], deltas[2][:6] @ directions[0])
    np.testing.assert_allclose(frame.fitted, slope * STEPS + intercept, rtol=1e-7)
    assert list(frame.in_window) == [True] * 6 + [False] * 4


def test_stability_of_v1_for_growing_windows_matches_svd_directions(trajectory):
    deltas, _, run_gram = trajectory
    frame = stability_frame(run_gram, window_ends=[150, 300], start=50).set_index("window_end")
    for end, rows in ((150, 3), (300, 6)):
        overlaps = [abs(trajectory_svd(d[:rows])[1][0] @ trajectory_svd(d)[1][0]) for d in deltas]
        scales = [trajectory_svd(d[:rows])[0][0] * trajectory_svd(d)[0][0] for d in deltas]
        assert frame.loc[end, "overlap_median"] == pytest.approx(np.median(overlaps), rel=1e-7)
        assert frame.loc[end, "overlap_model"] == pytest.approx(np.dot(overlaps, scales) / np.sum(scales), rel=1e-7)


# ---------------------------------------------------------------- fits beyond the line


def explicit_directions(tensor_deltas, window, rank):
    """(k, d) the window's top-k directions, from np.linalg.svd of the stacked deltas."""
    return trajectory_svd(tensor_deltas[window])[1][:rank]


def test_fit_last_takes_the_subspace_from_the_whole_window_and_the_trend_from_its_last_checkpoints(trajectory):
    deltas, _, run_gram = trajectory
    window = slice(0, 8)  # steps 50…400
    fit = WindowFit(run_gram, "0:400", rank=2, fit="poly2", fit_last=5)
    assert list(fit.fit_steps) == [200, 250, 300, 350, 400]
    weights = fit.weights([450, 700])
    for row, tensor_deltas in enumerate(deltas):
        directions = explicit_directions(tensor_deltas, window, 2)
        coefficients = tensor_deltas[3:8] @ directions.T  # (5, k) at the last five window steps
        for column, step in enumerate((450, 700)):
            expected = sum(np.polyval(np.polyfit(STEPS[3:8], coefficients[:, k], 2), step) * directions[k]
                           for k in range(2))
            np.testing.assert_allclose(weights[row, :, column] @ tensor_deltas[window], expected, rtol=1e-6,
                                       atol=1e-8 * np.abs(expected).max())


def test_refit_every_matches_a_direct_autoregressive_loop_over_explicit_vectors(trajectory):
    deltas, _, run_gram = trajectory
    window = slice(0, 8)  # steps 50…400, every 50
    fit = WindowFit(run_gram, "50:400", rank=2, fit="linear", fit_last=6, refit_every=3)
    targets = [450, 600, 800]
    weights = fit.weights(targets)
    for row, tensor_deltas in enumerate(deltas):
        directions = explicit_directions(tensor_deltas, window, 2)
        # The buffer holds vectors: each window checkpoint projected on the subspace, then predictions.
        buffer = list(tensor_deltas[2:8] @ directions.T @ directions)
        buffer_steps = list(STEPS[2:8].astype(float))
        predicted, since_refit = {}, 3
        for step in range(450, 801, 50):
            if since_refit >= 3:
                line = np.polyfit(buffer_steps, np.array(buffer), 1)  # one line per coordinate of the vectors
                anchor = buffer_steps[-1] + 50
                since_refit = 0
            vector = line[0] * anchor + line[1]
            predicted[step] = vector
            buffer, buffer_steps = buffer[1:] + [vector], buffer_steps[1:] + [buffer_steps[-1] + 50]
            since_refit += 1
        for column, step in enumerate(targets):
            expected = predicted[step]
            np.testing.assert_allclose(weights[row, :, column] @ tensor_deltas[window], expected, rtol=1e-6,
                                       atol=1e-8 * np.abs(expected).max())


@pytest.mark.parametrize("settings", [{"fit": "poly3"}, {"fit": "linear", "fit_last": 4, "refit_every": 2}])
def test_targets_inside_the_window_get_the_fitted_not_the_observed_coefficients(trajectory, settings):
    deltas, _, run_gram = trajectory
    window = slice(0, 8)
    fit = WindowFit(run_gram, "50:400", rank=2, **settings)
    degree = 3 if settings["fit"] == "poly3" else 1
    fitted_rows = slice(8 - settings.get("fit_last", 8), 8)
    weights = fit.weights([100, 350])
    for row, tensor_deltas in enumerate(deltas):
        directions = explicit_directions(tensor_deltas, window, 2)
        coefficients = tensor_deltas[window] @ directions.T
        for column, (step, position) in enumerate(((100, 1), (350, 6))):
            trends = [np.polyfit(STEPS[fitted_rows], coefficients[fitted_rows, k], degree) for k in range(2)]
            expected = sum(np.polyval(trends[k], step) * directions[k] for k in range(2))
            rebuilt = weights[row, :, column] @ tensor_deltas[window]
            np.testing.assert_allclose(rebuilt, expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())
            observed = coefficients[position] @ directions
            assert np.linalg.norm(rebuilt - observed) > 1e-6 * np.linalg.norm(observed)  # not the projection


def test_r2_after_the_window_matches_brute_force_per_tensor_and_pooled(trajectory):
    deltas, _, run_gram = trajectory
    fit = WindowFit(run_gram, "0:300", rank=2)
    frame = fit.tensors_frame()
    residual_sum = total_sum = 0.0
    for row, tensor_deltas in enumerate(deltas):
        directions = explicit_directions(tensor_deltas, slice(0, 6), 2)
        residuals, totals = [], []
        for k in range(2):
            coefficients = tensor_deltas @ directions[k]
            slope, intercept, r2 = line_fit(STEPS[:6], coefficients[:6])
            after = coefficients[6:]
            residuals.append(((after - (slope * STEPS[6:] + intercept)) ** 2).sum())
            totals.append(((after - after.mean()) ** 2).sum())
        assert frame.r2_after_window[row] == pytest.approx(1 - residuals[0] / totals[0], rel=1e-7)
        assert frame.r2_after_window_rank_k[row] == pytest.approx(1 - sum(residuals) / sum(totals), rel=1e-7)
        residual_sum, total_sum = residual_sum + residuals[0], total_sum + totals[0]
    model = fit.summary_frame("model").iloc[0]
    assert model.r2_after_window == pytest.approx(1 - residual_sum / total_sum, rel=1e-7)
    assert np.isnan(WindowFit(run_gram).tensors_frame().r2_after_window).all()  # nothing after the window


def test_discarded_energy_and_the_error_splits_match_explicit_projections(trajectory):
    deltas, _, run_gram = trajectory
    fit = WindowFit(run_gram, "100:300", rank=2)
    window = slice(1, 6)
    tensor_frame = fit.discarded_energy_frame("tensor")
    expected_rows = []
    for row, tensor_deltas in enumerate(deltas):
        directions = explicit_directions(tensor_deltas, window, 2)
        for position, step in enumerate(STEPS):
            delta = tensor_deltas[position]
            outside = delta - directions.T @ (directions @ delta)
            prediction = relex_prediction(tensor_deltas[window], STEPS[window], step, rank=2)
            last_error = tensor_deltas[5] - delta
            last_outside = last_error - directions.T @ (directions @ last_error)
            expected_rows.append({"tensor": NAMES[row], "step": step, "update_sq": delta @ delta,
                                  "discarded_sq": outside @ outside,
                                  "relex_error_sq": (prediction - delta) @ (prediction - delta),
                                  "last_error_sq": last_error @ last_error,
                                  "last_error_outside_sq": last_outside @ last_outside})
    expected = pd.DataFrame(expected_rows)
    scale = expected.update_sq.max()
    for column in ("update_sq", "discarded_sq", "relex_error_sq", "last_error_sq", "last_error_outside_sq"):
        np.testing.assert_allclose(tensor_frame[column], expected[column], rtol=1e-6, atol=1e-10 * scale)
    np.testing.assert_allclose(tensor_frame.relex_error_sq,
                               tensor_frame.relex_error_inside_sq + tensor_frame.discarded_sq, rtol=1e-12)
    np.testing.assert_allclose(tensor_frame.last_error_sq,
                               tensor_frame.last_error_inside_sq + tensor_frame.last_error_outside_sq, rtol=1e-9,
                               atol=1e-12 * scale)
    assert list(tensor_frame.part[:10]) == ["before"] + ["window"] * 5 + ["after"] * 4
    # Groups sum the tensors' squares; the share is a ratio of sums.
    module = fit.discarded_energy_frame("module").set_index(["module", "step"])
    q_proj = expected[expected.tensor.isin([NAMES[1], NAMES[3]])].groupby("step")[["discarded_sq", "update_sq"]].sum()
    np.testing.assert_allclose(module.loc["q_proj", "discarded_share"], q_proj.discarded_sq / q_proj.update_sq,
                               rtol=1e-6, atol=1e-10)
    model = fit.discarded_energy_frame()
    np.testing.assert_allclose(model.discarded_sq, expected.groupby("step").discarded_sq.sum(), rtol=1e-6,
                               atol=1e-10 * scale)
    # After the window relex's error is the backtest's.
    backtest = fit.backtest_frame()
    relex = backtest[backtest.method == "relex"].set_index("target_step")
    after = model[model.part == "after"].set_index("step")
    np.testing.assert_allclose(np.sqrt(after.relex_error_sq / after.update_sq), relex.rel_error, rtol=1e-9)


def test_principal_angles_between_windows_match_scipy_on_explicit_directions(trajectory):
    deltas, _, run_gram = trajectory
    frame = principal_angles_frame(run_gram, "0:250", "150:600", rank=2)
    assert list(frame.columns) == ["tensor", "layer", "module", "angle", "cosine", "degrees"]
    for row, tensor_deltas in enumerate(deltas):
        first = explicit_directions(tensor_deltas, slice(0, 5), 2).T
        second = explicit_directions(tensor_deltas, slice(2, 10), 2).T
        expected = np.sort(np.cos(scipy.linalg.subspace_angles(first, second)))[::-1]
        np.testing.assert_allclose(frame.cosine[2 * row:2 * row + 2], expected, atol=1e-8)
    np.testing.assert_allclose(frame.degrees, np.degrees(np.arccos(frame.cosine)))
    stability = stability_frame(run_gram, window_ends=[200, 400], start=50, rank=2).set_index("window_end")
    for end, rows in ((200, 4), (400, 8)):
        cosines = [np.sort(np.cos(scipy.linalg.subspace_angles(explicit_directions(d, slice(0, rows), 2).T,
                                                               explicit_directions(d, slice(0, 10), 2).T)))[::-1]
                   for d in deltas]
        assert stability.loc[end, "principal_cosine_1"] == pytest.approx(np.median([c[0] for c in cosines]), rel=1e-7)
        assert stability.loc[end, "principal_cosine_2"] == pytest.approx(np.median([c[1] for c in cosines]), rel=1e-7)
        assert stability.loc[end, "principal_cosine_min"] == pytest.approx(min(c[1] for c in cosines), rel=1e-7)
    rank1 = stability_frame(run_gram, window_ends=[200, 400], start=50)
    np.testing.assert_allclose(rank1.principal_cosine_1, rank1.overlap_median, rtol=1e-12)


def test_fit_settings_that_cannot_work_are_refused_in_one_line(trajectory):
    _, _, run_gram = trajectory
    refusals = [
        ({"window": "0:250", "fit_last": 6}, "fit_last 6 is larger than the window"),
        ({"window": "0:250", "fit_last": 0}, "whole number ≥ 1"),
        ({"window": "0:600", "refit_every": 2}, "evenly spaced"),
        ({"window": "0:150", "fit": "poly3"}, "poly3 needs at least 4"),
        ({"window": "0:400", "fit": "sin", "fit_last": 4}, "sin needs at least 5"),
        ({"window": "0:400", "fit": "cubic"}, "must be linear, polyD"),
    ]
    for settings, message in refusals:
        with pytest.raises(RelexError, match=message) as error:
            WindowFit(run_gram, **settings)
        assert "\n" not in str(error.value)
    fit = WindowFit(run_gram, "50:400", refit_every=2)
    with pytest.raises(RelexError, match="not on the window's grid"):
        fit.weights([425])
    assert fit.fit_name == "linear" and WindowFit(run_gram, fit="poly1").fit_name == "linear"


def test_backtests_with_refit_every_leave_later_checkpoints_off_the_grid_empty(trajectory):
    deltas, _, run_gram = trajectory
    steps = np.array([50, 100, 150, 200, 275])  # the last checkpoint is off the window's grid
    uneven = RunGram(run=run_gram.run, steps=steps, names=run_gram.names[:1], shapes=run_gram.shapes[:1],
                     dtypes=run_gram.dtypes[:1], gram=run_gram.gram[:1, :5, :5], base_sq_norm=run_gram.base_sq_norm[:1])
    frame = WindowFit(uneven, "50:150", refit_every=1).backtest_frame().set_index(["target_step", "method"])
    assert np.isfinite(frame.loc[(200, "relex"), "rel_error"]) and np.isnan(frame.loc[(275, "relex"), "rel_error"])
    assert np.isfinite(frame.loc[(275, "last"), "rel_error"])


def test_a_sin_fit_through_the_gram_recovers_a_sinusoidal_trajectory():
    steps = np.arange(10, 310, 10)
    rng = np.random.default_rng(12)
    direction = rng.standard_normal(64)
    direction /= np.linalg.norm(direction)
    curve = lambda step: 1.5 * np.sin(2 * np.pi * step / 170 + 0.3) + 2.0  # along one fixed direction
    deltas = np.outer(curve(steps), direction)
    run = Run(source=Path("run"), base=Checkpoint(0, Path("run/checkpoint-0")),
              checkpoints=tuple(Checkpoint(int(step), Path(f"run/checkpoint-{step}")) for step in steps))
    run_gram = RunGram(run=run, steps=steps, names=["model.norm.weight"], shapes=[(64,)], dtypes=["float64"],
                       gram=(deltas @ deltas.T)[None], base_sq_norm=np.ones(1))
    fit = WindowFit(run_gram, "10:250", fit="sin")
    weights = fit.weights([120, 400])  # inside the window (fitted) and after it
    for column, step in enumerate((120, 400)):
        np.testing.assert_allclose(weights[0, :, column] @ deltas[:25], curve(step) * direction, atol=1e-6)
    assert fit.tensors_frame().r2[0] == pytest.approx(1.0, abs=1e-10)
    assert fit.tensors_frame().r2_after_window[0] == pytest.approx(1.0, abs=1e-8)


def test_changed_shares_sum_counts_and_elements_over_tensors_groups_and_checkpoints(tmp_path):
    from relex_core.analysis import changed_frame

    folder = make_run(tmp_path / "run", steps=(10, 20, 30, 40), dtype=torch.bfloat16, relative_update=1e-4)
    run_gram = compute_gram(open_run(folder), cache_dir=tmp_path / "cache", progress=False)
    counts, numels = run_gram.changed.astype(float), run_gram.numels.astype(float)
    fit = WindowFit(run_gram, window="10:30")
    np.testing.assert_array_equal(fit.tensors_frame()["changed_share"], counts[:, 2] / numels)
    assert fit.summary_frame()["changed_share"].iloc[0] == pytest.approx(counts[:, 2].sum() / numels.sum())
    modules = fit.summary_frame("module").set_index("module")["changed_share"]
    for module in modules.index:
        rows = np.array(run_gram.modules) == module
        assert modules[module] == pytest.approx(counts[rows, 2].sum() / numels[rows].sum())
    model = changed_frame(run_gram)
    assert list(model["step"]) == [10, 20, 30, 40]
    np.testing.assert_allclose(model["changed_share"], counts.sum(axis=0) / numels.sum())
    by_dtype = changed_frame(run_gram, "dtype")
    assert set(by_dtype["dtype"]) == {"bfloat16"} and np.array_equal(by_dtype["changed"], model["changed"])
    by_tensor = changed_frame(run_gram, "tensor")
    assert len(by_tensor) == 4 * len(run_gram.names) and by_tensor["changed"].sum() == counts.sum()
