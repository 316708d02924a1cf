"""The dashboard's frames: reshapings of RunGram / WindowFit, checked against the weights and plain numpy."""

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from relex_core import RelexError, WindowFit, spectrum_frame
from relex_core.io.discover import open_run
from relex_dashboard import frames

from .conftest import SAMPLE_RUN


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
    fit = WindowFit(run_gram, window, degree=2)
    name, target = run_gram.names[3], 2 * int(run_gram.steps[-1])
    trend = frames.trend_frame(fit, name, target)
    row = run_gram.names.index(name)
    np.testing.assert_allclose(trend["fitted"], fit.trend.predict(trend["step"].to_numpy())[row, 0], rtol=1e-12)
    inside, after = trend[trend["part"] == "window"], trend[trend["part"] == "extrapolation"]
    assert inside["step"].min() == window[0] and inside["step"].max() == window[1] == after["step"].min()
    assert after["step"].max() == target
    assert frames.predicted_coefficient(fit, name, target) == pytest.approx(fit.trend.predict([target])[row, 0, 0])
    assert set(frames.trend_frame(fit, name, window[1] - 1)["part"]) == {"window"}


def test_windows_default_and_clamp():
    steps = [10, 20, 30, 40, 50, 60, 70, 80]
    assert frames.default_window(steps) == (10, 40)
    assert frames.default_window([10, 20, 30]) == (10, 20)
    assert frames.clamp_window((15, 55), steps) == (20, 50)
    assert frames.clamp_window((75, 90), steps) == (10, 40)  # one checkpoint left: back to the default
    assert frames.clamp_window(None, steps) == (10, 40)


def test_default_export_name_says_window_rank_and_fit(run_gram):
    assert frames.default_export_name(run_gram, (10, 150), 2, 2) == "run-w10-150-r2-poly2"
    assert frames.default_export_name(run_gram, (10, 150), 1, 1) == "run-w10-150-r1"
