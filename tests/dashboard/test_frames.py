"""The dashboard's frames: reshapings of RunGram / WindowFit, checked against the weights and plain numpy."""

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from relex_core import RelexError, WindowFit, spectrum_frame
from relex_core.io.discover import open_run
from relex_dashboard import frames

from .conftest import SAMPLE_RUN, steps_and_weights


@pytest.fixture
def window(run_gram):
    """The first half of the sample run's checkpoints."""
    return int(run_gram.steps[0]), int(run_gram.steps[len(run_gram.steps) // 2 - 1])


def test_update_norm_is_the_distance_of_all_weights_from_the_base(run_gram):
    def weights(step):
        return load_file(SAMPLE_RUN / f"checkpoint-{step}" / "model.safetensors")

    base = weights(0)
    expected = [0.0] + [np.sqrt(sum(float(((tensors[name].double() - base[name].double()) ** 2).sum())
                                    for name in run_gram.names))
                        for tensors in (weights(step) for step in run_gram.steps)]
    base_norm = np.sqrt(sum(float((base[name].double() ** 2).sum()) for name in run_gram.names))
    frame = frames.update_norm_frame(run_gram)
    assert list(frame["step"]) == [0, *run_gram.steps]
    np.testing.assert_allclose(frame["update_norm"], expected, rtol=1e-9)
    np.testing.assert_allclose(frame["relative_update"], np.array(expected) / base_norm, rtol=1e-9)


def test_run_summary_counts_parameters_tensors_and_bytes(run_gram):
    summary = frames.run_summary(run_gram)
    files = [path for path in SAMPLE_RUN.glob("checkpoint-*/*.safetensors")]
    assert summary["disk_bytes"] == sum(path.stat().st_size for path in files)
    assert summary["parameters"] == sum(int(np.prod(shape)) for shape in run_gram.shapes)
    assert summary["tensors"] == len(run_gram.names)
    assert summary["checkpoints"] == len(run_gram.steps) and summary["last_step"] == run_gram.steps[-1]
    assert summary["dtypes"] == "bfloat16"


def test_trainer_metrics_read_the_last_checkpoints_log_history(run_gram):
    last = SAMPLE_RUN / f"checkpoint-{run_gram.steps[-1]}" / "trainer_state.json"
    history = json.loads(last.read_text())["log_history"]
    metrics = frames.trainer_metrics(run_gram.run)
    for name in ("train_reward", "heldout_reward"):
        logged = [(entry["step"], entry[name]) for entry in history if name in entry]
        rows = metrics[metrics["metric"] == name]
        assert list(zip(rows["step"], rows["value"])) == logged and logged


def test_reward_names_put_held_out_rewards_first():
    metrics = pd.DataFrame({"step": [1, 1, 1, 1], "metric": ["loss", "train_reward", "heldout_reward", "lr"],
                            "value": [0.0] * 4})
    assert frames.reward_names(metrics) == ["heldout_reward", "train_reward"]


def test_trainer_metrics_keep_numbers_only_and_name_a_broken_file(tmp_path):
    from relex_core.synthetic import make_run
    folder = make_run(tmp_path / "run", steps=(10, 20))
    state = folder / "checkpoint-20" / "trainer_state.json"
    state.write_text(json.dumps({"global_step": 20, "log_history": [
        {"step": 10, "reward": 0.5, "epoch": 1.0, "done": True, "note": "x"}, {"loss": 1.0}]}))
    metrics = frames.trainer_metrics(open_run(folder))
    assert metrics.to_dict("records") == [{"step": 10, "metric": "reward", "value": 0.5}]
    state.write_text(json.dumps({"global_step": 20}))
    assert frames.trainer_metrics(open_run(folder)).empty
    run = open_run(folder)
    state.write_text("{broken")
    with pytest.raises(RelexError, match="trainer_state.json"):
        frames.trainer_metrics(run)


def test_layer_module_grid_puts_each_weight_matrix_in_its_cell(run_gram, window):
    tensors = WindowFit(run_gram, window).tensors_frame()
    grid = frames.layer_module_grid(tensors, "energy_rank1")
    assert list(grid.values.columns[:7]) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"]
    by_name = tensors.set_index("tensor")["energy_rank1"]
    for layer in grid.values.index:
        for module in grid.values.columns:
            name = grid.tensors.loc[layer, module]
            assert name.endswith(".weight") and f"layers.{layer}." in name
            assert grid.values.loc[layer, module] == by_name[name]
    layered_weights = tensors[tensors["layer"].notna() & tensors["tensor"].str.endswith(".weight")]
    assert grid.values.size == len(layered_weights)


def test_layer_module_grid_tells_apart_two_unknown_modules_of_a_layer():
    tensors = pd.DataFrame({"tensor": ["model.layers.0.extra_a.weight", "model.layers.0.extra_b.weight"],
                            "layer": pd.array([0, 0], dtype="Int64"), "module": ["other", "other"],
                            "r2": [0.1, 0.2]})
    grid = frames.layer_module_grid(tensors, "r2")
    assert list(grid.values.columns) == ["extra_a", "extra_b"]
    assert list(grid.values.iloc[0]) == [0.1, 0.2]


def test_module_spectrum_is_the_median_over_tensors_of_a_module(run_gram, window):
    fit = WindowFit(run_gram, window)
    spectrum = spectrum_frame(fit)
    for relative in (False, True):
        medians = frames.module_spectrum_frame(spectrum, relative)
        for module in ("q_proj", "down_proj"):
            sigma = np.stack([spectrum[spectrum["tensor"] == name]["sigma"].to_numpy()
                              for name, kind in zip(run_gram.names, run_gram.modules) if kind == module])
            if relative:
                sigma = sigma / sigma[:, :1]
            rows = medians[medians["module"] == module]
            np.testing.assert_allclose(rows["sigma"], np.median(sigma, axis=0), rtol=1e-12)
            assert set(rows["tensors"]) == {len(sigma)}
    assert list(dict.fromkeys(medians["module"]))[:3] == ["q_proj", "k_proj", "v_proj"]


def test_trend_frame_follows_the_fit_and_joins_at_the_window_end(run_gram, window):
    fit = WindowFit(run_gram, window, fit="poly2")
    name, target = run_gram.names[3], 2 * int(run_gram.steps[-1])
    trend = frames.trend_frame(fit, name, target)
    row = run_gram.names.index(name)
    np.testing.assert_allclose(trend["fitted"], fit.trend.predict(trend["step"].to_numpy())[row, 0], rtol=1e-12)
    inside, after = trend[trend["part"] == "window"], trend[trend["part"] == "extrapolation"]
    assert inside["step"].min() == window[0] and inside["step"].max() == window[1] == after["step"].min()
    assert after["step"].max() == target
    assert frames.predicted_coefficient(fit, name, target) == pytest.approx(fit.trend.predict([target])[row, 0, 0])
    assert set(frames.trend_frame(fit, name, window[1] - 1)["part"]) == {"window"}


def test_the_default_window_is_the_first_fifth_of_the_checkpoints():
    steps = list(range(10, 310, 10))  # 30 checkpoints
    assert frames.default_window(steps) == (10, 60)
    assert frames.default_window(list(range(10, 110, 10))) == (10, 20)  # 10 checkpoints: two
    assert frames.default_window([10, 20, 30], minimum=3) == (10, 30)  # a parabola needs three, even if none is left
    assert frames.default_window([10, 20, 30, 40], minimum=3) == (10, 30)  # and leaves one to test against
    assert frames.clamp_window((15, 55), steps) == (20, 50)
    assert frames.clamp_window((295, 400), steps) == (10, 60)  # one checkpoint left: back to the default
    assert frames.clamp_window(None, steps) == (10, 60)
    assert frames.window_size((20, 50), steps) == 4


def test_default_export_name_says_window_rank_fit_and_target(run_gram):
    assert frames.default_export_name(run_gram, (10, 150), 2, "poly2", [1440]) == "run-w10-150-r2-poly2-s1440"
    assert frames.default_export_name(run_gram, (10, 150), 1, "linear", [1440, 2880]) == "run-w10-150-r1-s1440-2880"
    assert frames.default_export_name(run_gram, (10, 150), 1, "linear", [150], "reconstruct") == \
        "run-w10-150-r1-reconstruct-s150"


def test_target_checks_tell_fitted_points_back_casts_and_far_extrapolations():
    check = frames.check_targets([100, 300, 2000, 5000], (200, 400))  # window length 200: far is past 4400
    assert check.fitted == [300] and check.before == [100] and check.far == [5000]
    assert check.notes[0] == "Step 300 lies inside the window `200:400`: a fitted point, not an extrapolation."
    assert "before the window" in check.notes[1]
    assert check.notes[2].startswith("Step 5,000 lies 23× the window's length (200 steps) past its end")
    assert frames.check_targets([4400], (200, 400)).notes == []  # exactly 20× is allowed without a question
    assert frames.check_targets([400, 800], (200, 400)).fitted == [400]


def test_speed_is_the_distance_between_consecutive_checkpoints_per_step(run_gram):
    steps, weights = steps_and_weights(run_gram)
    expected = [np.sqrt(sum(((weights[index][name] - weights[index - 1][name]) ** 2).sum() for name in run_gram.names))
                for index in range(1, len(steps))]
    frame = frames.speed_frame(run_gram)
    assert list(frame["step"]) == steps[1:] and list(frame["previous_step"]) == steps[:-1]
    np.testing.assert_allclose(frame["step_norm"], expected, rtol=1e-9)
    np.testing.assert_allclose(frame["speed"], np.array(expected) / np.diff(steps), rtol=1e-9)


def test_tensor_speed_and_coefficient_increment_match_the_weights(run_gram, window):
    from tests.brute_force import trajectory_svd

    steps, weights = steps_and_weights(run_gram)
    fit = WindowFit(run_gram, window, rank=2)
    name = "model.layers.1.mlp.up_proj.weight"
    deltas = np.stack([weights[index][name].ravel() - weights[0][name].ravel() for index in range(len(steps))])
    inside = [index for index, step in enumerate(steps) if window[0] <= step <= window[1]]
    _, directions = trajectory_svd(deltas[inside])
    for component in (1, 2):
        frame = frames.tensor_speed_frame(fit, name, component)
        coefficients = deltas @ directions[component - 1]  # the base's delta is 0, so its coefficient too
        np.testing.assert_allclose(frame["increment"], np.diff(coefficients) / np.diff(steps), rtol=1e-6,
                                   atol=1e-9 * np.abs(coefficients).max())
    np.testing.assert_allclose(frame["speed"], np.linalg.norm(np.diff(deltas, axis=0), axis=1) / np.diff(steps),
                               rtol=1e-9)
    assert list(frame["in_window"]) == [steps[index] >= window[0] and steps[index + 1] <= window[1]
                                        for index in range(len(steps) - 1)]


def test_largest_weight_is_the_largest_export_weight(run_gram, window):
    fit = WindowFit(run_gram, window)
    target = 2 * int(run_gram.steps[-1])
    assert frames.largest_weight(fit, [target]) == np.abs(fit.weights([target])).max()
    # the weights grow with the distance past the window: the farther, the more the export leans on them
    assert frames.largest_weight(fit, [target]) > frames.largest_weight(fit, [int(run_gram.steps[-1])])
