"""Logged scalars from trainer_state.json, verl's JSONL file logger and TensorBoard event files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from relex_core import RelexError, open_run
from relex_core.io.metrics import COLUMNS, jsonl_metrics, run_metrics, tensorboard_metrics, trainer_state_metrics
from relex_core.synthetic import make_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_folder(tmp_path):
    return make_run(tmp_path / "run", steps=(10, 20), dtype=torch.float32)


def write_jsonl(path: Path, rows) -> None:
    """verl's FileLogger format: one {"step": N, "data": {...}} object a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"step": step, "data": data}) + "\n" for step, data in rows))


def write_events(folder: Path, scalars) -> None:
    """Real TensorBoard event files, written by torch's SummaryWriter as verl's tensorboard logger does."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for step, values in scalars:
            for tag, value in values.items():
                writer.add_scalar(tag, value, step)
        writer.add_text("config", "lr=1e-6", 0)  # not a scalar: left out
        writer.add_scalars("response_length", {"mean": 100.0, "max": 300.0}, 1)


def records(frame):
    return sorted(map(tuple, frame[COLUMNS].itertuples(index=False)))


def test_trainer_state_log_history_keeps_numbers_with_a_step(run_folder):
    state = run_folder / "checkpoint-20/trainer_state.json"
    state.write_text(json.dumps({"global_step": 20, "log_history": [
        {"step": 10, "reward": 0.5, "epoch": 1.0, "done": True, "note": "x"}, {"loss": 1.0},
        {"step": 20, "reward": 0.75, "learning_rate": 1e-6}]}))
    expected = [(10, "reward", 0.5, "trainer_state"), (20, "learning_rate", 1e-6, "trainer_state"),
                (20, "reward", 0.75, "trainer_state")]
    assert records(trainer_state_metrics(state)) == expected
    assert records(run_metrics(open_run(run_folder))) == expected
    state.write_text("{broken")
    with pytest.raises(RelexError, match="trainer_state.json"):
        trainer_state_metrics(state)


def test_verl_jsonl_log(tmp_path):
    log = tmp_path / "logs/grpo/exp.jsonl"
    write_jsonl(log, [(1, {"critic/score/mean": 0.25, "actor/lr": 1e-6, "note": "text", "hist": [1, 2]}),
                      (2, {"critic/score/mean": 0.5})])
    assert records(jsonl_metrics(log)) == [(1, "actor/lr", 1e-6, "jsonl"), (1, "critic/score/mean", 0.25, "jsonl"),
                                           (2, "critic/score/mean", 0.5, "jsonl")]
    with open(log, "a") as file:
        file.write('{"step": 3, "data": {"critic/sc')  # the trainer is writing this line now
    assert len(jsonl_metrics(log)) == 3
    log.write_text('{"step": 1, "data": {}}\nnot json\n{"step": 2, "data": {}}\n')
    with pytest.raises(RelexError, match="exp.jsonl: line 2 is not JSON"):
        jsonl_metrics(log)
    log.write_text('{"step": 1, "values": {}}\n')
    with pytest.raises(RelexError, match="line 1 is not"):
        jsonl_metrics(log)


def test_tensorboard_events_written_by_summary_writer(tmp_path):
    pytest.importorskip("tensorboard")
    write_events(tmp_path / "tb", [(1, {"critic/score/mean": 0.25}), (2, {"critic/score/mean": 0.5})])
    main_file = next((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert records(tensorboard_metrics(main_file)) == [(1, "critic/score/mean", 0.25, "tensorboard"),
                                                       (2, "critic/score/mean", 0.5, "tensorboard")]
    found = run_metrics(None, metrics=tmp_path / "tb")
    assert records(found) == [(1, "critic/score/mean", 0.25, "tensorboard"),
                              (1, "response_length_max/response_length", 300.0, "tensorboard"),
                              (1, "response_length_mean/response_length", 100.0, "tensorboard"),
                              (2, "critic/score/mean", 0.5, "tensorboard")]


def test_run_metrics_gathers_every_log_under_the_run_folder(run_folder):
    pytest.importorskip("tensorboard")
    (run_folder / "checkpoint-20/trainer_state.json").write_text(json.dumps(
        {"global_step": 20, "log_history": [{"step": 20, "reward": 0.75}]}))
    write_jsonl(run_folder / "logs/exp.jsonl", [(20, {"critic/score/mean": 0.5})])
    write_events(run_folder / "tensorboard_log/proj/exp", [(20, {"critic/score/mean": 0.5})])
    frame = run_metrics(open_run(run_folder))
    assert list(frame.columns) == COLUMNS
    assert set(frame["source"]) == {"trainer_state", "jsonl", "tensorboard"}
    assert (20, "critic/score/mean", 0.5, "jsonl") in records(frame)
    assert (20, "critic/score/mean", 0.5, "tensorboard") in records(frame)
    assert frame.attrs["notes"] == []


def test_an_explicit_metrics_path_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(RelexError, match="no such metrics file or folder"):
        run_metrics(None, metrics=tmp_path / "nowhere")


def test_without_the_tensorboard_package_found_events_are_a_note_and_given_ones_an_error(tmp_path):
    pytest.importorskip("tensorboard")
    run = make_run(tmp_path / "run", steps=(10, 20), dtype=torch.float32)
    write_events(run / "tb", [(1, {"loss": 1.0})])
    script = f"""
import sys
sys.modules["tensorboard"] = None  # as if the optional extra were not installed
from relex_core import RelexError, open_run
from relex_core.io.metrics import run_metrics
frame = run_metrics(open_run({str(run)!r}))
print(frame.attrs["notes"])
try:
    run_metrics(None, metrics={str(run / "tb")!r})
except RelexError as error:
    print("error:", error)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    notes, error = result.stdout.strip().splitlines()
    assert "not read: the tensorboard package is not installed" in notes
    assert error.startswith("error:") and "needs the tensorboard package" in error
