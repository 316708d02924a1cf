"""Scoring extrapolated and reconstructed checkpoints of the sample run with the sample verifier."""

import json

import pytest

from relex_core import WindowFit
from relex_core.export import extrapolate, reconstruct
from relex_core.sample.verifier import evaluate_checkpoint
from relex_dashboard.evaluate import default_evaluation_steps, score_checkpoints

from .conftest import SAMPLE_RUN


def logged_heldout_reward(step: int) -> float:
    state = json.loads((SAMPLE_RUN / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return next(entry["heldout_reward"] for entry in state["log_history"] if entry["step"] == step)


def test_scores_are_the_verifiers_on_the_same_exports_users_get(run_gram, tmp_path):
    steps = [int(step) for step in run_gram.steps]
    fit = WindowFit(run_gram, (steps[0], steps[9]))
    target, beyond, observed = steps[-1], 2 * steps[-1], steps[9]
    fractions = []
    scores = score_checkpoints(fit, [target, beyond], [observed], evaluate_checkpoint,
                               progress=lambda fraction, message: fractions.append(fraction), scratch_dir=tmp_path)
    assert list(zip(scores["kind"], scores["step"])) == [("actual", target), ("extrapolated", target),
                                                          ("extrapolated", beyond), ("reconstructed", observed)]
    actual = scores.iloc[0]
    assert actual["accuracy"] == evaluate_checkpoint(SAMPLE_RUN / f"checkpoint-{target}")["accuracy"]
    assert actual["accuracy"] == pytest.approx(logged_heldout_reward(target))  # what RL logged for that step
    expected = {
        ("extrapolated", target): extrapolate(fit, [target], tmp_path / "e1", progress=False)[0].path,
        ("extrapolated", beyond): extrapolate(fit, [beyond], tmp_path / "e2", progress=False)[0].path,
        ("reconstructed", observed): reconstruct(fit, observed, tmp_path / "r", progress=False).path}
    for (kind, step), path in expected.items():
        row = scores[(scores["kind"] == kind) & (scores["step"] == step)].iloc[0]
        assert row["accuracy"] == evaluate_checkpoint(path)["accuracy"]
    assert fractions[0] == 0 and fractions[-1] == 1 and fractions == sorted(fractions)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["e1", "e2", "r"]  # scratch exports removed


def test_default_evaluation_steps_spread_over_the_checkpoints_after_the_window():
    steps = list(range(10, 310, 10))
    assert default_evaluation_steps(steps, (10, 150)) == [160, 210, 250, 300]
    assert default_evaluation_steps(steps, (10, 280)) == [290, 300]
    assert default_evaluation_steps(steps, (10, 300)) == []
