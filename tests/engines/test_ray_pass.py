"""`--ray`: the Gram pass as Ray tasks on a real 2-node cluster gives the local pass's Gram, tables and cache."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from relex_core import RelexError, compute_gram, open_run
from relex_core.engines import ray_address
from relex_core.engines.ray import RayEngine, task_groups
from relex_core.gram import LocalEngine
from relex_core.stream import open_layout

from ..test_gram import brute_force_gram
from .ray_cluster import free_port

REPO = Path(__file__).resolve().parents[2]
TINY_CHUNKS = 0.002  # MB: a few rows per item, so the 2 nodes share dozens of tasks


def relex(*arguments):
    return subprocess.run([sys.executable, "-m", "relex_core", *map(str, arguments), "--quiet"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def folder_bytes(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("command", [["analyze", "--window", "0:40", "--rank", "2"],
                                     ["backtest", "--window", "0:40"], ["spectra", "--step", "40", "--k", "2"]])
def test_commands_on_ray_write_the_local_tables_and_the_same_cache(ray_cluster, ray_run, tmp_path, command):
    arguments = [command[0], ray_run, *command[1:], "--chunk-mb", TINY_CHUNKS]
    local = relex(*arguments, "--out", tmp_path / "local", "--cache-dir", tmp_path / "local-cache")
    on_ray = relex(*arguments, "--out", tmp_path / "ray", "--cache-dir", tmp_path / "ray-cache",
                   "--ray", ray_cluster.address)
    assert local.returncode == 0 and on_ray.returncode == 0, on_ray.stderr
    assert on_ray.stdout.replace("/ray/", "/local/") == local.stdout
    assert folder_bytes(tmp_path / "ray") == folder_bytes(tmp_path / "local")
    assert folder_bytes(tmp_path / "ray-cache") == folder_bytes(tmp_path / "local-cache")


def test_the_ray_gram_is_the_local_one_and_the_brute_force(ray_cluster, ray_run, tmp_path):
    run = open_run(ray_run)
    engine = RayEngine(ray_cluster.address)
    on_ray = compute_gram(run, cache_dir=tmp_path, use_cache=False, chunk_mb=TINY_CHUNKS, progress=False,
                          engine=engine)
    local = compute_gram(run, cache_dir=tmp_path, use_cache=False, chunk_mb=TINY_CHUNKS, progress=False)
    assert not on_ray.from_cache and on_ray.fingerprint == local.fingerprint
    # blocks added in item order whichever node finished first: equal, not merely close
    assert np.array_equal(on_ray.gram, local.gram) and np.array_equal(on_ray.base_sq_norm, local.base_sq_norm)
    assert np.array_equal(on_ray.changed, local.changed)
    deltas = brute_force_gram(ray_run, run.steps)
    for index, name in enumerate(on_ray.names):
        expected = deltas[name] @ deltas[name].T
        np.testing.assert_allclose(on_ray.gram[index], expected, rtol=1e-12, atol=1e-14 * np.abs(expected).max())


def test_new_rows_on_ray_are_the_local_engine_s(ray_cluster, ray_run):
    """`gram_sums(layout, new)`: the rows G[new, all] a live update adds, as the local engine sums them."""
    with open_layout(open_run(ray_run)) as layout:
        on_ray = RayEngine(ray_cluster.address).gram_sums(layout, slice(4, 6), chunk_mb=TINY_CHUNKS, progress=False)
        local = LocalEngine().gram_sums(layout, slice(4, 6), chunk_mb=TINY_CHUNKS, progress=False)
    assert on_ray.gram.shape == (len(layout.names), 2, 6)
    assert all(np.array_equal(mine, theirs) for mine, theirs in zip(on_ray, local))


def test_a_corrupt_checkpoint_gives_the_local_error_line(ray_cluster, ray_run, tmp_path):
    damaged = tmp_path / "run"
    shutil.copytree(ray_run, damaged)
    shard = sorted((damaged / "checkpoint-30").glob("*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])
    arguments = ["analyze", damaged, "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache"]
    local, on_ray = relex(*arguments), relex(*arguments, "--ray", ray_cluster.address)
    assert on_ray.returncode == local.returncode == 2
    assert on_ray.stderr == local.stderr and len(on_ray.stderr.splitlines()) == 1
    assert str(shard) in on_ray.stderr and "Traceback" not in on_ray.stderr
    assert not (tmp_path / "out").exists()


def test_files_a_worker_cannot_see_are_named_with_the_node(ray_cluster, ray_run, tmp_path):
    """The driver has the run open; the nodes look for it at its path and do not find it there."""
    copy = shutil.copytree(ray_run, tmp_path / "run")
    with open_layout(open_run(copy)) as layout:
        copy.rename(tmp_path / "elsewhere")
        with pytest.raises(RelexError, match=r"not visible on Ray node .*node id [0-9a-f]{12}") as raised:
            RayEngine(ray_cluster.address).gram_sums(layout, chunk_mb=TINY_CHUNKS, progress=False)
    assert str(copy / "checkpoint-0") in str(raised.value) and "\n" not in str(raised.value)


def test_an_unreachable_or_malformed_address_is_one_line(ray_run, tmp_path):
    nobody = f"127.0.0.1:{free_port()}"
    arguments = ["analyze", ray_run, "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache"]
    result = relex(*arguments, "--ray", nobody)
    assert result.returncode == 2
    assert result.stderr == f"relex: error: cannot reach the Ray cluster at {nobody} (Connection refused)\n"
    result = relex(*arguments, "--ray", "headnode")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "must look like HOST:PORT" in result.stderr
    assert not (tmp_path / "out").exists()


def test_ray_address_comes_from_the_option_then_the_environment(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address(None) is None and ray_address("") == "auto" and ray_address("10.0.0.1:6379") == "10.0.0.1:6379"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    assert ray_address("") == "10.0.0.2:6379" and ray_address(None) is None


def test_a_plain_analyze_never_imports_ray(ray_run, tmp_path):
    script = ("import sys; from relex_core.cli import main; "
              f"code = main(['analyze', {str(ray_run)!r}, '--out', {str(tmp_path / 'out')!r}, '--cache-dir', "
              f"{str(tmp_path / 'cache')!r}, '--quiet']); "
              "assert code == 0; assert 'ray' not in sys.modules, 'ray was imported'; print('no ray')")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("no ray"), result.stderr[-2000:]


def test_tasks_pack_consecutive_items_up_to_the_budget():
    items = [f"item{number}" for number in range(7)]
    sizes = [5, 1, 1, 1, 9, 2, 3]
    groups = task_groups(items, sizes, budget=6)
    assert [item for group in groups for item in group] == items  # every item once, in order
    assert groups == [("item0", "item1"), ("item2", "item3"), ("item4",), ("item5", "item6")]
    assert task_groups([], [], budget=6) == []


def test_device_does_not_combine_with_ray(ray_run, tmp_path):
    result = relex("analyze", ray_run, "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache",
                   "--device", "cuda", "--ray", "127.0.0.1:1")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--device" in result.stderr
