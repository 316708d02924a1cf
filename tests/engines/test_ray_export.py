"""`--ray` exports: tasks pwrite their rows into shards laid out by the driver; the folders equal the local ones."""

import json
import shutil
import struct

import numpy as np
import pytest

from relex_core import RelexError, WindowFit, compute_gram, open_run
from relex_core.engines.ray import RayEngine
from relex_core.export import extrapolate

from .test_ray_pass import TINY_CHUNKS, folder_bytes, relex


@pytest.mark.parametrize("command", [["extrapolate", "--target", "60,80", "--dtype", "bf16"],
                                     ["reconstruct", "--step", "30", "--dtype", "fp32"]])
def test_exports_on_ray_are_the_local_folders_byte_for_byte(ray_cluster, ray_run, tmp_path, command):
    arguments = [*command, ray_run, "--window", "0:40", "--rank", "2", "--shard-size", "20KB",
                 "--chunk-mb", TINY_CHUNKS, "--cache-dir", tmp_path / "cache"]
    local = relex(*arguments, "--out", tmp_path / "local")
    on_ray = relex(*arguments, "--out", tmp_path / "ray", "--ray", ray_cluster.address)
    assert local.returncode == 0 and on_ray.returncode == 0, on_ray.stderr
    assert on_ray.stdout.replace("/ray", "/local") == local.stdout
    written = folder_bytes(tmp_path / "ray")
    assert written == folder_bytes(tmp_path / "local")  # weights, index, config and relex.json alike
    assert sum(name.endswith(".safetensors") for name in written) >= 3  # sharded (several per target)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def poison(shard, tensor: str) -> None:
    """Write a bf16 NaN over the first element of `tensor` in a safetensors file, in place (size kept)."""
    with open(shard, "r+b") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        start = json.loads(file.read(length))[tensor]["data_offsets"][0]
        file.seek(8 + length + start)
        file.write(struct.pack("<H", 0x7FC0))


def test_a_nan_met_inside_a_task_is_the_local_error_and_leaves_nothing(ray_cluster, ray_run, tmp_path):
    run_folder = shutil.copytree(ray_run, tmp_path / "run")
    fit = WindowFit(compute_gram(open_run(run_folder), cache_dir=tmp_path / "cache", progress=False),
                    window="0:40", rank=2)
    shard = sorted((run_folder / "checkpoint-40").glob("*.safetensors"))[-1]
    tensor = next(name for name in json.loads(shard.read_bytes()[8:8 + struct.unpack("<Q", shard.read_bytes()[:8])[0]])
                  if name != "__metadata__" and name in fit.run_gram.names)
    poison(shard, tensor)  # after the pass: only the export meets it, inside a task
    errors = {}
    for engine in (None, RayEngine(ray_cluster.address)):
        with pytest.raises(RelexError) as raised:
            extrapolate(fit, [60], tmp_path / "out", shard_size=20_000, progress=False, chunk_mb=TINY_CHUNKS,
                        engine=engine)
        errors[engine is None] = str(raised.value)
    assert errors[True] == errors[False] == f"{shard}: tensor '{tensor}': tensor holds NaN or Inf values"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache", "run"]  # no export, no temporary folder
    assert np.isfinite(fit.run_gram.gram).all()
