"""float64 → bf16 / fp16 / fp32 rounding: correct (to nearest, ties to even) where torch's cast is not."""

import numpy as np
import pytest
import torch

from relex_core.rounding import round_to

from .brute_force import correctly_rounded


def near_ties(dtype: torch.dtype) -> torch.Tensor:
    """float64 values a hair beside halfway points of dtype, where rounding through float32 first goes wrong."""
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(20_000, generator=generator, dtype=torch.float64) * 10.0 ** torch.randint(
        -4, 3, (20_000,), generator=generator)
    bits = int(-np.log2(torch.finfo(dtype).eps))
    grid = correctly_rounded(values.numpy(), dtype)
    halfway = grid + np.sign(grid) * 2.0 ** (np.floor(np.log2(np.abs(grid))) - bits - 1)
    return torch.from_numpy(np.concatenate([halfway * (1 + 2.0**-40), halfway * (1 - 2.0**-40), halfway]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_round_to_rounds_float64_correctly_even_next_to_ties(dtype):
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(20_000, generator=generator, dtype=torch.float64) * 10.0 ** torch.randint(
        -4, 3, (20_000,), generator=generator)
    # and float16's subnormals, whose spacing is fixed at 2⁻²⁴
    subnormal_ties = torch.from_numpy((np.arange(-900, 900) + 0.5) * 2.0**-24 * (1 + np.tile([2.0**-40, -2.0**-40], 900)))
    for sample in (values, near_ties(dtype), subnormal_ties):
        assert np.array_equal(round_to(sample, dtype).to(torch.float64).numpy(),
                              correctly_rounded(sample.numpy(), dtype))
    special = torch.tensor([0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 1e-300, -1e-300], dtype=torch.float64)
    rounded = round_to(special, dtype).to(torch.float64)
    assert rounded[4].isnan()
    kept = [0, 1, 2, 3, 5, 6, 7, 8]
    assert rounded[kept].tolist() == [0.0, -0.0, np.inf, -np.inf, np.inf, -np.inf, 0.0, -0.0]
    assert torch.signbit(rounded[kept]).tolist() == [False, True, False, True, False, True, False, True]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_s_own_cast_rounds_twice_and_misses_near_ties(dtype):
    """Why the module exists: float64 → float32 → dtype lands on the wrong neighbour beside ties."""
    sample = near_ties(dtype)
    by_torch = sample.to(dtype).to(torch.float64).numpy()
    correct = correctly_rounded(sample.numpy(), dtype)
    assert (by_torch != correct).sum() > 1000
    assert np.array_equal(round_to(sample, dtype).to(torch.float64).numpy(), correct)


def test_shapes_and_non_contiguous_input_are_kept():
    values = torch.randn(6, 40, dtype=torch.float64).T  # a transposed view
    rounded = round_to(values, torch.bfloat16)
    assert rounded.shape == (40, 6) and rounded.dtype == torch.bfloat16
    assert np.array_equal(rounded.to(torch.float64).numpy(), correctly_rounded(values.numpy(), torch.bfloat16))

