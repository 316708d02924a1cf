"""scores.csv: appended one folder at a time, whole lines only, keyed by scorer and fingerprint."""

import csv
import os

import pytest

from relex_core.errors import RelexError
from relex_core.evaluate import COLUMNS, Folder, ScoresFile, fingerprint, read_scores
from relex_core.evaluate.scores import score_rows


def test_the_fingerprint_follows_the_weight_files_name_size_and_mtime_only(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"1234")
    first = fingerprint(tmp_path)
    (tmp_path / "README.md").write_text("not weights")
    assert fingerprint(tmp_path) == first
    os.utime(tmp_path / "model.safetensors", ns=(0, 10**18))
    touched = fingerprint(tmp_path)
    assert touched != first
    (tmp_path / "model.safetensors").write_bytes(b"12345")
    os.utime(tmp_path / "model.safetensors", ns=(0, 10**18))
    assert fingerprint(tmp_path) != touched
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"")
    assert fingerprint(tmp_path) not in (first, touched)


def rows(path, metrics, scorer="sample", step=10, fingerprint="f" * 16):
    return score_rows(Folder(path, "checkpoint", step), scorer, metrics, 1.23456, fingerprint)


def test_rows_append_under_one_header_and_read_back_with_their_types(tmp_path):
    table = ScoresFile(tmp_path / "out" / "scores.csv")
    table.append(rows("/runs/a", [("accuracy", 0.5, 0.1)]))
    table.append(rows("/runs/b, with a comma", [("x", 1.0, None), ("y", 1 / 3, None)], step=None))
    lines = (tmp_path / "out" / "scores.csv").read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 4
    frame = read_scores(tmp_path / "out" / "scores.csv")
    assert list(frame.columns) == list(COLUMNS)
    assert frame.path.tolist() == ["/runs/a", "/runs/b, with a comma", "/runs/b, with a comma"]
    assert frame.value.tolist() == [0.5, 1.0, 1 / 3]  # floats in full precision
    assert frame.stderr.iloc[0] == 0.1 and frame.stderr.iloc[1:].isna().all()
    assert frame.step.iloc[0] == 10 and frame.step.isna().iloc[1] and frame.seconds.iloc[0] == 1.235
    assert ScoresFile(tmp_path / "out" / "scores.csv").is_scored("/runs/a", "sample", "f" * 16)
    assert not ScoresFile(tmp_path / "out" / "scores.csv").is_scored("/runs/a", "sample", "0" * 16)


def test_reading_keeps_the_latest_row_of_each_folder_scorer_and_metric(tmp_path):
    table = ScoresFile(tmp_path / "scores.csv")
    table.append(rows("/runs/a", [("accuracy", 0.5, None)]))
    table.append(rows("/runs/a", [("accuracy", 0.75, None)], fingerprint="e" * 16))
    table.append(rows("/runs/a", [("accuracy", 0.25, None)], scorer="other"))
    assert read_scores(tmp_path / "scores.csv").value.tolist() == [0.75, 0.25]
    assert read_scores(tmp_path / "scores.csv", latest=False).value.tolist() == [0.5, 0.75, 0.25]


def test_a_foreign_csv_or_a_cut_short_last_line_is_refused_naming_the_file(tmp_path):
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(RelexError, match=f"{foreign}: not a relex scores file"):
        ScoresFile(foreign)
    cut = tmp_path / "cut.csv"
    ScoresFile(cut).append(rows("/runs/a", [("accuracy", 0.5, None)]))
    cut.write_text(cut.read_text() + "/runs/b,10,checkpo")
    with pytest.raises(RelexError, match="cut short"):
        ScoresFile(cut)
    with open(cut) as handle:  # what was there before stays readable
        assert len(list(csv.reader(handle))) == 3
