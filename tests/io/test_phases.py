"""A job resumed into a new output folder is one run over several folders, in order."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from relex_core import RelexError, compute_gram, open_run
from relex_core.cli import main
from relex_core.synthetic import make_run

STEPS = (10, 20, 30, 40)


@pytest.fixture
def phases(tmp_path):
    """One synthetic run, and the same checkpoints split into two folders (steps 0–20, then 30–40)."""
    whole = make_run(tmp_path / "whole", steps=STEPS, dtype=torch.float32)
    first, second = tmp_path / "phase1", tmp_path / "phase2"
    for step in (0, *STEPS):
        shutil.copytree(whole / f"checkpoint-{step}", (first if step <= 20 else second) / f"checkpoint-{step}")
    return whole, first, second


def test_phases_give_the_run_of_one_folder(phases, tmp_path):
    whole, first, second = phases
    run = open_run([first, second])
    assert run.steps == list(STEPS) and run.sources == (first, second) and run.base.path == first / "checkpoint-0"
    assert run.notes == ["one run over 2 folders: steps 10–40"]
    expected = compute_gram(open_run(whole), cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(compute_gram(run, cache_dir=tmp_path / "cache", progress=False).gram, expected.gram)
    run.refuse_inside(tmp_path / "elsewhere", "output folder")
    with pytest.raises(RelexError, match="output folder must not be inside"):
        run.refuse_inside(second / "results", "output folder")


def test_every_command_takes_several_run_folders(phases, tmp_path, capsys):
    whole, first, second = phases
    for run_args, out in (([whole], tmp_path / "one"), ([first, second], tmp_path / "two")):
        assert main(["analyze", *map(str, run_args), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                     "--quiet"]) == 0
    assert "relex: note: one run over 2 folders" in capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "one/tensors.csv"), pd.read_csv(tmp_path / "two/tensors.csv"))
    assert main(["backtest", str(first), str(second), "--window", "10:20", "--out", str(tmp_path / "backtest"),
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0


def test_overlapping_phases_are_one_error_naming_both_folders(phases):
    whole, first, second = phases
    shutil.copytree(first / "checkpoint-20", second / "checkpoint-20")  # the resumed job saved step 20 again
    with pytest.raises(RelexError) as error:
        open_run([first, second])
    message = str(error.value)
    assert str(first) in message and str(second) in message and "overlap" in message
    with pytest.raises(RelexError, match="overlap"):
        open_run([second, first])  # given in the wrong order


def test_the_base_comes_from_the_first_folder_or_base(phases, tmp_path):
    whole, first, second = phases
    shutil.move(first / "checkpoint-0", tmp_path / "base")
    with pytest.raises(RelexError, match="--base"):
        open_run([first, second])
    run = open_run([first, second], base=tmp_path / "base")
    assert run.base.path == tmp_path / "base" and run.steps == list(STEPS)
