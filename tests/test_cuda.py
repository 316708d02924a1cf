"""`device="cuda"`: the Gram products on the GPU give the CPU's Gram; without a GPU, the CPU is used.

The GPU tests are skipped where torch sees no CUDA device; the fallback test runs everywhere
else (it is what a user without a GPU gets from `--device cuda`).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from relex_core.gram import compute_gram, gram_block
from relex_core.io.discover import open_run
from relex_core.stream import WorkItem, open_layout, read_rows
from relex_core.synthetic import make_run

REPO = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_gram_on_cuda_equals_the_cpu_gram(tmp_path, dtype):
    run = open_run(make_run(tmp_path / "run", dtype=dtype, steps=(10, 20, 40), shard_size=20_000))

    on_cpu = compute_gram(run, cache_dir=tmp_path / "cache-cpu", device="cpu", progress=False, chunk_mb=0.02)
    on_gpu = compute_gram(run, cache_dir=tmp_path / "cache-gpu", device="cuda", progress=False, chunk_mb=0.02)

    # Same exact products; only the order of the float64 sums differs.
    np.testing.assert_allclose(on_gpu.gram, on_cpu.gram, rtol=1e-10, atol=1e-14 * np.abs(on_cpu.gram).max())
    np.testing.assert_allclose(on_gpu.base_sq_norm, on_cpu.base_sq_norm, rtol=1e-12)


@needs_cuda
def test_a_chunk_multiplied_on_the_gpu_equals_the_cpu_block(tmp_path):
    layout = open_layout(open_run(make_run(tmp_path / "run", dtype=torch.bfloat16, steps=(10, 20, 30))))
    try:
        name = layout.names[0]
        rows = read_rows(layout, WorkItem(name, 0, layout.base.tensors[name].rows))
    finally:
        layout.close()
    assert rows.dtype == torch.bfloat16  # rows travel to the GPU as stored
    on_gpu, on_cpu = gram_block(rows, device="cuda"), gram_block(rows)
    np.testing.assert_allclose(on_gpu.gram, on_cpu.gram, rtol=1e-12)
    assert on_gpu.base_sq_norm == pytest.approx(on_cpu.base_sq_norm, rel=1e-12)
    assert np.array_equal(on_gpu.changed, on_cpu.changed)
    # only the rows of the newest checkpoints, G[new, all], as a live update asks for
    new_rows = gram_block(rows, slice(1, 3), device="cuda")
    np.testing.assert_allclose(new_rows.gram, on_cpu.gram[1:3], rtol=1e-12)
    assert np.array_equal(new_rows.changed, on_cpu.changed[1:3])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_cuda_the_pass_falls_back_to_the_cpu_and_says_so(tmp_path):
    run_folder = make_run(tmp_path / "run", dtype=torch.bfloat16, steps=(10, 20, 30))
    result = subprocess.run([sys.executable, "-m", "relex_core", "analyze", str(run_folder), "--out",
                             str(tmp_path / "out"), "--device", "cuda", "--cache-dir", str(tmp_path / "cache"),
                             "--quiet"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "CUDA is not available, using the CPU" in result.stderr
    on_cpu = compute_gram(open_run(run_folder), cache_dir=tmp_path / "cache-cpu", progress=False)
    from_fallback = compute_gram(open_run(run_folder), cache_dir=tmp_path / "cache", progress=False)
    assert from_fallback.from_cache and np.array_equal(from_fallback.gram, on_cpu.gram)
