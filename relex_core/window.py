"""Window maths: pure functions on stacked per-tensor Gram matrices (see docs/design.md).

Every function takes numpy arrays with a leading tensor axis `n` and works on all tensors at
once, so a window change for hundreds of tensors is a handful of batched LAPACK calls.
Shapes: T = checkpoints in the window, N = checkpoints in the run, k = rank.
Nothing here reads weights: the directions v_k are never materialised, only their
coordinates U in the span of the window's deltas.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import lapack, threads

# Components with σ_k ≤ RELATIVE_SIGMA_FLOOR·σ_1 carry no direction: eigenvalues of a Gram are
# exact to ~1e-16·λ_1, so singular values below ~1e-8·σ_1 are numerical noise.
RELATIVE_SIGMA_FLOOR = 1e-6


@dataclass(frozen=True)
class Decomposition:
    """Top eigenpairs of the window Gram: G[W, W] = U diag(σ²) Uᵀ, σ descending.

    sigma: (n, c) the c largest singular values of the window's trajectory matrix (c ≤ T).
    basis: (n, T, c) U, columns sign-fixed so c_k at the window's last checkpoint is ≥ 0.
    active: (n, c) components that carry a direction (σ_k > floor·σ_1, σ_1 > 0).
    total_energy: (n,) Σ_k σ_k² = trace G[W, W] = Σ_t ‖Δ_t‖², known without the full spectrum.
    """
    sigma: np.ndarray
    basis: np.ndarray
    active: np.ndarray
    total_energy: np.ndarray


def decompose(gram_window: np.ndarray, components: int | None = None) -> Decomposition:
    """Eigendecomposition of (n, T, T) window Grams, the top `components` (default all), descending.

    Only the top few pairs are needed for fits, weights and backtests; asking for them alone
    (LAPACK's MRRR on a subset) halves the cost, which dominates a window change.
    """
    n_tensors, size, _ = gram_window.shape
    count = size if components is None else max(1, min(components, size))
    eigenvalues, vectors = _top_eigenpairs(gram_window, count)
    sigma = np.sqrt(np.clip(eigenvalues, 0.0, None))
    # Sign convention: c_k(last) = σ_k U[last, k] ≥ 0, so slopes mean the same across tensors.
    signs = np.where(vectors[:, -1:, :] < 0, -1.0, 1.0)
    basis = vectors * signs
    active = (sigma > RELATIVE_SIGMA_FLOOR * sigma[:, :1]) & (sigma[:, :1] > 0)
    total_energy = np.clip(np.trace(gram_window, axis1=1, axis2=2), 0.0, None)
    return Decomposition(sigma=sigma, basis=np.ascontiguousarray(basis), active=active, total_energy=total_energy)


def _top_eigenpairs(gram_window: np.ndarray, count: int):
    """(n, count) eigenvalues and (n, T, count) eigenvectors, largest first.

    Tensors are split over the cores, each LAPACK call on one OpenBLAS thread. The subset
    solver is dsyevr called without the GIL (relex_core.lapack); the full spectrum is numpy's
    batched eigh, which releases the GIL itself.
    """
    size = gram_window.shape[1]
    if count < size:
        values, vectors = lapack.top_eigenpairs(gram_window, count)
        return values[:, ::-1], vectors[:, :, ::-1]
    threads.configure()
    workers = min(threads.cores(), len(gram_window)) or 1
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(np.linalg.eigh, np.array_split(gram_window, workers)))
    values = np.concatenate([values for values, _ in results])
    vectors = np.concatenate([vectors for _, vectors in results])
    return values[:, ::-1], vectors[:, :, ::-1]


def energy_fraction(decomposition: Decomposition, rank: int) -> np.ndarray:
    """(n,) share of Σσ² in the top `rank` components (NaN for a tensor that never moved)."""
    top = (decomposition.sigma[:, :rank] ** 2).sum(axis=1)
    total = decomposition.total_energy
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.minimum(top / total, 1.0), np.nan)


def coefficients(decomposition: Decomposition, gram_rows: np.ndarray, rank: int) -> np.ndarray:
    """(n, k, N) c_k(i) = <Δ_i, v_k> = Σ_t U[t, k] G[t, i] / σ_k for every checkpoint i.

    gram_rows is G[W, :], shape (n, T, N). Inactive components get coefficient 0.
    """
    basis = decomposition.basis[:, :, :rank]
    sigma = decomposition.sigma[:, :rank]
    projected = np.einsum("ntk,ntj->nkj", basis, gram_rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = projected / sigma[:, :, None]
    return np.where(decomposition.active[:, :rank, None], scaled, 0.0)


@dataclass(frozen=True)
class TrendFit:
    """Least-squares polynomial c ≈ Σ_j beta_j x^j with x = (step − center) / scale.

    Centering and scaling the step axis keeps the normal equations well conditioned at
    real step numbers (thousands); slope and intercept are given back on the real axis.
    beta: (..., degree + 1); r2: (...) on the fitted points (NaN where the values are constant).
    """
    beta: np.ndarray
    center: float
    scale: float
    r2: np.ndarray

    @property
    def degree(self) -> int:
        return self.beta.shape[-1] - 1

    def predict(self, steps) -> np.ndarray:
        """(..., S) fitted values at the given steps (any steps, inside the window or not)."""
        return self.beta @ _design(np.asarray(steps, dtype=np.float64), self.center, self.scale, self.degree).T

    @property
    def slope(self) -> np.ndarray:
        """d c / d step on the real axis (for degree 2: the slope at the window's centre)."""
        return self.beta[..., 1] / self.scale

    @property
    def intercept(self) -> np.ndarray:
        """Fitted value at step 0 (degree 1: the line's intercept on the real step axis)."""
        return self.predict([0.0])[..., 0]


def _design(steps: np.ndarray, center: float, scale: float, degree: int) -> np.ndarray:
    x = (steps - center) / scale
    return np.stack([x**power for power in range(degree + 1)], axis=-1)


def fit_trend(steps, values: np.ndarray, degree: int = 1) -> TrendFit:
    """OLS fit, with intercept, of values (..., T) on real step numbers (T,)."""
    steps = np.asarray(steps, dtype=np.float64)
    if len(steps) <= degree:
        raise ValueError(f"a degree-{degree} fit needs more than {degree} points, got {len(steps)}")
    center = float(steps.mean())
    scale = float(np.abs(steps - center).max()) or 1.0
    design = _design(steps, center, scale, degree)
    beta = values @ np.linalg.pinv(design).T
    residual = values - beta @ design.T
    total = ((values - values.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(total > 0, 1.0 - (residual**2).sum(axis=-1) / total, np.nan)
    return TrendFit(beta=beta, center=center, scale=scale, r2=r2)


def checkpoint_weights(decomposition: Decomposition, projections: np.ndarray) -> np.ndarray:
    """(n, T, S) w with δ̂ = Σ_t w_t Δ_t for projections p (n, k, S) on the top-k directions.

    w_t = Σ_k p_k U[t, k] / σ_k, because v_k = Σ_t U[t, k] Δ_t / σ_k.
    """
    rank = projections.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        inverse_sigma = np.where(decomposition.active[:, :rank], 1.0 / decomposition.sigma[:, :rank], 0.0)
    return np.einsum("ntk,nk,nks->nts", decomposition.basis[:, :, :rank], inverse_sigma, projections)


@dataclass(frozen=True)
class PredictionProducts:
    """Inner products that give errors and cosines: ‖pred‖², <pred, Δ_i>, ‖Δ_i‖², each (n, S).

    Sum them over tensors before taking ratios, for layer or whole-model figures.
    """
    prediction_sq: np.ndarray
    dot: np.ndarray
    target_sq: np.ndarray

    def summed(self, group_codes=None, n_groups: int = 1) -> "PredictionProducts":
        """Sum over all tensors (group_codes=None) or per integer group code: (n_groups, S)."""
        if group_codes is None:
            group_codes = np.zeros(self.dot.shape[0], dtype=np.int64)
        summed = [np.zeros((n_groups, self.dot.shape[1])) for _ in range(3)]
        for total, array in zip(summed, (self.prediction_sq, self.dot, self.target_sq)):
            np.add.at(total, np.asarray(group_codes), array)
        return PredictionProducts(*summed)

    @property
    def relative_error(self) -> np.ndarray:
        """‖pred − Δ_i‖ / ‖Δ_i‖."""
        squared_error = np.clip(self.prediction_sq - 2 * self.dot + self.target_sq, 0.0, None)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(squared_error / self.target_sq)

    @property
    def cosine(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.dot / np.sqrt(self.prediction_sq * self.target_sq)


def relex_products(projections: np.ndarray, target_coefficients: np.ndarray,
                   target_sq: np.ndarray) -> PredictionProducts:
    """Rank-k prediction Σ p_k v_k against Δ_i: ‖pred‖² = Σ p², <pred, Δ_i> = Σ p c(i).

    projections, target_coefficients: (n, k, S); target_sq = G[i, i]: (n, S).
    """
    return PredictionProducts(prediction_sq=(projections**2).sum(axis=1),
                              dot=(projections * target_coefficients).sum(axis=1), target_sq=target_sq)


def scaled_last_products(scale: np.ndarray, last_sq: np.ndarray, last_dot: np.ndarray,
                         target_sq: np.ndarray) -> PredictionProducts:
    """Prediction α·Δ_L: 'last' is α = 1, 'linear' (base→last line) is α = s_i / s_L.

    scale: (S,); last_sq = G[L, L]: (n,); last_dot = G[L, i]: (n, S); target_sq: (n, S).
    """
    return PredictionProducts(prediction_sq=scale[None, :] ** 2 * last_sq[:, None],
                              dot=scale[None, :] * last_dot, target_sq=target_sq)


def direction_overlap(first: Decomposition, second: Decomposition, gram_cross: np.ndarray) -> np.ndarray:
    """(n,) |<v_1(W1), v_1(W2)>| = |U1[:, 0]ᵀ G[W1, W2] U2[:, 0]| / (σ_1(W1) σ_1(W2)).

    gram_cross is G[W1, W2], shape (n, T1, T2). NaN for tensors without a direction.
    """
    numerator = np.einsum("na,nab,nb->n", first.basis[:, :, 0], gram_cross, second.basis[:, :, 0])
    denominator = first.sigma[:, 0] * second.sigma[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, np.abs(numerator) / denominator, np.nan)
