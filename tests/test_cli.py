"""`relex analyze` and `relex backtest` as a user runs them: subprocesses writing CSVs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from relex_core import WindowFit, compute_gram, open_run
from relex_core.synthetic import make_run

REPO = Path(__file__).resolve().parents[1]


def relex(*arguments, cache_dir):
    return subprocess.run([sys.executable, "-m", "relex_core", *map(str, arguments), "--cache-dir", str(cache_dir),
                           "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("cli") / "run", steps=(10, 20, 30, 40, 50, 60), dtype=torch.bfloat16,
                    relative_update=1e-2)


def test_analyze_writes_the_tensor_table_and_summaries(run_folder, tmp_path):
    result = relex("analyze", run_folder, "--out", tmp_path / "out", "--window", "0:40", "--rank", "2",
                   cache_dir=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    tensors = pd.read_csv(tmp_path / "out/tensors.csv")
    for column in ("tensor", "layer", "module", "numel", "sigma_1", "sigma_2", "energy_rank1", "slope",
                   "intercept", "r2"):
        assert column in tensors.columns
    fit = WindowFit(compute_gram(open_run(run_folder), cache_dir=tmp_path / "cache", progress=False), "0:40", rank=2)
    expected = fit.tensors_frame()
    assert list(tensors.tensor) == list(expected.tensor)
    np.testing.assert_allclose(tensors.sigma_1, expected.sigma_1, rtol=1e-12)
    np.testing.assert_allclose(tensors.r2, expected.r2, rtol=1e-12)
    for name in ("layers.csv", "modules.csv", "model.csv", "coefficients.csv", "spectra.csv", "stability.csv"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "energy_rank1" in result.stdout


def test_backtest_writes_one_row_per_later_checkpoint_and_method(run_folder, tmp_path):
    result = relex("backtest", run_folder, "--window", "10:30", "--out", tmp_path / "out", cache_dir=tmp_path / "c")
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(tmp_path / "out/backtest.csv")
    assert list(frame.columns[:4]) == ["target_step", "method", "rel_error", "cosine"]
    assert sorted(zip(frame.target_step, frame.method)) == sorted(
        (step, method) for step in (40, 50, 60) for method in ("relex", "last", "linear"))
    expected = WindowFit(compute_gram(open_run(run_folder), cache_dir=tmp_path / "c", progress=False),
                         "10:30").backtest_frame()
    np.testing.assert_allclose(frame.rel_error, expected.rel_error, rtol=1e-12)


def test_user_errors_print_one_line_and_exit_2(run_folder, tmp_path):
    result = relex("backtest", run_folder, "--window", "0:10", "--out", tmp_path / "out", cache_dir=tmp_path / "c")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "at least two" in result.stderr
    missing = relex("analyze", tmp_path / "nowhere", "--out", tmp_path / "out", cache_dir=tmp_path / "c")
    assert missing.returncode == 2 and str(tmp_path / "nowhere") in missing.stderr


def test_outputs_are_never_written_inside_the_run(run_folder, tmp_path):
    before = sorted((path, path.stat().st_mtime_ns) for path in run_folder.rglob("*"))
    result = relex("analyze", run_folder, "--out", run_folder / "analysis", cache_dir=tmp_path / "c")
    assert result.returncode == 2 and "inside the run" in result.stderr
    cache_inside = relex("analyze", run_folder, "--out", tmp_path / "out", cache_dir=run_folder / "cache")
    assert cache_inside.returncode == 2
    assert sorted((path, path.stat().st_mtime_ns) for path in run_folder.rglob("*")) == before


SAMPLE_RUN = REPO / "sample_data" / "run"


def test_sample_eval_scores_shipped_checkpoints_as_recorded_and_refuses_other_folders(tmp_path):
    import json

    checkpoint = SAMPLE_RUN / "checkpoint-0"
    recorded = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"][0]["heldout_reward"]
    result = subprocess.run([sys.executable, "-m", "relex_core", "sample-eval", str(checkpoint), "--out",
                             str(tmp_path / "scores.csv")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    scores = pd.read_csv(tmp_path / "scores.csv")  # `sample-eval` is `evaluate --sample`: scores.csv rows
    assert scores.metric.tolist() == ["accuracy"] and scores.value.iloc[0] == pytest.approx(recorded)
    wrong = subprocess.run([sys.executable, "-m", "relex_core", "sample-eval", str(tmp_path)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and str(tmp_path) in wrong.stderr and "Traceback" not in wrong.stderr


def test_spectra_writes_the_per_matrix_view_matching_numpy_svd(tmp_path):
    from safetensors.torch import load_file

    result = subprocess.run([sys.executable, "-m", "relex_core", "spectra", str(SAMPLE_RUN), "--step", "480", "--k",
                             "4", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--quiet"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(tmp_path / "out/update_spectra_step480.csv").set_index("tensor")
    base = load_file(SAMPLE_RUN / "checkpoint-0/model.safetensors")
    current = load_file(SAMPLE_RUN / "checkpoint-480/model.safetensors")
    matrices = [name for name, tensor in base.items() if tensor.ndim == 2]
    assert sorted(frame.index) == sorted(matrices)
    for name in ("model.layers.2.mlp.up_proj.weight", "model.embed_tokens.weight"):
        delta = current[name].double().numpy() - base[name].double().numpy()
        sigma = np.linalg.svd(delta, compute_uv=False)
        np.testing.assert_allclose(frame.loc[name, ["sigma_1", "sigma_2", "sigma_3", "sigma_4"]].to_numpy(float),
                                   sigma[:4], rtol=1e-6)
        assert frame.loc[name, "energy_rank1"] == pytest.approx(sigma[0] ** 2 / (sigma**2).sum(), rel=1e-8)
        assert frame.loc[name, "stable_rank"] == pytest.approx((sigma**2).sum() / sigma[0] ** 2, rel=1e-8)


def test_suggest_prints_the_window_and_its_reason_as_model_selection_finds_them(tmp_path):
    from relex_core import selection

    cache_dir = tmp_path / "cache"
    run_gram = compute_gram(open_run(SAMPLE_RUN), cache_dir=cache_dir, progress=False)
    steps = [int(step) for step in run_gram.steps]
    for options, holdout, tolerance in (([], selection.default_holdout(steps), 0.1),
                                        (["--holdout-from", str(steps[20]), "--tolerance", "25%"], steps[20], 0.25)):
        result = relex("suggest", SAMPLE_RUN, "--start", steps[1], "--rank", "2", *options, cache_dir=cache_dir)
        assert result.returncode == 0, result.stderr
        expected = selection.suggest_window(selection.window_end_backtests(run_gram, steps[1], rank=2), steps[1],
                                            holdout, tolerance=tolerance)
        assert result.stdout.splitlines() == [f"suggested window {expected.window[0]}:{expected.window[1]}",
                                              expected.reason]
    late = relex("suggest", SAMPLE_RUN, "--start", steps[1], "--holdout-from", steps[1], cache_dir=cache_dir)
    assert late.returncode == 2 and "Traceback" not in late.stderr
    assert late.stderr.startswith("relex: error: no window from step")
