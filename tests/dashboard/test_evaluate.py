"""Scoring checkpoints and relex exports of the sample run with the sample verifier, as scores.csv rows."""

import json
import math

import pandas as pd
import pytest

from relex_core import WindowFit
from relex_core.export import extrapolate
from relex_core.sample.verifier import evaluate_checkpoint
from relex_dashboard import evaluate, frames

from .conftest import SAMPLE_RUN

PROBLEMS = 200  # enough to tell the checkpoints apart, and quick


def logged_heldout_reward(step: int) -> float:
    state = json.loads((SAMPLE_RUN / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return next(entry["heldout_reward"] for entry in state["log_history"] if entry["step"] == step)


def verifier(path):
    return evaluate_checkpoint(path, n_problems=PROBLEMS)


def test_the_plan_scores_the_real_checkpoints_the_last_one_and_relex_at_every_target(run_gram):
    fit = WindowFit(run_gram, (48, 480))
    assert evaluate.plan_jobs(fit, [1440, 2880]) == [("checkpoint", 480), ("checkpoint", 1440), ("relex", 1440),
                                                     ("relex", 2880)]
    assert evaluate.plan_jobs(fit, [480, 960], [96], last=True, linear=True) == [
        ("checkpoint", 480), ("checkpoint", 960), ("relex", 480), ("relex", 960), ("linear", 480), ("linear", 960),
        ("reconstruct", 96)]
    assert evaluate.plan_jobs(fit, [2880], last=False) == [("relex", 2880)]


def test_scores_are_the_verifiers_on_exports_kept_under_the_export_folder(run_gram, tmp_path):
    fit = WindowFit(run_gram, (48, 480))
    jobs = [("checkpoint", 480), ("checkpoint", 1440), ("relex", 1440), ("linear", 1440), ("reconstruct", 96)]
    fractions = []

    def folder_name(kind, step):
        return frames.default_export_name(run_gram, (48, 480), 1, "linear", [step], "" if kind == "relex" else kind)

    scores = evaluate.score_checkpoints(fit, jobs, verifier, folder_name, tmp_path / "evaluate",
                                        progress=lambda fraction, message: fractions.append(fraction))
    assert list(scores.columns) == ["path", "step", "kind", "window", "target_step", "scorer", "metric", "value",
                                    "stderr", "seconds"]
    assert list(zip(scores["kind"], scores["step"])) == jobs
    assert set(scores["scorer"]) == {"sample"} and set(scores["metric"]) == {"accuracy"}
    assert list(scores["window"]) == ["", "", "48:480", "48:480", "48:480"]
    assert list(scores["path"][:2]) == [str(SAMPLE_RUN / "checkpoint-480"), str(SAMPLE_RUN / "checkpoint-1440")]
    assert scores["path"][2] == str(tmp_path / "evaluate" / "run-w48-480-r1-s1440")
    for row in scores.itertuples():
        assert row.value == verifier(row.path)["accuracy"]  # the folder it names is kept and scores the same
        assert row.stderr == pytest.approx(math.sqrt(row.value * (1 - row.value) / PROBLEMS))
    provenance = json.loads((tmp_path / "evaluate" / "run-w48-480-r1-linear-s1440" / "relex.json").read_text())
    assert provenance["method"] == "linear" and provenance["target_step"] == 1440
    assert fractions[0] == 0 and fractions[-1] == 1 and fractions == sorted(fractions)


def test_the_verifier_on_a_real_checkpoint_is_what_rl_logged():
    assert evaluate_checkpoint(SAMPLE_RUN / "checkpoint-1440")["accuracy"] == pytest.approx(logged_heldout_reward(1440))


def row(path, step, kind, window, value, n=100):
    return {"path": path, "step": step, "kind": kind, "window": window, "target_step": step, "scorer": "sample",
            "metric": "accuracy", "value": value, "stderr": evaluate.binomial_stderr(value, n), "seconds": 1.0}


def test_stored_results_keep_every_window_and_replace_a_folder_scored_again():
    first = pd.DataFrame([row("c480", 480, "checkpoint", "", 0.40), row("w480-s1440", 1440, "relex", "48:480", 0.30)])
    second = pd.DataFrame([row("c960", 960, "checkpoint", "", 0.45), row("w960-s1440", 1440, "relex", "48:960", 0.35),
                           row("w480-s1440", 1440, "relex", "48:480", 0.32)])
    merged = evaluate.merge_scores(evaluate.merge_scores(evaluate.empty_scores(), first), second)
    assert list(merged["path"]) == ["c480", "c960", "w960-s1440", "w480-s1440"]
    assert merged.set_index("path").loc["w480-s1440", "value"] == 0.32


def test_the_comparison_is_against_the_checkpoint_at_the_same_step_and_the_windows_last():
    scores = pd.DataFrame([row("c480", 480, "checkpoint", "", 0.40), row("c1440", 1440, "checkpoint", "", 0.50),
                           row("w480-s1440", 1440, "relex", "48:480", 0.44),
                           row("w480-s2880", 2880, "relex", "48:480", 0.47),
                           row("w960-s1440", 1440, "relex", "48:960", 0.46)])
    comparison = evaluate.comparison_frame(scores).set_index("path")
    assert comparison.loc["w480-s1440", "vs_checkpoint"] == pytest.approx(-0.06)
    assert comparison.loc["w480-s1440", "vs_last"] == pytest.approx(0.04)
    assert math.isnan(comparison.loc["w480-s2880", "vs_checkpoint"])  # no real checkpoint at 2880
    assert comparison.loc["w480-s2880", "vs_last"] == pytest.approx(0.07)
    assert math.isnan(comparison.loc["w960-s1440", "vs_last"])  # its last checkpoint was not scored
    assert comparison.loc["w960-s1440", "stderr"] == pytest.approx(math.sqrt(0.46 * 0.54 / 100))


def test_binomial_standard_error():
    assert evaluate.binomial_stderr(0.5, 100) == pytest.approx(0.05)
    assert evaluate.binomial_stderr(1.0, 100) == 0.0
    assert math.isnan(evaluate.binomial_stderr(0.5, 0))


def test_default_evaluation_steps_spread_over_the_checkpoints_after_the_window():
    steps = list(range(10, 310, 10))
    assert evaluate.default_evaluation_steps(steps, (10, 150)) == [160, 210, 250, 300]
    assert evaluate.default_evaluation_steps(steps, (10, 280)) == [290, 300]
    assert evaluate.default_evaluation_steps(steps, (10, 300)) == []


def test_an_export_scored_is_the_export_users_get(run_gram, tmp_path):
    fit = WindowFit(run_gram, (48, 480))
    scores = evaluate.score_checkpoints(fit, [("relex", 2880)], verifier, lambda kind, step: "scored", tmp_path)
    exported = extrapolate(fit, [2880], tmp_path / "by-hand", progress=False)[0].path
    assert scores["value"][0] == verifier(exported)["accuracy"]
