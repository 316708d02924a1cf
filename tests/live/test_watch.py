"""`relex watch` against a real writer process that replays the sample run the way a trainer writes it.

The writer (tests/live/replay.py) creates each checkpoint in place, writes its safetensors in pieces,
then the config, then trainer_state.json last, and pauses between checkpoints; with --keep it deletes
the oldest checkpoint as a new one starts. The watcher is the real command in its own process.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from relex_core import compute_gram, open_run

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RUN = REPO_ROOT / "sample_data" / "run"
COUNT = 7  # checkpoints after the base: steps 48 … 336
STEPS = [48 * index for index in range(1, COUNT + 1)]
ANALYZE_TABLES = ["tensors.csv", "layers.csv", "modules.csv", "model.csv", "coefficients.csv", "spectra.csv",
                  "stability.csv", "principal_angles.csv", "changed.csv", "discarded_energy.csv",
                  "discarded_energy_by_layer.csv", "discarded_energy_by_module.csv",
                  "discarded_energy_by_tensor.csv"]


def relex(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relex_core", *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, **kwargs)


def start_writer(destination: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.live.replay", str(SAMPLE_RUN), str(destination),
                             "--count", str(COUNT), "--pause", "0.6", *map(str, extra)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def watch_replay(tmp_path: Path, *watch_args, keep=None):
    """Replay into tmp_path/run while `relex watch --until-step LAST` follows it; (result, run, out, cache)."""
    run, out, cache = tmp_path / "run", tmp_path / "out", tmp_path / "cache"
    writer = start_writer(run, *(("--keep", keep) if keep else ()))
    try:
        result = relex("watch", run, "--out", out, "--cache-dir", cache, "--until-step", STEPS[-1], "--interval", 0.1,
                       "--quiet", *watch_args)
        writer_out, writer_err = writer.communicate(timeout=120)
    finally:
        stop(writer)
    assert writer.returncode == 0, writer_err
    return result, run, out, cache


def assert_tables_equal(out: Path, reference: Path, names) -> None:
    for name in names:
        pd.testing.assert_frame_equal(pd.read_csv(out / name), pd.read_csv(reference / name), check_exact=False,
                                      rtol=1e-9, atol=1e-12, obj=name)


def read_live(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "live.csv", dtype={"new_steps": str, "dropped_steps": str})


def taken_steps(live: pd.DataFrame) -> list[int]:
    return [int(step) for steps in live["new_steps"].astype(str) for step in steps.split(";")]


def test_watch_takes_every_checkpoint_once_and_ends_equal_to_a_one_shot_analyze(tmp_path):
    # Loose advice thresholds, so that the advice fires within this short replay.
    result, run, out, cache = watch_replay(tmp_path, "--change-tolerance", "50%", "--forecast-tolerance", "60%",
                                           "--settle-updates", 1)
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower() and "Traceback" not in result.stderr
    live = read_live(out)
    assert taken_steps(live) == STEPS  # every checkpoint exactly once, in order
    assert live["latest_step"].is_monotonic_increasing and live["latest_step"].iloc[-1] == STEPS[-1]
    updates = [line for line in result.stdout.splitlines() if line.startswith("took step(s)")]
    assert len(live) == len(updates) >= 2  # one row per update, and the watcher did follow the run
    assert np.isnan(live["prediction_change"].iloc[0]) and np.isfinite(live["prediction_change"].iloc[-1])
    assert result.stdout.count("has settled at step") == 1  # said once, marked once
    settled = live[live["advice"] == "settled"]
    assert len(settled) == 1 and f"has settled at step {settled['latest_step'].iloc[0]}:" in result.stdout
    assert result.stdout.startswith("advice rule: RL could stop once the prediction")

    reference = tmp_path / "reference"
    one_shot = relex("analyze", run, "--out", reference, "--cache-dir", tmp_path / "fresh-cache", "--no-cache",
                     "--quiet")
    assert one_shot.returncode == 0, one_shot.stderr
    assert_tables_equal(out, reference, ANALYZE_TABLES)
    backtest = relex("backtest", run, "--window", f"48:{STEPS[-3]}", "--out", tmp_path / "backtest", "--quiet",
                     "--cache-dir", cache)
    assert backtest.returncode == 0, backtest.stderr
    ours = pd.read_csv(out / "backtest.csv")
    ours = ours[ours["window_end"] == STEPS[-3]].drop(columns="window_end").reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, pd.read_csv(tmp_path / "backtest" / "backtest.csv"), rtol=1e-9)

    # The grown Gram was saved under the key a one-shot pass gets: a later analysis is a cache hit, and equal.
    cached = compute_gram(open_run(run), cache_dir=cache, progress=False)
    fresh = compute_gram(open_run(run), cache_dir=tmp_path / "fresh-cache", use_cache=False, progress=False)
    assert cached.from_cache
    np.testing.assert_allclose(cached.gram, fresh.gram, rtol=1e-12, atol=1e-15 * np.abs(fresh.gram).max())
    np.testing.assert_array_equal(cached.changed, fresh.changed)


@pytest.mark.parametrize("retain", [True, False], ids=["retain", "no-retain"])
def test_watch_of_a_rotating_run(tmp_path, retain):
    keep = 3
    result, run, out, cache = watch_replay(tmp_path, *(["--retain", "--export-latest", "--target", 480]
                                                      if retain else ["--export-latest", "--target", 480]), keep=keep)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("warning: the run now holds") == 1  # the shrinking run is said once
    live = read_live(out)
    present = sorted(checkpoint.step for checkpoint in open_run(run).checkpoints)
    assert present == STEPS[-keep:]
    manifest = pd.read_csv(out / "checkpoints.csv")
    reference = tmp_path / "reference"
    if retain:
        # Every checkpoint was analysed once and stays in the analysis; the manifest points at the retained
        # copies of the deleted ones, and a one-shot analysis of it equals the watcher's tables.
        assert taken_steps(live) == STEPS
        assert manifest["step"].tolist() == [0, *STEPS]
        assert live["dropped_steps"].isna().all()
        for step, path in zip(manifest["step"], manifest["path"]):
            assert Path(path).exists()
            assert (step in present or step == 0) == Path(path).is_relative_to(run.resolve())
        one_shot = relex("analyze", out / "checkpoints.csv", "--out", reference, "--no-cache", "--quiet",
                         "--cache-dir", tmp_path / "fresh-cache")
        # The export of the last window, from the retained copies, is `relex extrapolate`'s of the same checkpoints.
        exported = relex("extrapolate", out / "checkpoints.csv", "--window", f"48:{STEPS[-1]}", "--target", 480,
                         "--out", tmp_path / "extrapolated", "--quiet", "--cache-dir", tmp_path / "fresh-cache")
        assert exported.returncode == 0, exported.stderr
        ours, theirs = (load_file(folder / "model.safetensors") for folder in (out / "predicted-480",
                                                                               tmp_path / "extrapolated"))
        assert ours.keys() == theirs.keys()
        for name in ours:  # the same weights up to a last-bit rounding flip where the fits differ by 1e-16
            torch.testing.assert_close(ours[name].float(), theirs[name].float(), rtol=2**-7, atol=1e-6)
    else:
        # Deleted checkpoints leave the analysis when the next one arrives (their products with it cannot be
        # computed): at the end the analysis is the folder's, and a one-shot analysis of the folder equals it.
        assert manifest["step"].tolist() == [0, *present]
        dropped = [int(step) for steps in live["dropped_steps"].dropna().astype(str) for step in steps.split(";")]
        assert dropped and sorted(dropped) == sorted(set(taken_steps(live)) - set(present))
        assert "leave the analysis" in result.stderr
        one_shot = relex("analyze", run, "--out", reference, "--no-cache", "--quiet",
                         "--cache-dir", tmp_path / "fresh-cache")
        assert (out / "predicted-480" / "model.safetensors").is_file()
    assert one_shot.returncode == 0, one_shot.stderr
    assert_tables_equal(out, reference, ANALYZE_TABLES)
    assert not list(out.glob(".*"))  # no staged table or export left behind
    # The folder's own Gram is in the cache too: `relex analyze RUN` afterwards is a cache hit.
    assert compute_gram(open_run(run), cache_dir=cache, progress=False).from_cache


def test_ctrl_c_leaves_complete_outputs(tmp_path):
    run, out, cache = tmp_path / "run", tmp_path / "out", tmp_path / "cache"
    writer = start_writer(run)
    try:
        watcher = subprocess.Popen([sys.executable, "-m", "relex_core", "watch", str(run), "--out", str(out),
                                    "--cache-dir", str(cache), "--target", "480", "--interval", "0.1", "--quiet"],
                                   cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (out / "live.csv").is_file() or len(pd.read_csv(out / "live.csv")) < 2:
            assert watcher.poll() is None and time.monotonic() < deadline, watcher.communicate()
            time.sleep(0.05)
        os.kill(watcher.pid, signal.SIGINT)
        _, stderr = watcher.communicate(timeout=60)
    finally:
        stop(writer)
        if watcher.poll() is None:
            os.kill(watcher.pid, signal.SIGKILL)
    assert watcher.returncode == 130, stderr
    assert "Traceback" not in stderr
    live = read_live(out)
    latest = int(live["latest_step"].iloc[-1])
    tensors = pd.read_csv(out / "tensors.csv")
    assert len(tensors) > 0 and set(ANALYZE_TABLES) <= {path.name for path in out.iterdir()}
    manifest = pd.read_csv(out / "checkpoints.csv")
    assert manifest["step"].iloc[-1] == latest  # the tables and live.csv are of the same update
    assert not list(out.glob(".*"))


def test_evaluate_scores_the_latest_checkpoint_and_the_prediction_at_every_update(tmp_path):
    result, run, out, _ = watch_replay(tmp_path, "--target", 480, "--evaluate", "--sample", "--limit", 10,
                                       "--advice-from-scores")
    assert result.returncode == 0, result.stderr
    assert "exported prediction's score" in result.stdout  # the rule that applies is the one stated
    live = read_live(out)
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 2 * len(live)  # the latest real checkpoint and DIR/predicted-480, each update
    latest = scores[scores["kind"] == "checkpoint"].reset_index(drop=True)
    predicted = scores[scores["kind"] != "checkpoint"].reset_index(drop=True)
    assert latest["step"].tolist() == live["latest_step"].tolist()
    assert (predicted["path"] == str((out / "predicted-480").resolve())).all()
    assert (predicted["window"] == [f"48:{step}" for step in live["latest_step"]]).all()
    np.testing.assert_allclose(live["latest_score"], latest["value"])
    np.testing.assert_allclose(live["predicted_score"], predicted["value"])
