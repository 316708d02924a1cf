"""The streaming pass reads real safetensors runs and gives the brute-force Gram of the deltas."""

import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from relex_core import compute_gram, open_run
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
    assert run_gram.dtypes[0] == str(dtype).removeprefix("torch.")
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


def test_progress_callable_reaches_completion(tmp_path):
    run_folder = make_run(tmp_path / "run", steps=(10, 20), dtype=torch.bfloat16)
    seen = []
    compute_gram(open_run(run_folder), cache_dir=tmp_path / "cache", chunk_mb=0.01,
                 progress=lambda fraction, message: seen.append((fraction, message)))
    assert len(seen) > 3
    assert seen[-1][0] == pytest.approx(1.0)
    assert all(later >= earlier for (earlier, _), (later, _) in zip(seen, seen[1:]))
    assert "tensors" in seen[-1][1]
