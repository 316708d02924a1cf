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


def principal_cosines(first: Decomposition, second: Decomposition, gram_cross: np.ndarray,
                      rank: int) -> np.ndarray:
    """(n, rank) cosines of the principal angles between two windows' rank-k subspaces, descending.

    With V_a = Δ_{W_a}ᵀ U_a Σ_a⁻¹ (orthonormal columns, never formed), V_1ᵀ V_2 =
    Σ_1⁻¹ U_1ᵀ G[W1, W2] U_2 Σ_2⁻¹, whose singular values are the cosines. gram_cross is G[W1, W2],
    (n, T1, T2). Components without a direction are left out: the cosines past the smaller number
    of directions of the two windows are NaN (all of them for a tensor that never moved).
    """
    def scaled(decomposition):
        sigma = decomposition.sigma[:, :rank]
        with np.errstate(invalid="ignore", divide="ignore"):
            inverse = np.where(decomposition.active[:, :rank], 1.0 / sigma, 0.0)
        return decomposition.basis[:, :, :rank] * inverse[:, None, :]

    cross = np.einsum("nak,nab,nbj->nkj", scaled(first), gram_cross, scaled(second))
    cosines = np.clip(np.linalg.svd(cross, compute_uv=False), 0.0, 1.0)  # rounding can pass 1 by an ulp
    directions = np.minimum(first.active[:, :rank].sum(axis=1), second.active[:, :rank].sum(axis=1))
    return np.where(np.arange(cosines.shape[1])[None, :] < directions[:, None], cosines, np.nan)


def outside_energy(squared_norm: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """‖x‖² − Σ_k <x, v_k>²: the energy of x outside the window's rank-k subspace, (n, S).

    squared_norm: ‖x‖² (n, S); coefficients: <x, v_k> (n, k, S). For x = Δ_i this is what the
    rank-k projection discards, G[i, i] − Σ_k c_k(i)²: the "noise" RELEX's denoising removes.
    Clipped at 0, where cancellation leaves −1e-16·‖x‖².
    """
    return np.clip(squared_norm - (coefficients**2).sum(axis=1), 0.0, None)
