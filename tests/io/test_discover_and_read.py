"""Every run layout and weight format relex reads gives the same Gram as the plain HF layout."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from relex_core import RelexError, compute_gram, open_run
from relex_core.io.names import layer_and_module
from relex_core.io.reader import CheckpointReader
from relex_core.synthetic import make_run

STEPS = (10, 20, 30)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A plain HF run (single model.safetensors per checkpoint) and its Gram."""
    folder = tmp_path_factory.mktemp("reference")
    run_folder = make_run(folder / "run", steps=STEPS, dtype=torch.float32)
    return run_folder, compute_gram(open_run(run_folder), cache_dir=folder / "cache", progress=False)


def relayout(reference_run, destination, name_of_step, inner="", convert=None):
    """Copy each checkpoint of the reference run into destination/<name_of_step(step)>/<inner>."""
    for step in (0, *STEPS):
        target = destination / name_of_step(step) / inner
        target.mkdir(parents=True)
        source = reference_run / f"checkpoint-{step}"
        if convert is None:
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            convert(source, target)
    return destination


def gram_of(folder, tmp_path, **kwargs):
    return compute_gram(open_run(folder, **kwargs), cache_dir=tmp_path / "cache", progress=False)


@pytest.mark.parametrize("name_of_step, inner", [
    (lambda step: f"global_step_{step}", ""),                       # verl, merged weights
    (lambda step: f"global_step_{step}", "actor/huggingface"),      # verl, HF export inside the actor
    (lambda step: f"global_step{step}_hf", ""),                     # OpenRLHF
    (lambda step: f"step_{step}", ""),
    (lambda step: f"step-{step}", ""),
], ids=["verl", "verl-actor-huggingface", "openrlhf", "step_N", "step-N"])
def test_trainer_folder_layouts_are_discovered(reference, tmp_path, name_of_step, inner):
    run_folder, expected = reference
    relayout(run_folder, tmp_path / "run", name_of_step, inner)
    run_gram = gram_of(tmp_path / "run", tmp_path)
    assert list(run_gram.steps) == list(STEPS)
    np.testing.assert_array_equal(run_gram.gram, expected.gram)


def to_sharded_safetensors(source, target):
    from relex_core.io.writer import save_state_dict
    save_state_dict(load_file(source / "model.safetensors"), target, shard_size=10_000)
    shutil.copy(source / "config.json", target)


def to_bin(source, target):
    torch.save(load_file(source / "model.safetensors"), target / "pytorch_model.bin")
    shutil.copy(source / "config.json", target)


def to_pt(source, target):
    torch.save(load_file(source / "model.safetensors"), target / "weights.pt")


@pytest.mark.parametrize("convert", [to_sharded_safetensors, to_bin, to_pt], ids=["sharded-index", "bin", "pt"])
def test_weight_formats_give_the_same_gram(reference, tmp_path, convert):
    run_folder, expected = reference
    relayout(run_folder, tmp_path / "run", lambda step: f"checkpoint-{step}", convert=convert)
    if convert is to_sharded_safetensors:
        assert (tmp_path / "run/checkpoint-10/model.safetensors.index.json").is_file()
    run_gram = gram_of(tmp_path / "run", tmp_path)
    assert sorted(run_gram.names) == sorted(expected.names)
    for name, gram in zip(run_gram.names, run_gram.gram):
        np.testing.assert_array_equal(gram, expected.gram[expected.names.index(name)])


@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_manifest_lists_steps_and_paths(reference, tmp_path, suffix):
    run_folder, expected = reference
    rows = [(step, str(run_folder / f"checkpoint-{step}")) for step in (0, *STEPS)]
    manifest = tmp_path / f"manifest.{suffix}"
    if suffix == "csv":
        manifest.write_text("step,path\n" + "".join(f"{step},{path}\n" for step, path in rows))
    else:
        manifest.write_text(json.dumps([{"step": step, "path": path} for step, path in rows]))
    np.testing.assert_array_equal(gram_of(manifest, tmp_path).gram, expected.gram)


def test_explicit_base_replaces_the_step_zero_checkpoint(reference, tmp_path):
    run_folder, expected = reference
    relayout(run_folder, tmp_path / "run", lambda step: f"checkpoint-{step}")
    shutil.move(tmp_path / "run/checkpoint-0", tmp_path / "base")
    with pytest.raises(RelexError, match="--base"):
        open_run(tmp_path / "run")
    np.testing.assert_array_equal(gram_of(tmp_path / "run", tmp_path, base=tmp_path / "base").gram, expected.gram)


def test_step_is_cross_checked_with_trainer_state(reference, tmp_path):
    run_folder, _ = reference
    relayout(run_folder, tmp_path / "run", lambda step: f"checkpoint-{step}")
    (tmp_path / "run/checkpoint-20/trainer_state.json").write_text(json.dumps({"global_step": 21}))
    with pytest.raises(RelexError, match="global_step 21"):
        open_run(tmp_path / "run")


def test_reader_reads_row_ranges_lazily_in_the_stored_dtype(tmp_path):
    run_folder = make_run(tmp_path / "run", steps=(1,), dtype=torch.bfloat16, shard_size=20_000)
    reader = CheckpointReader(run_folder / "checkpoint-1")
    full = {}
    for file in reader.files:
        full.update(load_file(file))
    name = "model.layers.1.mlp.down_proj.weight"
    assert reader.tensors[name].dtype == torch.bfloat16
    assert torch.equal(reader.read(name, 3, 7), full[name][3:7])
    assert len(reader.files) > 1 and reader.format == "safetensors"


@pytest.mark.parametrize("name, expected", [
    ("model.layers.3.self_attn.q_proj.weight", (3, "q_proj")),
    ("model.layers.3.self_attn.k_proj.bias", (3, "k_proj")),
    ("model.layers.12.mlp.down_proj.weight", (12, "down_proj")),
    ("model.layers.0.input_layernorm.weight", (0, "input_layernorm")),
    ("model.embed_tokens.weight", (None, "embed_tokens")),
    ("lm_head.weight", (None, "lm_head")),
    ("model.norm.weight", (None, "final_norm")),
    ("transformer.h.5.attn.c_attn.weight", (5, "c_attn")),
    ("transformer.h.5.mlp.c_proj.weight", (5, "mlp_c_proj")),
    ("transformer.wte.weight", (None, "embed_tokens")),
    ("model.vision_tower.patch.weight", (None, "other")),
])
def test_tensor_names_map_to_layer_and_module(name, expected):
    assert layer_and_module(name) == expected
