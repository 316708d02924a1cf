"""verl FSDP shards and DCP checkpoints read as they are: the same numbers as the merged fp32 weights.

The fixtures (tests/io/native_checkpoints.py) are written by torch itself: three gloo ranks
`fully_shard` a tiny Qwen2 with uneven row counts, train it with Adam, and save it as verl,
torchtitan, accelerate and NeMo-RL do, plus the same weights gathered with `full_tensor()`
into fp32 HF folders. relex's answers on the native runs must equal its answers on those.
"""

import enum
import io
import json
import os
import pickle
import shutil
from pathlib import Path, PosixPath

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from relex_core import RelexError, compute_gram, open_run
from relex_core.cli import main
from relex_core.io import dcp, verl
from relex_core.io.names import strip_wrappers
from relex_core.io.reader import open_reader
from tests.io.native_checkpoints import SAVE_STEPS, WORLD
from tests.io.test_bad_inputs import RunsCode

TABLE_KEYS = {"tensors.csv": ["tensor"], "coefficients.csv": ["tensor", "step"], "spectra.csv": ["tensor", "index"],
              "layers.csv": ["layer"], "modules.csv": ["module"], "model.csv": [], "stability.csv": [],
              "changed.csv": ["dtype", "step"]}


def analyze(run_args, out: Path) -> dict:
    """`relex analyze` in this process; {table name: DataFrame} of what it wrote."""
    code = main(["analyze", *map(str, run_args), "--out", str(out), "--cache-dir", str(out.parent / "cache"),
                 "--quiet"])
    assert code == 0
    return {name: pd.read_csv(out / name) for name in TABLE_KEYS}


def assert_tables_equal(expected: dict, actual: dict, drop_tensors=()) -> None:
    """Same rows (in any order) and every column equal: strings exactly, numbers to float64 rounding."""
    for name, keys in TABLE_KEYS.items():
        left, right = expected[name], actual[name]
        if "tensor" in right.columns:
            right = right[~right["tensor"].isin(drop_tensors)]
        if keys:
            left, right = (frame.sort_values(keys, ignore_index=True) for frame in (left, right))
        assert list(left.columns) == list(right.columns), name
        assert len(left) == len(right), name
        for column in left.columns:
            if left[column].dtype.kind in "fi":
                np.testing.assert_allclose(right[column].to_numpy(float), left[column].to_numpy(float), rtol=1e-12,
                                           atol=0, equal_nan=True, err_msg=f"{name}: {column}")
            else:
                assert left[column].astype(str).tolist() == right[column].astype(str).tolist(), f"{name}: {column}"


@pytest.fixture(scope="module")
def merged(native, tmp_path_factory):
    """relex analyze on the merged fp32 HF folders: what every native layout must reproduce."""
    return analyze([native / "merged", "--base", native / "base"], tmp_path_factory.mktemp("merged") / "out")


@pytest.mark.parametrize("layout", ["verl", "accelerate"])
def test_native_runs_analyse_exactly_like_their_merged_fp32_folders(native, merged, tmp_path, layout):
    actual = analyze([native / layout, "--base", native / "base"], tmp_path / layout)
    assert_tables_equal(merged, actual)
    assert set(merged["coefficients.csv"]["step"]) == set(SAVE_STEPS)


@pytest.mark.parametrize("layout", ["titan", "nemo"])
def test_dcp_runs_without_a_config_keep_the_lm_head_copy_and_agree_on_the_rest(native, merged, tmp_path, layout):
    """torchtitan and NeMo-RL keep no HF config beside the weights, so the tied lm_head is not known
    to be the embedding: it is analysed as a tensor of its own (with the embedding's numbers), and
    the run's own step-0 save is the base."""
    actual = analyze([native / layout], tmp_path / layout)
    tensors = actual["tensors.csv"].set_index("tensor")
    numeric = [column for column in tensors.columns if tensors[column].dtype.kind == "f"]
    np.testing.assert_array_equal(tensors.loc["lm_head.weight", numeric].to_numpy(float),
                                  tensors.loc["model.embed_tokens.weight", numeric].to_numpy(float))
    per_tensor = {name: merged[name] for name in ("tensors.csv", "coefficients.csv", "spectra.csv")}
    mine = {name: actual[name] for name in per_tensor}
    for name in per_tensor:
        frame = mine[name][mine[name]["tensor"] != "lm_head.weight"].sort_values(TABLE_KEYS[name], ignore_index=True)
        expected = per_tensor[name].sort_values(TABLE_KEYS[name], ignore_index=True)
        numbers = [column for column in expected.columns if expected[column].dtype.kind == "f"]
        np.testing.assert_allclose(frame[numbers].to_numpy(float), expected[numbers].to_numpy(float), rtol=1e-12)
        assert frame["tensor"].tolist() == expected["tensor"].tolist()


def test_reader_reads_fp32_shards_with_hf_names_and_the_tied_copy_left_out(native):
    merged = load_file(native / "merged" / f"checkpoint-{SAVE_STEPS[-1]}" / "model.safetensors")
    with open_reader(native / "verl" / f"global_step_{SAVE_STEPS[-1]}" / "actor") as reader:
        assert reader.format == "verl" and reader.source_dtypes == ["float32"]
        assert sorted(reader.tensors) == sorted(merged)  # HF names; lm_head.weight tied (config), as HF saves
        assert len(reader.files) == WORLD and all(file.name.startswith("model_world_size_3") for file in reader.files)
        for name, expected in merged.items():
            assert reader.tensors[name].shape == tuple(expected.shape)
            assert torch.equal(reader.read(name), expected)
            rows = expected.shape[0]
            for start, stop in ((0, 1), (rows // 3 - 1, rows // 3 + 2), (rows - 2, rows), (1, rows - 1)):
                buffer = torch.empty(1 << 16, dtype=torch.uint8)
                got = reader.read(name, start, stop, out=buffer)
                assert got.data_ptr() == buffer.data_ptr()  # read straight into the caller's buffer
                assert torch.equal(got, expected[start:stop])


def test_a_row_range_is_read_from_only_the_rank_files_holding_it(native, monkeypatch):
    """Bounded, lazy reads: rows [a, b) of a Shard(0) tensor are exactly (b − a) rows' bytes, pread
    from the one or two rank files holding them; nothing else of any rank file is read."""
    actor = native / "verl" / f"global_step_{SAVE_STEPS[0]}" / "actor"
    name = "model.embed_tokens.weight"  # 97 rows over 3 ranks: 33, 33, 31
    with open_reader(actor) as reader:
        names = {reader._open_files.descriptor(file): file.name for file in reader.files}
        reads = []
        real_preadv = os.preadv

        def recording_preadv(descriptor, buffers, offset):
            count = real_preadv(descriptor, buffers, offset)
            reads.append((names.get(descriptor), count))
            return count

        monkeypatch.setattr(os, "preadv", recording_preadv)
        row_bytes = 32 * 4
        reader.read(name, 30, 40)  # crosses from rank 0 (rows 0–32) into rank 1 (33–65)
        assert reads == [("model_world_size_3_rank_0.pt", 3 * row_bytes), ("model_world_size_3_rank_1.pt", 7 * row_bytes)]
        reads.clear()
        reader.read(name, 70, 72)
        assert reads == [("model_world_size_3_rank_2.pt", 2 * row_bytes)]


def test_every_placement_is_rebuilt_from_the_shards(native):
    """HSDP (Replicate over replica groups, uneven Shard(0)), Replicate, Shard(1) with an empty
    shard, and a plain buffer, each against the tensor torch's full_tensor() gathered."""
    expected = load_file(native / "placements" / "expected.safetensors")
    with open_reader(native / "placements" / "supported") as reader:
        assert sorted(reader.tensors) == sorted(expected)
        for name, tensor in expected.items():
            assert torch.equal(reader.read(name), tensor), name
            if tensor.dim() and tensor.shape[0] > 2:
                assert torch.equal(reader.read(name, 1, 3), tensor[1:3]), name


@pytest.mark.parametrize("case, words", [("partial", ["Partial", "P(sum)"]),
                                         ("tensor_parallel", ["2 mesh dimensions", "tensor parallel"])])
def test_partial_sums_and_tensor_parallel_are_refused_naming_file_and_tensor(native, case, words):
    with pytest.raises(RelexError) as error:
        open_reader(native / "placements" / case)
    message = str(error.value)
    assert f"placements/{case}/model_world_size_4_rank_0.pt" in message and f"tensor '{case}'" in message
    assert any(word in message for word in words), message


def test_single_gpu_saves_hold_plain_tensors_and_wrapper_prefixes_are_stripped(native, tmp_path):
    merged = load_file(native / "merged" / f"checkpoint-{SAVE_STEPS[0]}" / "model.safetensors")
    actor = tmp_path / "actor"
    actor.mkdir()
    torch.save({f"_orig_mod.{name}": tensor for name, tensor in merged.items()}, actor / "model_world_size_1_rank_0.pt")
    with open_reader(actor) as reader:
        assert reader.format == "verl" and sorted(reader.tensors) == sorted(merged)
        for name, tensor in merged.items():
            assert torch.equal(reader.read(name, 0, 2), tensor[:2])


@pytest.mark.parametrize("name, expected", [
    ("_fsdp_wrapped_module.model.layers.0._fsdp_wrapped_module.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.weight"),
    ("_orig_mod.model.norm.weight", "model.norm.weight"),
    ("model.layers.1._checkpoint_wrapped_module.self_attn.q_proj.bias", "model.layers.1.self_attn.q_proj.bias"),
    ("module.lm_head.weight", "lm_head.weight"),
    ("model.embed_tokens.weight", "model.embed_tokens.weight"),
])
def test_wrapper_prefixes_give_the_hf_name(name, expected):
    assert strip_wrappers(name) == expected


def test_dcp_key_rule_flat_and_nested(native):
    """Flat saves: the top-level tensors. Nested saves: what is under "model", without "model.";
    the optimizer's tensors (present in the same metadata) are never taken."""
    merged = sorted(load_file(native / "merged" / f"checkpoint-{SAVE_STEPS[0]}" / "model.safetensors"))
    flat = dcp.read_metadata(native / "titan" / f"step-{SAVE_STEPS[0]}")
    nested = dcp.read_metadata(native / "accelerate" / f"checkpoint-{SAVE_STEPS[0]}" / "pytorch_model_fsdp_0")
    assert sorted(dcp.model_entries(flat)) == sorted([*merged, "lm_head.weight"])
    assert any(key.startswith("optimizer.") for key in nested.state_dict_metadata)
    entries = dcp.model_entries(nested)
    assert sorted(entries) == sorted([*merged, "lm_head.weight"])
    assert all(key == f"model.{name}" for name, key in entries.items())


def test_metadata_that_would_run_code_is_refused(native, tmp_path):
    """DCP's own reader unpickles .metadata with plain pickle; relex's accepts DCP's classes only."""
    folder = tmp_path / "step-2"
    shutil.copytree(native / "titan" / "step-2", folder)
    marker = tmp_path / "payload-ran"
    (folder / ".metadata").write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(RelexError, match="refused to unpickle.*posix.mkdir|refused to unpickle.*os.mkdir"):
        open_reader(folder)
    assert not marker.exists()


class EnumsByName(pickle.Pickler):
    """Pickles enum members as Python 3.12 (and Debian's 3.11.2) do: getattr(EnumClass, 'NAME')."""

    def reducer_override(self, obj):
        if isinstance(obj, enum.Enum):
            return getattr, (type(obj), obj.name)
        return NotImplemented


def test_metadata_with_enums_pickled_by_name_reads_as_written_by_value(native, tmp_path):
    """Newer Pythons pickle DCP's enums by name through builtins.getattr: read, the same metadata as before;
    getattr on anything but a member of DCP's metadata enums stays refused."""
    folder = tmp_path / "step-2"
    shutil.copytree(native / "titan" / "step-2", folder)
    metadata = dcp.read_metadata(folder)
    buffer = io.BytesIO()
    EnumsByName(buffer, protocol=4).dump(metadata)
    assert b"getattr" in buffer.getvalue()
    (folder / ".metadata").write_bytes(buffer.getvalue())
    assert dcp.read_metadata(folder) == metadata
    with open_reader(folder) as by_name, open_reader(native / "titan" / "step-2") as by_value:
        for name, info in by_value.tensors.items():
            assert torch.equal(by_name.read(name, 0, info.rows), by_value.read(name, 0, info.rows)), name

    class GetattrOfAnAllowedClass:  # PosixPath may be built, its methods may not be fetched
        def __reduce__(self):
            return getattr, (PosixPath, "unlink")

    (folder / ".metadata").write_bytes(pickle.dumps(GetattrOfAnAllowedClass()))
    with pytest.raises(RelexError, match=r"refused to unpickle: getattr\(.*Path, 'unlink'\) is not part of DCP"):
        open_reader(folder)


def test_optimizer_extra_state_and_data_files_are_never_opened(native, merged, tmp_path):
    """Turn every non-model pickle of the verl run into one that runs code: the analysis is unchanged."""
    run = shutil.copytree(native / "verl", tmp_path / "verl")
    marker = tmp_path / "payload-ran"
    replaced = 0
    for path in run.rglob("*.pt"):
        if not path.name.startswith("model_"):
            torch.save({"payload": RunsCode(marker)}, path)
            replaced += 1
    assert replaced == len(SAVE_STEPS) * (2 * WORLD + 1)
    assert_tables_equal(merged, analyze([run, "--base", native / "base"], tmp_path / "actual"))
    assert not marker.exists()


def test_prefer_hf_reads_the_bf16_copies_and_the_notes_say_what_was_read(native, tmp_path):
    native_run = open_run(native / "verl", base=native / "base")
    assert [checkpoint.format for checkpoint in native_run.checkpoints] == ["verl"] * len(SAVE_STEPS)
    assert native_run.checkpoints[0].config_dir == native / "verl" / "global_step_2" / "actor" / "huggingface"
    assert native_run.config()["model_type"] == "qwen2"
    assert any("float32 verl FSDP shards (world size 3)" in note and "bfloat16 safetensors" in note
               for note in native_run.notes), native_run.notes
    assert any("--prefer hf" in note for note in native_run.notes)
    hf_run = open_run(native / "verl", base=native / "base", prefer="hf")
    assert [checkpoint.path.name for checkpoint in hf_run.checkpoints] == ["huggingface"] * len(SAVE_STEPS)
    assert any("--prefer native" in note for note in hf_run.notes)
    bf16 = compute_gram(open_run(native / "merged_bf16", base=native / "base"), cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(compute_gram(hf_run, cache_dir=tmp_path, progress=False).gram, bf16.gram)
    fp32 = compute_gram(native_run, cache_dir=tmp_path, progress=False)
    assert not np.array_equal(fp32.gram, bf16.gram)  # the fp32 shards are a different, finer record


def test_the_verl_run_needs_a_base(native):
    with pytest.raises(RelexError, match="--base"):
        open_run(native / "verl")


def test_weight_files_of_a_native_checkpoint_are_the_model_files(native):
    actor = native / "verl" / "global_step_4" / "actor"
    assert verl.weight_files(actor)[0] == [actor / f"model_world_size_3_rank_{rank}.pt" for rank in range(WORLD)]
    folder = native / "titan" / "step-4"
    files, _ = dcp.weight_files(folder)
    assert files[0] == folder / ".metadata" and {file.suffix for file in files[1:]} == {".distcp"}


def extrapolate(run_args, out: Path, *extra) -> dict:
    """`relex extrapolate` (window 2:4, target 6) in this process; the exported tensors by name."""
    code = main(["extrapolate", *map(str, run_args), "--window", "2:4", "--target", "6", "--out", str(out),
                 "--cache-dir", str(out.parent / "cache"), "--quiet", *extra])
    assert code == 0
    return load_file(out / "model.safetensors")


@pytest.mark.parametrize("dtype", [None, "fp32"])
def test_exports_of_a_verl_run_equal_those_of_its_merged_fp32_folders(native, tmp_path, dtype):
    extra = ["--dtype", dtype] if dtype else []
    from_shards = extrapolate([native / "verl", "--base", native / "base"], tmp_path / "from-verl", *extra)
    from_merged = extrapolate([native / "merged", "--base", native / "base"], tmp_path / "from-merged", *extra)
    assert from_shards.keys() == from_merged.keys()
    for name, tensor in from_shards.items():
        assert tensor.dtype == (torch.float32 if dtype else torch.bfloat16), name  # default: the HF base's dtype
        assert torch.equal(tensor, from_merged[name]), name
    # config, generation config and tokenizer come from the checkpoint's actor/huggingface folder
    hf = native / "verl" / "global_step_4" / "actor" / "huggingface"
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "from-verl" / name).read_bytes() == (hf / name).read_bytes(), name


def test_a_native_base_is_exported_in_the_dtype_its_hf_config_names_and_transformers_loads_it(native, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "from-accelerate"
    exported = extrapolate([native / "accelerate"], out)  # step 0 is a DCP checkpoint: a native base
    config = json.loads((native / "accelerate" / "checkpoint-4" / "config.json").read_text())
    named = config.get("torch_dtype") or config.get("dtype")  # transformers 5 leaves out the default
    assert {tensor.dtype for tensor in exported.values()} == {getattr(torch, named) if named else torch.float32}
    written = json.loads((out / "config.json").read_text())
    assert (written.get("torch_dtype") or written.get("dtype")) == named
    model = AutoModelForCausalLM.from_pretrained(out)
    tokens = torch.arange(10)[None]
    with torch.no_grad():
        logits = model(input_ids=tokens).logits
    assert logits.shape == (1, 10, config["vocab_size"]) and torch.isfinite(logits).all()
    loaded = dict(model.state_dict())
    for name, tensor in exported.items():
        assert torch.equal(loaded[name].to(tensor.dtype), tensor), name


def test_a_native_base_whose_config_names_bf16_is_exported_in_bf16(native, tmp_path):
    run = shutil.copytree(native / "accelerate", tmp_path / "accelerate")
    for config_path in run.glob("checkpoint-*/config.json"):
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps({**config, "torch_dtype": "bfloat16"}))
    exported = extrapolate([run], tmp_path / "out")
    assert {tensor.dtype for tensor in exported.values()} == {torch.bfloat16}
    record = json.loads((tmp_path / "out" / "relex.json").read_text())
    assert record["dtype"] == "bfloat16" and record["rounding_loss"] > 0  # fp32 shards rounded: the loss is told
