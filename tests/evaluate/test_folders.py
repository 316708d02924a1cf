"""What a folder to score stands for: its kind and step, read from relex.json, trainer_state.json or its name."""

import json

import pytest

from relex_core.errors import RelexError
from relex_core.evaluate import describe_folder, expand_paths


def weights_folder(path, **json_files):
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    for name, content in json_files.items():
        (path / f"{name}.json").write_text(json.dumps(content))
    return path


def test_a_checkpoint_is_at_its_trainer_state_step_else_at_the_step_in_its_name(tmp_path):
    recorded = describe_folder(weights_folder(tmp_path / "checkpoint-48", trainer_state={"global_step": 48}))
    assert (recorded.kind, recorded.step, recorded.window, recorded.target_step) == ("checkpoint", 48, None, None)
    for name, step in [("checkpoint-96", 96), ("global_step_12", 12), ("global_step7_hf", 7), ("step_5", 5),
                       ("step-640", 640), ("final", None)]:
        assert describe_folder(weights_folder(tmp_path / name)).step == step
    verl = weights_folder(tmp_path / "global_step_30" / "actor" / "huggingface")
    assert describe_folder(verl).step == 30


def test_an_export_is_of_its_method_at_its_target_step_with_its_window(tmp_path):
    for method in ("relex", "linear", "reconstruct"):
        folder = describe_folder(weights_folder(tmp_path / method, relex={
            "window_steps": [48, 96, 144], "target_step": 1440, "method": method}))
        assert (folder.kind, folder.step, folder.window, folder.target_step) == (method, 1440, "48:144", 1440)


def test_a_broken_relex_json_is_an_error_naming_it(tmp_path):
    folder = weights_folder(tmp_path / "export", relex={"target_step": 10})
    with pytest.raises(RelexError, match="relex.json lacks"):
        describe_folder(folder)
    (folder / "relex.json").write_text("{not json")
    with pytest.raises(RelexError, match="relex.json: unreadable JSON"):
        describe_folder(folder)


def test_a_folder_without_weights_stands_for_its_sub_folders_that_have_them_in_step_order(tmp_path):
    run = tmp_path / "run"
    for step in (100, 20, 3):
        weights_folder(run / f"checkpoint-{step}")
    (run / "logs").mkdir()
    single = weights_folder(tmp_path / "single")
    assert expand_paths([single, run]) == [single] + [run / f"checkpoint-{step}" for step in (3, 20, 100)]


def test_missing_paths_and_folders_without_weights_are_errors_naming_them(tmp_path):
    with pytest.raises(RelexError, match="no such checkpoint folder"):
        expand_paths([tmp_path / "missing"])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(RelexError, match=f"{tmp_path / 'empty'}: folder holds no model weights"):
        expand_paths([tmp_path / "empty"])
