import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from relex_core.sample.verifier import evaluate_checkpoint, evaluate_checkpoints

RUN = Path(__file__).resolve().parents[2] / "sample_data" / "run"


def checkpoints():
    return sorted(RUN.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def recorded_heldout_reward(folder: Path) -> float:
    state = json.loads((folder / "trainer_state.json").read_text())
    (entry,) = [e for e in state["log_history"] if e["step"] == state["global_step"]]
    return entry["heldout_reward"]


def copy_checkpoint(src: Path, dst: Path, tensors: dict) -> Path:
    """A checkpoint folder with src's config and the given tensors."""
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_verifier_reproduces_recorded_heldout_reward():
    folders = checkpoints()
    first, middle, last = folders[0], folders[len(folders) // 2], folders[-1]
    results = evaluate_checkpoints([first, middle, last])
    for folder, result in zip([first, middle, last], results):
        assert result["path"] == str(folder)
        assert result["n_problems"] == 1000
        assert result["accuracy"] == recorded_heldout_reward(folder)


def test_randomised_weights_score_about_zero(tmp_path):
    base = checkpoints()[0]
    gen = torch.Generator().manual_seed(0)
    random = {name: torch.randn(t.shape, generator=gen).to(t.dtype) for name, t in load_file(base / "model.safetensors").items()}
    assert evaluate_checkpoint(copy_checkpoint(base, tmp_path / "random", random))["accuracy"] < 0.05


def test_sharded_mixed_dtype_checkpoint_scores_like_the_original(tmp_path):
    # Another tool may write shards, fp32 tensors, and an explicit lm_head next to tied embeddings.
    base = checkpoints()[0]
    tensors = load_file(base / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    folder = tmp_path / "sharded"
    folder.mkdir()
    shutil.copy(base / "config.json", folder / "config.json")
    save_file({n: tensors[n].float() for n in names[:half]}, folder / "model-00001-of-00002.safetensors")
    lm_head = {"lm_head.weight": tensors["model.embed_tokens.weight"].clone()}
    save_file({**{n: tensors[n] for n in names[half:]}, **lm_head}, folder / "model-00002-of-00002.safetensors")
    weight_map = {n: "model-00001-of-00002.safetensors" for n in names[:half]}
    weight_map |= {n: "model-00002-of-00002.safetensors" for n in [*names[half:], "lm_head.weight"]}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    n = 200
    assert evaluate_checkpoint(folder, n_problems=n)["accuracy"] == evaluate_checkpoint(base, n_problems=n)["accuracy"]


def test_folder_without_config_is_rejected_naming_the_folder(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)):
        evaluate_checkpoint(tmp_path)


def test_tensor_of_wrong_shape_is_rejected_naming_the_folder(tmp_path):
    base = checkpoints()[0]
    tensors = load_file(base / "model.safetensors")
    tensors["model.norm.weight"] = torch.ones(7, dtype=torch.bfloat16)
    folder = copy_checkpoint(base, tmp_path / "bad", tensors)
    with pytest.raises(ValueError, match="bad.*model.norm.weight"):
        evaluate_checkpoint(folder)


def test_qwen2_with_another_vocabulary_is_rejected(tmp_path):
    base = checkpoints()[0]
    config = json.loads((base / "config.json").read_text())
    config["vocab_size"] += 1
    tensors = load_file(base / "model.safetensors")
    tensors["model.embed_tokens.weight"] = torch.zeros(config["vocab_size"], config["hidden_size"], dtype=torch.bfloat16)
    folder = copy_checkpoint(base, tmp_path / "other_vocab", tensors)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="vocab_size"):
        evaluate_checkpoint(folder)
