"""The streaming pass reads real safetensors runs and gives the brute-force Gram of the deltas."""

import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import threadpoolctl
import torch
from safetensors.torch import load_file

from relex_core import WindowFit, compute_gram, extrapolate, open_run, threads
from relex_core.gram import RunGram, item_gram, pass_items, run_gram_pass
from relex_core.io.dtypes import dtype_name
from relex_core.stream import open_layout
from relex_core.synthetic import make_run


def brute_force_gram(run_folder, steps, dtype=torch.float64):
    """Load every checkpoint whole, stack the deltas per tensor in float64, multiply."""
    def load(step):
        folder = run_folder / f"checkpoint-{step}"
        files = sorted(folder.glob("*.safetensors"))
        state = {}
        for file in files:
            state.update(load_file(file))
        return state
    base = load(0)
    states = [load(step) for step in steps]
    return {name: np.stack([(state[name].to(torch.float64) - base[name].to(torch.float64)).numpy().ravel()
                            for state in states]) for name in base}


@pytest.mark.parametrize("dtype, shard_size", [(torch.float64, None), (torch.bfloat16, 30_000), (torch.float16, None)])
def test_gram_equals_brute_force_for_each_dtype(tmp_path, dtype, shard_size):
    steps = (5, 10, 20, 40)
    run_folder = make_run(tmp_path / "run", steps=steps, dtype=dtype, shard_size=shard_size, relative_update=1e-2)
    run_gram = compute_gram(open_run(run_folder), cache_dir=tmp_path / "cache", progress=False)
    deltas = brute_force_gram(run_folder, steps)
    assert list(run_gram.steps) == list(steps)
    assert run_gram.dtypes[0] == dtype_name(dtype)
    for index, name in enumerate(run_gram.names):
        expected = deltas[name] @ deltas[name].T
        np.testing.assert_allclose(run_gram.gram[index], expected, rtol=1e-12, atol=1e-14 * np.abs(expected).max())


def test_chunk_size_does_not_change_the_gram(tmp_path):
    run_folder = make_run(tmp_path / "run", steps=(3, 6, 9), dtype=torch.float32)
    small = compute_gram(open_run(run_folder), use_cache=False, chunk_mb=0.001, cache_dir=tmp_path / "a", progress=False)
    large = compute_gram(open_run(run_folder), use_cache=False, chunk_mb=512, cache_dir=tmp_path / "b", progress=False)
    np.testing.assert_allclose(small.gram, large.gram, rtol=1e-12)
    np.testing.assert_allclose(small.base_sq_norm, large.base_sq_norm, rtol=1e-12)


def test_second_analysis_comes_from_the_cache_and_a_changed_checkpoint_misses_it(tmp_path):
    run_folder = make_run(tmp_path / "run", steps=(10, 20, 30), dtype=torch.float32)
    cache_dir = tmp_path / "cache"
    first = compute_gram(open_run(run_folder), cache_dir=cache_dir, progress=False)
    second = compute_gram(open_run(run_folder), cache_dir=cache_dir, progress=False)
    assert not first.from_cache and second.from_cache
    np.testing.assert_array_equal(first.gram, second.gram)
    assert not any(path.is_relative_to(run_folder) for path in cache_dir.rglob("*"))

    # Rewrite one checkpoint with different values: the fingerprint (size/mtime/tensors) changes.
    changed = run_folder / "checkpoint-30" / "model.safetensors"
    state = load_file(changed)
    state = {name: tensor * 1.01 for name, tensor in state.items()}
    from safetensors.torch import save_file
    save_file(state, changed, metadata={"format": "pt"})
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    third = compute_gram(open_run(run_folder), cache_dir=cache_dir, progress=False)
    assert not third.from_cache
    assert not np.allclose(third.gram[:, 2, 2], first.gram[:, 2, 2])
    fresh = compute_gram(open_run(run_folder), cache_dir=cache_dir, use_cache=False, progress=False)
    assert not fresh.from_cache
    np.testing.assert_array_equal(fresh.gram, third.gram)


def test_tied_lm_head_stored_twice_is_analysed_once(tmp_path):
    run_folder = make_run(tmp_path / "run", steps=(10, 20), dtype=torch.float32)
    for folder in run_folder.iterdir():
        file = folder / "model.safetensors"
        state = load_file(file)
        state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
        from safetensors.torch import save_file
        save_file(state, file, metadata={"format": "pt"})
    run_gram = compute_gram(open_run(run_folder), cache_dir=tmp_path / "cache", progress=False)
    assert "lm_head.weight" not in run_gram.names
    assert run_gram.tied == {"lm_head.weight": "model.embed_tokens.weight"}


def test_progress_counts_the_bytes_read_up_to_the_run_s_size(tmp_path):
    run_folder = make_run(tmp_path / "run", steps=(10, 20), dtype=torch.bfloat16)
    seen = []
    compute_gram(open_run(run_folder), cache_dir=tmp_path / "cache", chunk_mb=0.01,
                 progress=lambda fraction, message: seen.append((fraction, message)))
    assert len(seen) > 3
    assert seen[-1][0] == pytest.approx(1.0)
    assert all(later >= earlier for (earlier, _), (later, _) in zip(seen, seen[1:]))
    run_bytes = sum(tensor.numel() * tensor.element_size() for step in (0, 10, 20)
                    for tensor in load_file(run_folder / f"checkpoint-{step}" / "model.safetensors").values())
    done, total, rate = re.fullmatch(r"(\d+\.\d\d) / (\d+\.\d\d) MB read, (\d+\.\d\d) GB/s", seen[-1][1]).groups()
    assert done == total == f"{run_bytes / 1e6:.2f}"


# ---------------------------------------------------------------- the unit of work


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    """bf16, 6 checkpoints, tensors wide enough that one chunk spans several float64 column blocks."""
    shapes = {"model.layers.0.mlp.up_proj.weight": (600, 700), "model.layers.0.mlp.up_proj.bias": (600,),
              "model.norm.weight": (700,)}
    return make_run(tmp_path_factory.mktemp("wide") / "run", steps=(10, 20, 30, 40, 50, 60), shapes=shapes,
                    dtype=torch.bfloat16, relative_update=1e-2)


def test_work_items_summed_in_any_order_give_the_pass_s_gram(wide_run):
    with open_layout(open_run(wide_run)) as layout:
        reference = run_gram_pass(layout, chunk_mb=0.5, progress=False)
        items = pass_items(layout, chunk_mb=0.5)
        assert len(items) > len(layout.names)  # several row ranges per big tensor
        in_order = np.zeros_like(reference.gram)
        shuffled = np.zeros_like(reference.gram)
        base_sq = np.zeros(len(layout.names))
        changed = np.zeros_like(reference.changed)
        for item in items:
            block = item_gram(layout, item)
            in_order[layout.names.index(item.tensor)] += block.gram
            base_sq[layout.names.index(item.tensor)] += block.base_sq_norm
            changed[layout.names.index(item.tensor)] += block.changed
        for number in np.random.default_rng(0).permutation(len(items)):
            item = items[number]
            shuffled[layout.names.index(item.tensor)] += item_gram(layout, item).gram
    assert np.array_equal(in_order, reference.gram)  # the pass is this sum, in this order
    assert np.array_equal(changed, reference.changed)
    assembled = RunGram.from_sums(layout, in_order, base_sq, changed)
    assert (assembled.names, assembled.shapes, assembled.dtypes) == (reference.names, reference.shapes,
                                                                     reference.dtypes)
    assert list(assembled.steps) == list(reference.steps) == [10, 20, 30, 40, 50, 60]
    np.testing.assert_allclose(shuffled, reference.gram, rtol=1e-12)
    np.testing.assert_allclose(base_sq, reference.base_sq_norm, rtol=1e-12)
    deltas = brute_force_gram(wide_run, (10, 20, 30, 40, 50, 60))
    for index, name in enumerate(reference.names):
        np.testing.assert_allclose(reference.gram[index], deltas[name] @ deltas[name].T, rtol=1e-12)


def test_the_thread_count_does_not_change_the_gram(wide_run):
    with open_layout(open_run(wide_run)) as layout:
        one = run_gram_pass(layout, progress=False, workers=1)
        three = run_gram_pass(layout, progress=False, workers=3)
        serial = run_gram_pass(layout, progress=False, workers=3, prefetch=False)
    assert np.array_equal(one.gram, three.gram) and np.array_equal(one.gram, serial.gram)
    assert np.array_equal(one.base_sq_norm, three.base_sq_norm)


def test_new_rows_of_a_grown_run_complete_the_old_gram(wide_run):
    """A live update: the Gram of the first 4 checkpoints plus G[new, all] for the 2 new ones is the
    Gram of all 6 (docs/design.md, growing the Gram), for K·(N + K) products instead of all of them."""
    run = open_run(wide_run)
    with open_layout(run, checkpoints=range(4)) as old_layout:
        old = run_gram_pass(old_layout, progress=False)
    assert list(old.steps) == [10, 20, 30, 40]
    with open_layout(run) as layout:
        full = run_gram_pass(layout, chunk_mb=0.5, progress=False)
        new = slice(4, 6)
        rows = np.zeros((len(layout.names), 2, 6))
        for item in pass_items(layout, chunk_mb=0.5):
            block = item_gram(layout, item, new)
            assert block.gram.shape == (2, 6) and block.changed.shape == (2,)
            rows[layout.names.index(item.tensor)] += block.gram
    grown = np.zeros_like(full.gram)
    grown[:, :4, :4] = old.gram
    grown[:, 4:, :] = rows
    grown[:, :, 4:] = rows.transpose(0, 2, 1)
    np.testing.assert_allclose(grown, full.gram, rtol=1e-12, atol=1e-14 * np.abs(full.gram).max())


def test_a_pass_beside_an_export_never_changes_thread_settings(wide_run, tmp_path, monkeypatch):
    """Thread counts are set once per process (relex_core.threads), never saved and restored around a
    call: a pass and an export running side by side leave torch and BLAS exactly as configured."""
    threads.configure()
    fit = WindowFit(compute_gram(open_run(wide_run), cache_dir=tmp_path / "cache", progress=False), rank=2)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda count: calls.append(("torch", count)))
    for controller in threadpoolctl._ALL_CONTROLLERS:
        monkeypatch.setattr(controller, "set_num_threads", lambda self, count: calls.append(("blas", count)))
    with ThreadPoolExecutor(2) as pool:
        gram = pool.submit(compute_gram, open_run(wide_run), cache_dir=tmp_path / "cache", use_cache=False,
                           progress=False)
        exported = pool.submit(extrapolate, fit, [90], tmp_path / "out", progress=False)
        gram.result(), exported.result()
    assert calls == []
    assert torch.get_num_threads() == 1
    assert {info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"} == {1}


def brute_force_changed(run_folder, steps):
    """Per tensor and checkpoint, the count of stored elements that differ from the base's (whole files)."""
    def load(step):
        state = {}
        for file in sorted((run_folder / f"checkpoint-{step}").glob("*.safetensors")):
            state.update(load_file(file))
        return state
    base = load(0)
    states = [load(step) for step in steps]
    return {name: np.array([int((state[name] != base[name]).sum()) for state in states]) for name in base}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_pass_counts_the_elements_each_checkpoint_stores_differently_from_the_base(tmp_path, dtype):
    # A tiny update: in bf16 most of it is below the format's spacing and leaves elements unchanged.
    steps = (10, 20, 30, 40)
    folder = make_run(tmp_path / "run", steps=steps, dtype=dtype, relative_update=1e-4)
    run_gram = compute_gram(open_run(folder), cache_dir=tmp_path / "cache", chunk_mb=0.05, progress=False)
    expected = brute_force_changed(folder, steps)
    for index, name in enumerate(run_gram.names):
        assert np.array_equal(run_gram.changed[index], expected[name]), name
    shares = run_gram.changed.sum(axis=0) / run_gram.numels.sum()
    assert (shares < 0.9).all() if dtype == torch.bfloat16 else (shares > 0.99).all()
    assert run_gram.checkpoint_dtypes == [dtype_name(dtype)] * len(run_gram.names)
    cached = compute_gram(open_run(folder), cache_dir=tmp_path / "cache", progress=False)
    assert cached.from_cache and np.array_equal(cached.changed, run_gram.changed)
    assert cached.checkpoint_dtypes == run_gram.checkpoint_dtypes
