"""ShardedWriter writes HF-style safetensors chunk by chunk; atomic_folder never leaves a partial folder."""

import json
import os
import socket
import stat
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from relex_core import RelexError
from relex_core.io.writer import ShardedWriter, TensorSpec, atomic_folder, plan_shards, save_state_dict


def sample_state() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(10, 6, generator=generator),
            "b.bias": torch.randn(6, generator=generator).to(torch.bfloat16),
            "c.empty": torch.zeros(0, 4),
            "d.scalar": torch.tensor(3.5, dtype=torch.float16),
            "e.ids": torch.arange(12, dtype=torch.int64).reshape(3, 4),
            "f.last_empty": torch.zeros(2, 0)}


def specs_of(state) -> list:
    return [TensorSpec(name, tuple(tensor.shape), tensor.dtype) for name, tensor in state.items()]


def read_back(folder) -> dict:
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    return state


def test_shards_are_planned_in_order_within_the_size():
    specs = specs_of(sample_state())
    shards = plan_shards(specs, shard_size=200)
    assert [spec for shard in shards for spec in shard] == specs
    assert all(sum(spec.nbytes for spec in shard) <= 200 or len(shard) == 1 for shard in shards)
    assert plan_shards(specs, None) == [specs]


@pytest.mark.parametrize("shard_size", [None, 100])
def test_chunked_writes_round_trip_through_safetensors(tmp_path, shard_size):
    state = sample_state()
    writer = ShardedWriter(tmp_path, specs_of(state), shard_size=shard_size, metadata={"format": "pt", "note": 7})
    for name, tensor in state.items():
        if tensor.numel() == 0:
            continue  # empty tensors need no write call, even between others
        for start in range(0, tensor.shape[0] if tensor.dim() else 1, 2):  # rows in chunks of two
            chunk = tensor[start:start + 2] if tensor.dim() else tensor
            writer.write(name, chunk.to(torch.float64) if chunk.is_floating_point() else chunk)  # converted back
    files = writer.close()
    loaded = read_back(tmp_path)
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    if shard_size is None:
        assert [file.name for file in files] == ["model.safetensors"]
    else:
        count = len(files) - 1
        assert count > 1 and files[-1].name == "model.safetensors.index.json"
        assert [file.name for file in files[:-1]] == [f"model-{i:05d}-of-{count:05d}.safetensors"
                                                      for i in range(1, count + 1)]
        index = json.loads(files[-1].read_text())
        assert index["metadata"]["total_size"] == sum(spec.nbytes for spec in specs_of(state))
        for name, filename in index["weight_map"].items():
            with safe_open(str(tmp_path / filename), framework="pt") as handle:
                assert name in handle.keys()
    with safe_open(str(files[0]), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "note": "7"}


def test_save_state_dict_writes_a_loadable_folder(tmp_path):
    state = sample_state()
    save_state_dict(state, tmp_path / "model", shard_size=150)
    loaded = read_back(tmp_path / "model")
    assert all(torch.equal(loaded[name], tensor) for name, tensor in state.items())


def test_misuse_is_refused(tmp_path):
    state = {"a": torch.ones(2, 2), "b": torch.ones(3)}
    writer = ShardedWriter(tmp_path, specs_of(state))
    with pytest.raises(ValueError, match="expected data for a"):
        writer.write("b", state["b"])
    with pytest.raises(ValueError, match="too much data"):
        writer.write("a", torch.ones(3, 2))
    writer = ShardedWriter(tmp_path, specs_of(state))
    writer.write("a", state["a"])
    with pytest.raises(ValueError, match="not fully written"):
        writer.close()
    writer.write("b", state["b"])
    writer.close()
    with pytest.raises(ValueError, match="already written"):
        writer.write("b", state["b"])


def test_atomic_folder_renames_into_place_only_on_success(tmp_path):
    with atomic_folder(tmp_path / "out") as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".out.relex-")
        (temporary / "weights").write_text("new")
        assert not (tmp_path / "out").exists()
    assert (tmp_path / "out" / "weights").read_text() == "new"
    assert os.listdir(tmp_path) == ["out"]


def test_atomic_folder_sweeps_what_killed_exports_left_and_nothing_else(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    host = socket.gethostname()
    abandoned = tmp_path / f".out.relex-{host}-{ended.pid}-k1ll3d"  # its process was SIGKILLed
    running = tmp_path / f".out.relex-{host}-{os.getpid()}-wr1t1ng"  # a live export writing right now
    elsewhere = tmp_path / f".out.relex-another-host-{ended.pid}-nfs"  # a process we cannot see
    set_aside = tmp_path / ".out.relex-old-s4f3"  # an old destination set aside by --force
    other = tmp_path / f".other.relex-{host}-{ended.pid}-x"  # another destination's
    for folder in (abandoned, running, elsewhere, set_aside, other):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    with atomic_folder(tmp_path / "out") as temporary:
        (temporary / "weights").write_text("new")
    assert not abandoned.exists()
    assert all(folder.exists() for folder in (running, elsewhere, set_aside, other))
    assert (tmp_path / "out" / "weights").read_text() == "new"


def test_atomic_folder_gives_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_folder(tmp_path / "out"):
            pass
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


@pytest.mark.parametrize("fault", [RuntimeError, KeyboardInterrupt])
def test_atomic_folder_removes_everything_on_failure(tmp_path, fault):
    with pytest.raises(fault):
        with atomic_folder(tmp_path / "out") as temporary:
            (temporary / "half").write_text("partial")
            raise fault("injected")
    assert os.listdir(tmp_path) == []


def test_atomic_folder_refuses_or_replaces_an_existing_destination(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("old")
    with pytest.raises(RelexError, match="already exists"):
        with atomic_folder(tmp_path / "out"):
            pass
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "out", force=True) as temporary:
            (temporary / "new").write_text("new")
            raise RuntimeError("injected")
    assert os.listdir(tmp_path / "out") == ["old"]  # a failed --force keeps the old folder
    with atomic_folder(tmp_path / "out", force=True) as temporary:
        (temporary / "new").write_text("new")
    assert os.listdir(tmp_path / "out") == ["new"]
    assert os.listdir(tmp_path) == ["out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(RelexError, match="not a folder"):
        with atomic_folder(tmp_path / "file", force=True):
            pass
