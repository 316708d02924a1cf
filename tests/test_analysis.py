"""WindowFit's DataFrames agree with a float64 brute force on stacked deltas."""

from pathlib import Path

import numpy as np
import pytest

from relex_core import RelexError, RunGram, WindowFit, stability_frame
from relex_core.io.discover import Checkpoint, Run
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
