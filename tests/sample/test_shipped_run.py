import json
from pathlib import Path

import torch
from safetensors import safe_open

RUN = Path(__file__).resolve().parents[2] / "sample_data" / "run"


def checkpoints():
    return sorted(RUN.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def step_of(folder: Path) -> int:
    return int(folder.name.split("-")[1])


def test_run_has_a_base_and_at_least_30_regularly_spaced_checkpoints():
    steps = [step_of(f) for f in checkpoints()]
    assert len(steps) >= 31 and steps[0] == 0
    assert len({b - a for a, b in zip(steps, steps[1:])}) == 1


def test_checkpoints_are_hf_folders_with_tied_bf16_weights():
    for folder in checkpoints():
        assert {"config.json", "generation_config.json", "trainer_state.json", "model.safetensors"} <= {
            p.name for p in folder.iterdir()}
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == "qwen2" and config["tie_word_embeddings"] is True
        with safe_open(folder / "model.safetensors", "pt") as f:
            assert f.metadata() == {"format": "pt"}
            assert "lm_head.weight" not in f.keys()  # tied: transformers does not save the head
            assert {f.get_tensor(name).dtype for name in f.keys()} == {torch.bfloat16}


def test_trainer_state_logs_rewards_up_to_its_own_step():
    folders = checkpoints()
    for folder in folders:
        state = json.loads((folder / "trainer_state.json").read_text())
        assert state["global_step"] == step_of(folder)
        assert [e["step"] for e in state["log_history"]] == [step_of(f) for f in folders if step_of(f) <= step_of(folder)]
        for entry in state["log_history"]:
            assert 0.0 <= entry["train_reward"] <= 1.0 and 0.0 <= entry["heldout_reward"] <= 1.0


def test_rl_raises_heldout_reward_by_at_least_ten_points():
    history = json.loads((checkpoints()[-1] / "trainer_state.json").read_text())["log_history"]
    assert 0.2 <= history[0]["heldout_reward"] <= 0.5  # the SFT base is only partly right
    assert history[-1]["heldout_reward"] - history[0]["heldout_reward"] >= 0.10


def test_whole_run_fits_in_30_mb():
    assert sum(p.stat().st_size for p in RUN.rglob("*") if p.is_file()) <= 30 * 1024 * 1024
