"""Correct rounding of float64 values to bf16 and fp16 (to nearest, ties to even).

torch casts float64 to bf16/fp16 through float32: that is two roundings, and the second one
goes wrong where the float32 value lands exactly halfway between two values of the target
type although the float64 value was not halfway (about 1 in 2¹⁴ to 2¹⁷ elements). An export
rounds θ̂ once, here, so that it equals the float64 brute force rounded once.
"""

import numpy as np
import torch

# Bits of a float32 pattern that a cast to the half-width type drops; a tie has exactly the top one set.
_DROPPED_BITS = {torch.bfloat16: 16, torch.float16: 13}
_FLOAT16_SMALLEST_NORMAL = 2.0**-14  # below it float16 drops more bits, so ties look different


def round_to(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float64 → dtype, correctly rounded (to nearest, ties to even).

    The cast through float32 is right except at float32 values that are ties for dtype; those
    few are found from their bit pattern and rounded again, properly. The search runs in numpy,
    whose integer compare and flatnonzero beat torch's mask and nonzero (bench/STUDIES.md).
    """
    if dtype not in _DROPPED_BITS:
        return values.to(dtype)
    values = values.contiguous()  # flat indices below address the values in order
    single = values.to(torch.float32)
    rounded = single.to(dtype)
    dropped = _DROPPED_BITS[dtype]
    single_flat = single.reshape(-1).numpy()
    suspects = (single_flat.view(np.int32) & ((1 << dropped) - 1)) == 1 << (dropped - 1)
    if dtype == torch.float16:
        suspects |= np.abs(single_flat) < _FLOAT16_SMALLEST_NORMAL
    suspects = torch.from_numpy(np.flatnonzero(suspects))
    if suspects.numel():
        rounded.view(-1)[suspects] = _round_through_odd(values.reshape(-1)[suspects]).to(dtype)
    return rounded


def _round_through_odd(values: torch.Tensor) -> torch.Tensor:
    """float64 → float32 rounded *to odd* (an inexact result gets an odd last bit): a later rounding
    to any format with at least two bits fewer is then exactly the correct rounding of `values`."""
    single = values.to(torch.float32)
    residual = values - single.to(torch.float64)  # exact
    bits = single.view(torch.int32)
    move = (residual != 0) & ((bits & 1) == 0) & torch.isfinite(residual)
    outward = (residual > 0) == (bits >= 0)  # towards the value is away from zero
    step = torch.where(outward, 1, -1).to(torch.int32)
    return torch.where(move, bits + step, bits).view(torch.float32)
