"""Only finished checkpoints are read: each format's own marker says when a save is done.

An unfinished newest checkpoint (the trainer may be writing it now) is left out with a note; an
unfinished one before finished ones is an error naming it. The live mode calls
`checkpoint_is_complete` / `incomplete_reason` on every poll.
"""

import json
import os
import shutil

import pytest
import torch

from relex_core import RelexError, open_run
from relex_core.io.discover import checkpoint_is_complete, incomplete_reason
from relex_core.synthetic import make_run
from tests.io.conftest import copy_run

STEPS = (10, 20, 30)


@pytest.fixture
def hf_run(tmp_path):
    return make_run(tmp_path / "run", steps=STEPS, dtype=torch.float32)


def truncate(file, keep=0.5):
    os.truncate(file, int(file.stat().st_size * keep))


# ---------------------------------------------------------------- HF / TRL

def test_hf_newest_checkpoint_without_trainer_state_is_skipped_with_a_note(hf_run):
    (hf_run / "checkpoint-30/trainer_state.json").unlink()  # written after the weights: the save is under way
    assert incomplete_reason(hf_run / "checkpoint-30") == "no trainer_state.json yet: still being saved"
    run = open_run(hf_run)
    assert run.steps == [10, 20]
    assert run.notes == ["skipped checkpoint-30: no trainer_state.json yet: still being saved"]


def test_hf_unfinished_checkpoint_before_finished_ones_is_an_error_naming_it(hf_run):
    (hf_run / "checkpoint-20/trainer_state.json").unlink()
    with pytest.raises(RelexError, match="checkpoint-20: unfinished checkpoint before finished ones"):
        open_run(hf_run)


def test_hf_run_without_trainer_state_uses_the_safetensors_sizes(hf_run):
    for step in (0, *STEPS):
        (hf_run / f"checkpoint-{step}/trainer_state.json").unlink()
    assert checkpoint_is_complete(hf_run / "checkpoint-30")
    truncate(hf_run / "checkpoint-30/model.safetensors")
    assert "model.safetensors has" in incomplete_reason(hf_run / "checkpoint-30")
    run = open_run(hf_run)
    assert run.steps == [10, 20] and "skipped checkpoint-30" in run.notes[0]
    truncate(hf_run / "checkpoint-10/model.safetensors")
    with pytest.raises(RelexError, match="checkpoint-10: unfinished checkpoint before finished ones"):
        open_run(hf_run)


def test_a_newest_checkpoint_folder_without_weights_yet_is_skipped(hf_run):
    (hf_run / "checkpoint-40").mkdir()
    run = open_run(hf_run)
    assert run.steps == list(STEPS) and run.notes == ["skipped checkpoint-40: holds no model weights yet"]


# ---------------------------------------------------------------- verl

def test_verl_checkpoints_after_the_tracker_are_skipped(native, tmp_path):
    run = copy_run(native, "verl", tmp_path)
    shutil.copytree(run / "global_step_6", run / "global_step_8")  # a save in progress: tracker still says 6
    (run / "global_step_8/actor/model_world_size_3_rank_2.pt").unlink()
    assert incomplete_reason(run / "global_step_8") == "step 8 is after latest_checkpointed_iteration.txt (6): " \
                                                      "still being saved"
    opened = open_run(run, base=tmp_path / "base")
    assert opened.steps == [2, 4, 6] and any(note.startswith("skipped global_step_8") for note in opened.notes)
    (run / "latest_checkpointed_iteration.txt").write_text("4")  # every save after the tracker is left out
    opened = open_run(run, base=tmp_path / "base")
    assert opened.steps == [2, 4] and [note.split(":")[0] for note in opened.notes if note.startswith("skipped")] == \
        ["skipped global_step_6", "skipped global_step_8"]


def test_verl_without_a_tracker_needs_every_rank_file_whole(native, tmp_path):
    """async saves write no latest_checkpointed_iteration.txt: then every rank file of the world size must be whole."""
    run = copy_run(native, "verl", tmp_path)
    (run / "latest_checkpointed_iteration.txt").unlink()
    assert checkpoint_is_complete(run / "global_step_6")
    truncate(run / "global_step_6/actor/model_world_size_3_rank_1.pt", 0.9)
    assert incomplete_reason(run / "global_step_6") == "model_world_size_3_rank_1.pt is not whole yet: " \
                                                      "still being written?"
    assert open_run(run, base=tmp_path / "base").steps == [2, 4]
    (run / "global_step_6/actor/model_world_size_3_rank_1.pt").unlink()
    assert "rank file missing" in incomplete_reason(run / "global_step_6")


# ---------------------------------------------------------------- DCP

def test_dcp_without_metadata_is_unfinished(native, tmp_path):
    run = copy_run(native, "titan", tmp_path)
    (run / "step-6/.metadata").unlink()  # .metadata is written last
    assert incomplete_reason(run / "step-6") == "DCP folder has no .metadata yet: still being saved"
    opened = open_run(run)
    assert opened.steps == [2, 4] and opened.notes[-1].startswith("skipped step-6")
    (run / "step-2/.metadata").unlink()
    with pytest.raises(RelexError, match="step-2: unfinished checkpoint before finished ones"):
        open_run(run)


def test_accelerate_checkpoint_folders_are_judged_by_their_dcp_folder(native, tmp_path):
    run = copy_run(native, "accelerate", tmp_path)
    assert checkpoint_is_complete(run / "checkpoint-6")
    (run / "checkpoint-6/pytorch_model_fsdp_0/.metadata").unlink()
    assert not checkpoint_is_complete(run / "checkpoint-6")
    assert open_run(run).steps == [2, 4]


def test_the_live_mode_can_poll_a_growing_run(hf_run):
    """What a poller sees while checkpoint-40 is written: not complete until its marker lands."""
    source, target = hf_run / "checkpoint-30", hf_run / "checkpoint-40"
    target.mkdir()
    assert not checkpoint_is_complete(target)
    shutil.copy(source / "model.safetensors", target / "model.safetensors")
    assert not checkpoint_is_complete(target)
    (target / "trainer_state.json").write_text(json.dumps({"global_step": 40, "log_history": []}))
    assert checkpoint_is_complete(target)
    assert open_run(hf_run).steps == [10, 20, 30, 40]
