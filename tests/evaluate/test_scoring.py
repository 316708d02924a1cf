"""The Python API a dashboard calls: score(paths, scorer, out=, force=, progress=, cancel=)."""

import threading
import time

import pytest

from relex_core.errors import RelexError
from relex_core.evaluate import CommandScorer, LmEvalScorer, SampleScorer, read_scores, score

from .scripts import by_name_command, checkpoint, has_ended


@pytest.fixture
def calls(tmp_path, monkeypatch):
    monkeypatch.setenv("CALLS", str(tmp_path / "calls.txt"))
    return tmp_path / "calls.txt"


def test_score_reports_every_folder_and_its_progress_and_writes_the_table(tmp_path, calls):
    folders = [checkpoint(tmp_path / name) for name in ("ab", "failing", "abcd")]
    seen = []
    outcomes = score(folders, CommandScorer(by_name_command(tmp_path)), out=tmp_path / "scores.csv",
                     progress=lambda fraction, message: seen.append((fraction, message)))
    assert [outcome.status for outcome in outcomes] == ["scored", "failed", "scored"]
    assert "exit code 3" in outcomes[1].error and str(folders[1]) in outcomes[1].error
    assert seen == [(0.0, f"scoring {folders[0]}"), (1 / 3, f"scoring {folders[1]}"),
                    (2 / 3, f"scoring {folders[2]}"), (1.0, "done")]
    assert read_scores(tmp_path / "scores.csv").value.tolist() == [0.02, 0.04]
    assert [row["value"] for outcome in outcomes for row in outcome.rows] == [0.02, 0.04]
    again = score(folders, CommandScorer(by_name_command(tmp_path)), out=tmp_path / "scores.csv")
    assert [outcome.status for outcome in again] == ["skipped", "failed", "skipped"]


def test_cancel_ends_a_running_command_at_once_and_scores_nothing_after_it(tmp_path, calls):
    folders = [checkpoint(tmp_path / name) for name in ("ab", "slow", "abc")]
    cancel = threading.Event()

    def cancel_once_slow_runs():
        while not (tmp_path / "slow.pid").exists():
            time.sleep(0.05)
        cancel.set()

    threading.Thread(target=cancel_once_slow_runs, daemon=True).start()
    start = time.monotonic()
    outcomes = score(folders, CommandScorer(by_name_command(tmp_path)), out=tmp_path / "scores.csv", cancel=cancel)
    assert time.monotonic() - start < 60  # the script sleeps 120 s
    assert [outcome.status for outcome in outcomes] == ["scored"]
    assert calls.read_text().split() == ["ab", "slow"]
    assert has_ended(int((tmp_path / "slow.pid").read_text()))
    assert read_scores(tmp_path / "scores.csv").path.tolist() == [str(folders[0])]


def test_scorers_are_plain_hashable_settings_named_for_the_scorer_column(tmp_path):
    lm_eval = LmEvalScorer(tasks=["gsm8k", "arc_easy"], model_args="dtype=bfloat16", limit=50)
    assert lm_eval == LmEvalScorer(tasks=("gsm8k", "arc_easy"), model_args="dtype=bfloat16", limit=50)
    assert len({lm_eval, SampleScorer(), SampleScorer(limit=10), CommandScorer("run {path}", timeout=5)}) == 4
    assert lm_eval.name == "lm-eval gsm8k,arc_easy backend=hf limit=50 args=dtype=bfloat16"
    assert SampleScorer(limit=10).name == "sample limit=10"
    # the timeout decides whether a score comes back, not what it is: same scorer for the table
    assert CommandScorer("run {path}", timeout=5).name == CommandScorer("run {path}").name == "command run {path}"


def test_importing_the_package_does_not_import_lm_eval_or_torch():
    import subprocess
    import sys

    code = "import sys, relex_core.evaluate; print('lm_eval' in sys.modules, 'torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == [
        "False", "False"]


def test_a_missing_path_fails_before_anything_is_scored(tmp_path, calls):
    with pytest.raises(RelexError, match="no such checkpoint folder"):
        score([checkpoint(tmp_path / "ab"), tmp_path / "missing"], CommandScorer(by_name_command(tmp_path)))
    assert not calls.exists()
