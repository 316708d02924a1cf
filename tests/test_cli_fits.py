"""`--fit`, `--fit-last` and `--refit-every` through the real `relex` command.

Parity: on a bf16 run with one checkpoint per step, where the official script's index axis is
the step axis shifted, relex's exports agree with what the official `svd_extrapolation.py`
computes (tests/official_reference.py): at least 99.9% of the elements identical, every one
within 1 ulp. Refusals: one line on stderr, exit code 2.

Commands run through `relex_core.cli.main`, the function `python -m relex_core` exits with,
in this process (a fresh interpreter per command would add seconds of imports each); one
refusal runs as a real subprocess, for the exit status a shell sees.
"""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from relex_core.cli import main
from relex_core.synthetic import make_run

from .official_reference import load_folder, official_extrapolation

REPO = Path(__file__).resolve().parents[1]
HISTORY = 16  # window 1:16 of 24 checkpoints, one per step


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def relex(capsys):
    """relex(*arguments, cache_dir=...) → Result, running the command line's main function."""
    def run(*arguments, cache_dir):
        capsys.readouterr()
        code = main([*map(str, arguments), "--cache-dir", str(cache_dir), "--quiet"])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)
    return run


@pytest.fixture(scope="module")
def per_step_run(tmp_path_factory):
    """bf16, steps 1…24: updates of a few ulps per step, so the exports are far from the base."""
    return make_run(tmp_path_factory.mktemp("parity") / "run", steps=tuple(range(1, 25)), dtype=torch.bfloat16,
                    relative_update=0.2, noise=0.3, seed=11)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def ordered_bits(values: torch.Tensor) -> np.ndarray:
    """bf16 bit patterns as integers that count ulps across zero: |a − b| is the distance in ulps."""
    bits = values.contiguous().view(torch.int16).numpy().astype(np.int64)
    return np.where(bits < 0, -32768 - bits, bits)


@pytest.mark.parametrize("flags, targets, reference", [
    (["--fit", "poly3"], [12, 20, 30], {"degree": 3}),
    (["--fit-last", "8", "--rank", "2"], [20, 30], {"window": 8, "rank": 2}),
    (["--refit-every", "4"], [18, 21, 30], {"refit_every": 4}),
])
def test_bf16_exports_agree_with_the_official_script(relex, per_step_run, cache_dir, tmp_path, flags, targets,
                                                      reference):
    out = tmp_path / "out"
    result = relex("extrapolate", per_step_run, "--window", f"1:{HISTORY}", "--target", ",".join(map(str, targets)),
                   "--out", out, *flags, cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    expected = official_extrapolation(per_step_run, HISTORY, targets, **reference)
    base = load_folder(per_step_run / "checkpoint-0")
    for step in targets:
        exported = load_folder(out / f"step-{step}")
        distances = np.concatenate([np.abs(ordered_bits(exported[name]) - ordered_bits(expected[step][name])).ravel()
                                    for name in expected[step]])
        moved = np.concatenate([(exported[name] != base[name]).numpy().ravel() for name in base])
        assert moved.mean() > 0.5  # the export is not the base: the comparison has something to compare
        assert distances.max() <= 1, f"step {step}: {distances.max()} ulps"
        assert (distances == 0).mean() >= 0.999, f"step {step}: {(distances == 0).mean():.5f} identical"
        provenance = json.loads((out / f"step-{step}" / "relex.json").read_text())
        assert (provenance["fit"], provenance["fit_last"], provenance["refit_every"]) == (
            "poly3" if "poly3" in flags else "linear", reference.get("window"), reference.get("refit_every"))


def test_backtest_and_analyze_take_the_fit_options(relex, per_step_run, cache_dir, tmp_path):
    result = relex("backtest", per_step_run, "--window", "1:16", "--fit", "poly2", "--fit-last", "8",
                   "--out", tmp_path / "backtest", cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    assert "r2" in result.stdout and "after it" in result.stdout
    energy = pd.read_csv(tmp_path / "backtest/discarded_energy.csv")
    assert list(energy.columns) == ["step", "part", "update_sq", "discarded_sq", "discarded_share", "relex_error_sq",
                                    "relex_error_inside_sq", "last_error_sq", "last_error_inside_sq",
                                    "last_error_outside_sq"]
    backtest = pd.read_csv(tmp_path / "backtest/backtest.csv")
    relex_rows = backtest[backtest.method == "relex"].set_index("target_step")
    after = energy[energy.part == "after"].set_index("step")
    np.testing.assert_allclose(np.sqrt(after.relex_error_sq / after.update_sq), relex_rows.rel_error, rtol=1e-9)
    result = relex("analyze", per_step_run, "--window", "1:16", "--rank", "2", "--refit-every", "2",
                   "--out", tmp_path / "analyze", cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    tensors = pd.read_csv(tmp_path / "analyze/tensors.csv")
    assert {"r2", "r2_after_window", "r2_after_window_rank_k"} <= set(tensors.columns)
    stability = pd.read_csv(tmp_path / "analyze/stability.csv")
    assert {"principal_cosine_1", "principal_cosine_2", "principal_cosine_min"} <= set(stability.columns)
    for name in ("principal_angles.csv", "discarded_energy_by_module.csv", "discarded_energy_by_tensor.csv"):
        assert (tmp_path / "analyze" / name).stat().st_size > 0


@pytest.fixture(scope="module")
def uneven_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("uneven") / "run", steps=(10, 20, 30, 45, 60), dtype=torch.bfloat16,
                    relative_update=1e-2)


@pytest.mark.parametrize("case, arguments, message", [
    ("uneven", ["--window", "10:60", "--refit-every", "2", "--target", "80"], "evenly spaced"),
    ("even", ["--window", "1:16", "--fit-last", "17", "--target", "20"], "fit_last 17 is larger than the window"),
    ("even", ["--window", "1:16", "--fit", "cubic", "--target", "20"], "must be linear, polyD"),
])
def test_fit_options_that_cannot_work_are_one_line_errors_with_exit_2(relex, per_step_run, uneven_run, cache_dir,
                                                                       tmp_path, case, arguments, message):
    run = uneven_run if case == "uneven" else per_step_run
    result = relex("extrapolate", run, "--out", tmp_path / "out", *arguments, cache_dir=cache_dir)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_target_off_the_grid_of_refit_every_is_refused(tmp_path_factory, cache_dir, tmp_path):
    run = make_run(tmp_path_factory.mktemp("grid") / "run", steps=(10, 20, 30, 40, 50), dtype=torch.bfloat16,
                   relative_update=1e-2)
    result = subprocess.run([sys.executable, "-m", "relex_core", "extrapolate", str(run), "--window", "10:50",
                             "--refit-every", "2", "--target", "60,75", "--out", str(tmp_path / "out"),
                             "--cache-dir", str(cache_dir), "--quiet"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "target step 75 is not on the window's grid" in result.stderr
    assert not (tmp_path / "out").exists()
