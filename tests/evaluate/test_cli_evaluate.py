"""`relex evaluate` as a user runs it: appending, skipping what is scored, --force, and Ctrl-C."""

import os
import signal
import time

import pandas as pd
import pytest

from .scripts import by_name_command, checkpoint, has_ended, relex_evaluate


def test_scored_unchanged_folders_are_skipped_changed_ones_rescored_force_redoes_all_and_rows_append(tmp_path):
    first, second = checkpoint(tmp_path / "run" / "checkpoint-10"), checkpoint(tmp_path / "run" / "checkpoint-20")
    calls, scores = tmp_path / "calls.txt", tmp_path / "scores.csv"
    evaluate = lambda *extra: relex_evaluate(tmp_path / "run", "--command", by_name_command(tmp_path),  # noqa: E731
                                             "--out", scores, "--quiet", *extra, env={"CALLS": str(calls)})

    assert evaluate().returncode == 0
    table = pd.read_csv(scores)
    assert table.path.tolist() == [str(first), str(second)] and table.step.tolist() == [10, 20]
    assert table.value.tolist() == [len("checkpoint-10") / 100] * 2

    again = evaluate()
    assert again.returncode == 0 and again.stdout.count("skipped") == 2
    assert len(pd.read_csv(scores)) == 2 and calls.read_text().split() == ["checkpoint-10", "checkpoint-20"]

    os.utime(first / "model.safetensors", ns=(0, 10**18))  # the weights changed: score again
    assert evaluate().returncode == 0
    assert calls.read_text().split()[2:] == ["checkpoint-10"]
    assert pd.read_csv(scores).path.tolist() == [str(first), str(second), str(first)]

    assert evaluate("--force").returncode == 0
    assert calls.read_text().split()[3:] == ["checkpoint-10", "checkpoint-20"]
    assert len(pd.read_csv(scores)) == 5


def test_ctrl_c_keeps_the_rows_already_written_and_ends_the_running_script(tmp_path):
    done, slow = checkpoint(tmp_path / "done"), checkpoint(tmp_path / "slow")
    scores, pid_file = tmp_path / "scores.csv", tmp_path / "slow.pid"
    process = relex_evaluate(done, slow, checkpoint(tmp_path / "never"), "--command", by_name_command(tmp_path),
                             "--out", scores, env={"CALLS": str(tmp_path / "calls.txt")}, wait=False)
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:  # `slow` is being scored: `done` is written
        time.sleep(0.05)
    assert pid_file.exists()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130 and "relex: interrupted" in stderr and "Traceback" not in stderr
    table = pd.read_csv(scores)
    assert table.path.tolist() == [str(done)] and table.value.tolist() == [0.04]
    assert (tmp_path / "calls.txt").read_text().split() == ["done", "slow"]
    assert has_ended(int(pid_file.read_text()))


@pytest.mark.parametrize("arguments, message", [
    (["--sample", "--timeout", "5"], "--timeout does not apply to --sample"),
    (["--command", "echo {path}", "--limit", "5"], "--limit does not apply to --command"),
    (["--sample", "--lm-eval-args", "dtype=float32"], "--lm-eval-args does not apply to --sample"),
    (["--command", "echo 1"], "must contain {path}"),
    (["--lm-eval", "x", "--lm-eval-args", "pretrained=elsewhere"], "must not set pretrained"),
])
def test_flags_of_another_scorer_and_bad_settings_are_refused_in_one_line(tmp_path, arguments, message):
    result = relex_evaluate(checkpoint(tmp_path / "checkpoint-1"), *arguments)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_the_scores_file_is_never_written_inside_a_folder_being_scored(tmp_path):
    folder = checkpoint(tmp_path / "checkpoint-1")
    result = relex_evaluate(folder, "--sample", "--out", folder / "scores.csv")
    assert result.returncode == 2 and "must not be inside a folder being scored" in result.stderr
    assert not (folder / "scores.csv").exists()
