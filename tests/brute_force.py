"""Plain float64 reference implementations: stacked deltas, full SVD, lstsq. Slow and obvious on purpose."""

import numpy as np
import torch


def trajectory_svd(deltas: np.ndarray):
    """Full SVD of the (T, d) window trajectory matrix, signs fixed so c_k(last) ≥ 0."""
    _, sigma, vt = np.linalg.svd(deltas, full_matrices=False)
    coefficients_last = deltas[-1] @ vt.T
    signs = np.where(coefficients_last < 0, -1.0, 1.0)
    return sigma, vt * signs[:, None]


def line_fit(steps, values):
    """OLS with intercept: values ≈ slope·step + intercept; returns slope, intercept, r2."""
    design = np.column_stack([np.asarray(steps, dtype=np.float64), np.ones(len(steps))])
    (slope, intercept), *_ = np.linalg.lstsq(design, values, rcond=None)
    residual = values - design @ np.array([slope, intercept])
    r2 = 1 - (residual**2).sum() / ((values - values.mean()) ** 2).sum()
    return slope, intercept, r2


def relex_prediction(window_deltas, window_steps, target_step, rank):
    """δ̂(s) = Σ_k (a_k s + b_k) v_k from the window's stacked deltas."""
    _, directions = trajectory_svd(window_deltas)
    prediction = np.zeros(window_deltas.shape[1])
    for component in range(rank):
        coefficients = window_deltas @ directions[component]
        slope, intercept, _ = line_fit(window_steps, coefficients)
        prediction += (slope * target_step + intercept) * directions[component]
    return prediction


def rank1_drift(steps, dimension, noise, rng):
    """Deltas with known structure: linear drift along one direction plus a random walk."""
    direction = rng.standard_normal(dimension)
    direction /= np.linalg.norm(direction)
    walk = np.cumsum(rng.standard_normal((len(steps), dimension)) * noise / np.sqrt(dimension), axis=0)
    return np.outer(np.asarray(steps, dtype=np.float64) / max(steps), direction) + walk


def correctly_rounded(values: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """float64 values rounded to nearest-even in dtype, by numpy (bf16: 8 significant bits via frexp)."""
    if dtype == torch.bfloat16:
        mantissa, exponent = np.frexp(values)
        return np.ldexp(np.round(mantissa * 2**8) / 2**8, exponent)
    return values.astype({torch.float16: np.float16, torch.float32: np.float32}[dtype]).astype(np.float64)
