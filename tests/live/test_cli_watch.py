"""`relex watch` refuses bad input in one line with exit code 2, and waits for a run that is still starting."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from relex_core.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RUN = REPO_ROOT / "sample_data" / "run"


@pytest.mark.parametrize("arguments, message", [
    (["--max-updates", "1"], "give the step to predict with --target S"),
    (["--target", "500", "--sample"], "score only with --evaluate"),
    (["--target", "500", "--evaluate"], "--evaluate needs a scorer"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, arguments, message):
    code = main(["watch", str(SAMPLE_RUN), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"),
                 *arguments])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("relex: error:") and message in error and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_an_output_folder_inside_the_run_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(SAMPLE_RUN / "checkpoint-0", run / "checkpoint-0")
    code = main(["watch", str(run), "--out", str(run / "live"), "--target", "500", "--cache-dir", str(tmp_path / "c")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "must not be inside the run" in error
    assert sorted(path.name for path in run.iterdir()) == ["checkpoint-0"]  # the run is never written to


def test_a_run_with_only_its_base_is_waited_for_until_checkpoints_finish(tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    shutil.copytree(SAMPLE_RUN / "checkpoint-0", run / "checkpoint-0")
    watcher = subprocess.Popen([sys.executable, "-m", "relex_core", "watch", str(run), "--out", str(out), "--target",
                                "500", "--max-updates", "1", "--interval", "0.1", "--quiet", "--cache-dir",
                                str(tmp_path / "cache")], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        first_lines = [watcher.stdout.readline(), watcher.stdout.readline()]  # the rule, then the first poll's word
        time.sleep(1)  # ten more polls
        assert watcher.poll() is None and not out.exists()  # still waiting, nothing written
        for step in (48, 96):
            shutil.copytree(SAMPLE_RUN / f"checkpoint-{step}", run / f"checkpoint-{step}")
        stdout, stderr = watcher.communicate(timeout=120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, stderr
    assert first_lines[0].startswith("advice rule:") and first_lines[1].startswith("waiting for the run")
    assert pd.read_csv(out / "live.csv")["latest_step"].tolist() == [96]
