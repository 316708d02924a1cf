"""`relex evaluate --command`: the user's script, its last stdout line the score, failures one clear line each."""

import pandas as pd
import pytest

from relex_core.errors import RelexError
from relex_core.evaluate import CommandScorer
from relex_core.evaluate.command import parse_score_line

from .scripts import by_name_command, checkpoint, has_ended, relex_evaluate


def test_good_scripts_give_rows_and_each_bad_one_a_clear_error_while_the_others_are_kept(tmp_path):
    root = tmp_path / "it's a folder"  # a quote and a space: {path} must be shell-quoted
    names = ["chatty", "failing", "bare", "hanging", "garbage"]
    folders = [checkpoint(root / name) for name in names]
    calls = tmp_path / "calls.txt"
    result = relex_evaluate(*folders, "--command", by_name_command(tmp_path), "--timeout", 3,
                            "--out", tmp_path / "scores.csv", "--quiet", env={"CALLS": str(calls)})

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert calls.read_text().split() == names  # every folder was tried, in order
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert list(zip(scores.path, scores.metric, scores.value)) == [
        (str(root / "chatty"), "accuracy", 0.75), (str(root / "chatty"), "pass@1", 0.5),
        (str(root / "bare"), "score", 0.625)]
    assert (scores.kind == "checkpoint").all() and scores.stderr.isna().all() and (scores.seconds >= 0).all()

    errors = [line for line in result.stderr.splitlines() if line.startswith("relex: error:")]
    assert errors[0] == (f"relex: error: {root / 'failing'}: scoring command failed with exit code 3; "
                         "its last line on stderr: 'RuntimeError: CUDA out of memory'")
    assert errors[1] == (f"relex: error: {root / 'hanging'}: scoring command timed out after 3 s; "
                         "its last line on stderr: 'started'")
    assert errors[2] == (f"relex: error: {root / 'garbage'}: the scoring command's last line on stdout is not a "
                         "JSON object of metric -> number nor a number: 'accuracy: great'; its last line on "
                         "stderr: 'done'")
    assert errors[3] == ("relex: error: 3 of 5 folder(s) could not be scored (errors above); "
                         "the others' scores are kept")
    assert has_ended(int((tmp_path / "hanging.pid").read_text()))  # the timed-out script was ended


@pytest.mark.parametrize("line, expected", [
    ('{"accuracy": 0.5, "n": 40}', [("accuracy", 0.5, None), ("n", 40.0, None)]),
    ("0.25", [("score", 0.25, None)]),
    ("3", [("score", 3.0, None)]),
])
def test_a_last_line_is_a_json_object_of_numbers_or_a_bare_number(line, expected):
    assert [tuple(metric) for metric in parse_score_line(line, "ckpt")] == expected


@pytest.mark.parametrize("line", ["", "true", "NaN", '"0.5"', "[0.5]", "{}", '{"accuracy": "high"}',
                                  '{"accuracy": true}', "0.5 0.6"])
def test_anything_else_is_an_error_naming_the_folder(line):
    with pytest.raises(RelexError, match="ckpt: the scoring command's last line"):
        parse_score_line(line, "ckpt")


def test_a_command_without_the_path_placeholder_is_refused():
    with pytest.raises(RelexError, match=r"must contain \{path\}"):
        CommandScorer("python eval.py")
