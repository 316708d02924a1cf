"""Per-matrix view: the singular values of one update matrix ΔW = θ_i − θ_0 (2-D tensors only).

The trajectory spectrum (window.py) says how many directions the *sequence* of updates uses;
this one says how many directions a *single* update matrix uses. Only the top k singular
values are computed (randomized SVD for big matrices), and ‖ΔW‖²_F = G[i, i] comes from the
Gram, so the rank-1 energy σ1²/‖ΔW‖²_F and the stable rank ‖ΔW‖²_F/σ1² need no full SVD.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.utils.extmath import randomized_svd

from . import threads
from .errors import RelexError
from .gram import RunGram
from .stream import RunLayout, WorkItem, open_layout, read_rows

# Below this many elements an exact SVD takes well under a second and has no sampling error.
EXACT_SVD_MAX_ELEMENTS = 2**20


@dataclass(frozen=True)
class MatrixSpectrum:
    """Top-k singular values of one matrix and its squared Frobenius norm.

    sigma: (k,) descending. frobenius_sq: ‖M‖²_F = Σ of *all* σ², so shares are exact
    even though only k singular values were computed.
    """
    sigma: np.ndarray
    frobenius_sq: float

    @property
    def energy_share(self) -> np.ndarray:
        """σ_j² / ‖M‖²_F for each computed singular value (NaN for a zero matrix)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sigma**2 / self.frobenius_sq if self.frobenius_sq > 0 else np.full_like(self.sigma, np.nan)

    @property
    def energy_rank1(self) -> float:
        """σ1² / ‖M‖²_F: 1 for a rank-1 update, 1/rank for a flat one."""
        return float(self.energy_share[0])

    @property
    def stable_rank(self) -> float:
        """‖M‖²_F / σ1²: a smooth count of the directions the matrix uses (NaN for a zero matrix)."""
        return float(self.frobenius_sq / self.sigma[0] ** 2) if self.sigma[0] > 0 else float("nan")


def top_singular_values(matrix, k: int, *, frobenius_sq: float | None = None, method: str = "auto",
                        n_iter: int = 7, seed: int = 0) -> MatrixSpectrum:
    """The k largest singular values of a 2-D matrix.

    method: 'exact' (LAPACK), 'randomized' (Halko et al. with n_iter power iterations, which
    make the top values accurate for the fast-decaying spectra of RL updates), or 'auto'
    (exact up to EXACT_SVD_MAX_ELEMENTS elements). frobenius_sq: pass G[i, i] when known.
    """
    threads.configure()  # the SVD's BLAS calls run on one thread, as everywhere in relex
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {matrix.shape}")
    k = max(1, min(int(k), min(matrix.shape)))
    if frobenius_sq is None:
        frobenius_sq = float(np.square(matrix).sum())
    if method == "auto":
        method = "exact" if matrix.size <= EXACT_SVD_MAX_ELEMENTS else "randomized"
    if method == "exact":
        sigma = np.linalg.svd(matrix, compute_uv=False)[:k]
    elif method == "randomized":
        _, sigma, _ = randomized_svd(matrix, n_components=k, n_oversamples=max(10, k), n_iter=n_iter,
                                     random_state=seed)
    else:
        raise ValueError(f"method must be 'auto', 'exact' or 'randomized', not {method!r}")
    return MatrixSpectrum(sigma=np.sort(np.asarray(sigma, dtype=np.float64))[::-1].copy(),
                          frobenius_sq=float(frobenius_sq))


def read_delta(run_gram: RunGram, tensor: str, step: int) -> np.ndarray:
    """ΔW = θ_step − θ_0 of one tensor as float64, read from the two checkpoints only."""
    with _step_layout(run_gram, step) as layout:
        return _read_delta(layout, tensor)


def _step_layout(run_gram: RunGram, step: int) -> RunLayout:
    """The base and the checkpoint at `step`, opened and checked the way every pass opens them."""
    return open_layout(run_gram.run, checkpoints=run_gram.index_of_steps([step]))


def _read_delta(layout: RunLayout, tensor: str) -> np.ndarray:
    info = layout.base.tensors[tensor]
    values = read_rows(layout, WorkItem(tensor, 0, info.rows)).to(torch.float64)  # θ_0 and θ_step, exact
    return (values[1] - values[0]).reshape(info.shape).numpy()


def _matrix_row(run_gram: RunGram, tensor: str) -> int:
    if tensor not in run_gram.names:
        raise RelexError("tensor is not among the analysed tensors of this run", path=run_gram.run.source,
                         tensor=tensor)
    row = run_gram.names.index(tensor)
    if len(run_gram.shapes[row]) != 2:
        raise RelexError(f"the update-matrix spectrum needs a 2-D tensor, this one has shape "
                         f"{list(run_gram.shapes[row])}", path=run_gram.run.source, tensor=tensor)
    return row


def delta_spectrum_frame(run_gram: RunGram, tensor: str, step: int, k: int = 16, *, method: str = "auto",
                         seed: int = 0) -> pd.DataFrame:
    """Top-k singular values of ΔW = θ_step − θ_0 for one 2-D tensor of the run.

    Columns: index (1…k), sigma, energy_share (σ_j²/‖ΔW‖²_F), cumulative_share.
    attrs: tensor, step, frobenius_sq (= G[i, i]), energy_rank1 (σ1²/‖ΔW‖²_F), stable_rank (‖ΔW‖²_F/σ1²).
    """
    _matrix_row(run_gram, tensor)
    with _step_layout(run_gram, step) as layout:
        return _spectrum_frame(run_gram, layout, tensor, step, k, method, seed)


def _spectrum_frame(run_gram: RunGram, layout: RunLayout, tensor: str, step: int, k: int, method: str,
                    seed: int) -> pd.DataFrame:
    row, position = _matrix_row(run_gram, tensor), int(run_gram.index_of_steps([step])[0])
    spectrum = top_singular_values(_read_delta(layout, tensor), k,
                                   frobenius_sq=float(run_gram.gram[row, position, position]), method=method,
                                   seed=seed)
    share = spectrum.energy_share
    frame = pd.DataFrame({"index": np.arange(1, len(spectrum.sigma) + 1), "sigma": spectrum.sigma,
                          "energy_share": share, "cumulative_share": np.cumsum(share)})
    frame.attrs.update(tensor=tensor, step=int(step), frobenius_sq=spectrum.frobenius_sq,
                       energy_rank1=spectrum.energy_rank1, stable_rank=spectrum.stable_rank)
    return frame


def update_spectra_frame(run_gram: RunGram, step: int, k: int = 8, *, method: str = "auto") -> pd.DataFrame:
    """The per-matrix view of every 2-D tensor at one checkpoint (reads θ_0 and θ_step once more).

    Columns: tensor, layer, module, step, sigma_1 … sigma_k of ΔW, energy_rank1 (σ1²/‖ΔW‖²_F),
    stable_rank (‖ΔW‖²_F/σ1²), frobenius_norm (sqrt G[i, i]).
    """
    records = []
    with _step_layout(run_gram, step) as layout:
        for name, shape, layer, module in zip(run_gram.names, run_gram.shapes, run_gram.layers, run_gram.modules):
            if len(shape) != 2:
                continue
            spectrum = _spectrum_frame(run_gram, layout, name, step, min(k, *shape), method, 0)
            record = {"tensor": name, "layer": layer, "module": module, "step": int(step)}
            record.update({f"sigma_{index}": sigma for index, sigma in zip(spectrum["index"], spectrum["sigma"])})
            record.update(energy_rank1=spectrum.attrs["energy_rank1"], stable_rank=spectrum.attrs["stable_rank"],
                          frobenius_norm=float(np.sqrt(spectrum.attrs["frobenius_sq"])))
            records.append(record)
    frame = pd.DataFrame.from_records(records)
    return frame.astype({"layer": "Int64"}) if len(frame) else frame
