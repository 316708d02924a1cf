"""Analysis: assemble the window maths into pandas DataFrames with documented columns.

    run = open_run("runs/my-grpo")
    run_gram = compute_gram(run)                       # one streaming pass (or the cache)
    fit = WindowFit(run_gram, window="0:400", rank=1)  # Gram-only maths, milliseconds
    fit.tensors_frame(); fit.summary_frame("module"); fit.backtest_frame()
"""

import numpy as np
import pandas as pd

from . import window as maths
from .errors import RelexError
from .gram import RunGram
from .options import FIT_NAMES, parse_window  # noqa: F401  (parse_window is public here too)

METHODS = ("relex", "last", "linear")


def window_positions(steps: np.ndarray, window) -> np.ndarray:
    """Positions of the run's checkpoints (base excluded) whose step lies in the window."""
    first, last = parse_window(window)
    inside = np.ones(len(steps), dtype=bool)
    if first is not None:
        inside &= steps >= first
    if last is not None:
        inside &= steps <= last
    positions = np.flatnonzero(inside)
    if len(positions) < 2:
        raise RelexError(f"window {first if first is not None else ''}:{last if last is not None else ''} "
                         f"holds {len(positions)} checkpoint(s); at least two are needed "
                         f"(steps after the base: {steps[0]}…{steps[-1]})")
    return positions


def _as_slice(positions: np.ndarray) -> slice:
    """The window's positions as a basic slice, so the (n, N, N) Gram is indexed by a view, not a
    fancy-index copy (10–17 ms for 290 tensors × 99 checkpoints). A window is a step range and
    steps are sorted, so its positions are always contiguous."""
    first, last = int(positions[0]), int(positions[-1])
    if last - first + 1 != len(positions):
        raise ValueError(f"window positions {first}…{last} are not contiguous: are the run's steps sorted?")
    return slice(first, last + 1)


class WindowFit:
    """The rank-k RELEX fit of one observation window, from the Gram alone.

    Parameters: run_gram (from `compute_gram`), window ('A:B', inclusive; default every
    checkpoint after the base; the base is never part of it), rank k, degree (1 = line).

    Fitted attributes (n = tensors, k = rank, T = window checkpoints, N = run checkpoints):
        window_positions (T,), window_slice (the same positions as a slice), window_steps (T,),
        decomposition (σ, U per tensor), coefficients (n, k, N) for every checkpoint, trend (the
        fit of c_k on real steps, with r2 (n, k), slope (n, k), intercept (n, k)), energy_rank1 (n,),
        energy_rank_k (n,).
    """

    def __init__(self, run_gram: RunGram, window=None, rank: int = 1, degree: int = 1):
        self.run_gram = run_gram
        self.window_positions = window_positions(run_gram.steps, window)
        self.window_steps = run_gram.steps[self.window_positions]
        size = len(self.window_positions)
        if not 1 <= rank <= size:
            raise RelexError(f"rank {rank} must be between 1 and the window size {size}")
        if degree not in FIT_NAMES or size <= degree:
            raise RelexError(f"fit degree {degree} needs one of {sorted(FIT_NAMES)} and more than {degree} "
                             "window checkpoints")
        self.rank, self.degree = rank, degree
        self.window_slice = _as_slice(self.window_positions)
        gram_rows = run_gram.gram[:, self.window_slice, :]
        # sigma_2 is reported even at rank 1, so at least two components are solved for.
        self.decomposition = maths.decompose(gram_rows[:, :, self.window_slice], components=max(rank, 2))
        self.coefficients = maths.coefficients(self.decomposition, gram_rows, rank)
        self.trend = maths.fit_trend(self.window_steps, self.coefficients[:, :, self.window_slice], degree)
        self.energy_rank1 = maths.energy_fraction(self.decomposition, 1)
        self.energy_rank_k = maths.energy_fraction(self.decomposition, rank)

    # ---------------------------------------------------------------- predictions
    @property
    def last_position(self) -> int:
        return int(self.window_positions[-1])

    @property
    def target_positions(self) -> np.ndarray:
        """Checkpoints after the window: the held-out targets of the backtest."""
        return np.arange(self.last_position + 1, len(self.run_gram.steps))

    def projections(self, target_steps) -> np.ndarray:
        """(n, k, S) p_k(s) = fitted coefficient at each target step; 0 for tensors without direction."""
        predicted = self.trend.predict(np.atleast_1d(np.asarray(target_steps, dtype=np.float64)))
        return np.where(self.decomposition.active[:, :self.rank, None], predicted, 0.0)

    def weights(self, target_steps, method: str = "relex") -> np.ndarray:
        """(n, T, S) weights w with θ̂(s) = θ_0 + Σ_t w_t (θ_t − θ_0) over the window's checkpoints."""
        target_steps = np.atleast_1d(np.asarray(target_steps, dtype=np.float64))
        if method == "relex":
            return maths.checkpoint_weights(self.decomposition, self.projections(target_steps))
        if method == "linear":
            weights = np.zeros((len(self.run_gram.names), len(self.window_positions), len(target_steps)))
            weights[:, -1, :] = target_steps / self.window_steps[-1]
            return weights
        raise RelexError(f"unknown method '{method}' (use relex or linear)")

    def reconstruction_weights(self, step: int) -> np.ndarray:
        """(n, T) weights of the rank-k projection of an observed checkpoint onto the window's subspace."""
        position = self.run_gram.index_of_steps([step])
        return maths.checkpoint_weights(self.decomposition, self.coefficients[:, :, position])[:, :, 0]

    def prediction_products(self, method: str, target_positions=None) -> maths.PredictionProducts:
        """Per-tensor inner products of a method's prediction with each target checkpoint."""
        targets = self.target_positions if target_positions is None else np.asarray(target_positions)
        gram = self.run_gram.gram
        target_sq = gram[:, targets, targets]
        target_steps = self.run_gram.steps[targets].astype(np.float64)
        if method == "relex":
            return maths.relex_products(self.projections(target_steps), self.coefficients[:, :, targets], target_sq)
        last = self.last_position
        scale = np.ones(len(targets)) if method == "last" else target_steps / float(self.run_gram.steps[last])
        if method not in ("last", "linear"):
            raise RelexError(f"unknown method '{method}' (use {', '.join(METHODS)})")
        return maths.scaled_last_products(scale, gram[:, last, last], gram[:, last, targets], target_sq)

    # ---------------------------------------------------------------- frames
    def _labels(self) -> pd.DataFrame:
        run_gram = self.run_gram
        return pd.DataFrame({"tensor": run_gram.names, "layer": pd.array(run_gram.layers, dtype="Int64"),
                             "module": run_gram.modules, "numel": run_gram.numels})

    def tensors_frame(self) -> pd.DataFrame:
        """One row per tensor.

        Columns: tensor, layer (nullable int), module, numel, dtype, sigma_1, sigma_2 (window
        trajectory singular values), energy_rank1, energy_rank_k (share of Σσ² in the top 1 / k),
        slope, intercept (fit of c_1 on real steps, units of weight-norm per step), r2 (of c_1 in
        the window), r2_rank_k (pooled over the k components), update_norm (‖Δ‖ at the window's
        last checkpoint), relative_update (update_norm / ‖θ_0‖).
        """
        sigma = self.decomposition.sigma
        frame = self._labels()
        frame["dtype"] = self.run_gram.dtypes
        frame["sigma_1"] = sigma[:, 0]
        frame["sigma_2"] = sigma[:, 1] if sigma.shape[1] > 1 else 0.0
        frame["energy_rank1"] = self.energy_rank1
        frame["energy_rank_k"] = self.energy_rank_k
        frame["slope"] = self.trend.slope[:, 0]
        frame["intercept"] = self.trend.intercept[:, 0]
        frame["r2"] = self.trend.r2[:, 0]
        frame["r2_rank_k"] = self._pooled_r2(np.arange(len(self.run_gram.names)))
        last = self.last_position
        frame["update_norm"] = np.sqrt(self.run_gram.gram[:, last, last])
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["relative_update"] = frame["update_norm"] / np.sqrt(self.run_gram.base_sq_norm)
        return frame

    def _sums_of_squares(self):
        """Per tensor and component: residual and total sums of squares of the window fit."""
        values = self.coefficients[:, :, self.window_slice]
        residual = ((values - self.trend.predict(self.window_steps)) ** 2).sum(axis=-1)
        total = ((values - values.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
        return residual, total

    def _pooled_r2(self, rows) -> np.ndarray:
        residual, total = self._sums_of_squares()
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1.0 - residual[rows].sum(axis=1) / total[rows].sum(axis=1)

    def summary_frame(self, by: str = "model") -> pd.DataFrame:
        """Aggregates by 'layer', 'module' or 'model': sums of numerators and denominators, never mean ratios.

        Columns: the group column (layer or module; none for model), tensors, numel,
        energy_rank1 (Σλ_1 / Σλ), energy_rank_k, r2 (1 − ΣSS_res / ΣSS_tot of c_1),
        update_norm (sqrt Σ‖Δ_last‖²), relative_update (update_norm / sqrt Σ‖θ_0‖²).
        """
        squares = self.decomposition.sigma**2
        residual, total = self._sums_of_squares()
        last = self.last_position
        parts = pd.DataFrame({
            "numel": self.run_gram.numels, "lambda_1": squares[:, 0], "lambda_k": squares[:, :self.rank].sum(axis=1),
            "lambda_total": self.decomposition.total_energy, "ss_residual": residual[:, 0], "ss_total": total[:, 0],
            "update_sq": self.run_gram.gram[:, last, last], "base_sq": self.run_gram.base_sq_norm})
        labels = self._labels()
        if by == "model":
            grouped = parts.sum().to_frame().T
            grouped.insert(0, "tensors", len(parts))
        elif by in ("layer", "module"):
            parts[by] = labels[by]
            grouped = parts.groupby(by, dropna=False, sort=True).agg(
                tensors=("numel", "size"), **{column: (column, "sum") for column in parts.columns if column != by})
            grouped = grouped.reset_index()
        else:
            raise ValueError(f"by must be 'layer', 'module' or 'model', not {by!r}")
        with np.errstate(invalid="ignore", divide="ignore"):
            grouped["energy_rank1"] = grouped["lambda_1"] / grouped["lambda_total"]
            grouped["energy_rank_k"] = grouped["lambda_k"] / grouped["lambda_total"]
            grouped["r2"] = 1.0 - grouped["ss_residual"] / grouped["ss_total"]
            grouped["update_norm"] = np.sqrt(grouped["update_sq"])
            grouped["relative_update"] = grouped["update_norm"] / np.sqrt(grouped["base_sq"])
        keep = [column for column in (by, "tensors", "numel", "energy_rank1", "energy_rank_k", "r2",
                                      "update_norm", "relative_update") if column in grouped.columns]
        return grouped[keep]

    def coefficients_frame(self, tensors=None) -> pd.DataFrame:
        """Long table of coefficients for every checkpoint (in and after the window).

        Columns: tensor, component (1…k), step, coefficient c_k(step), fitted (trend value),
        residual (coefficient − fitted), in_window (bool).
        """
        names = self.run_gram.names
        rows = np.arange(len(names)) if tensors is None else np.array([names.index(name) for name in tensors])
        steps = self.run_gram.steps
        fitted = self.trend.predict(steps)[rows]
        values = self.coefficients[rows]
        in_window = np.isin(np.arange(len(steps)), self.window_positions)
        n_rows, rank, n_steps = values.shape
        return pd.DataFrame({
            "tensor": np.repeat(np.array(names, dtype=object)[rows], rank * n_steps),
            "component": np.tile(np.repeat(np.arange(1, rank + 1), n_steps), n_rows),
            "step": np.tile(steps, n_rows * rank), "coefficient": values.ravel(), "fitted": fitted.ravel(),
            "residual": (values - fitted).ravel(), "in_window": np.tile(in_window, n_rows * rank)})

    def backtest_frame(self, by: str = "model") -> pd.DataFrame:
        """Held-out error against every checkpoint after the window, for relex / last / linear.

        by: 'model' (sums over all tensors), 'layer', 'module' or 'tensor'.
        Columns: [group column], target_step, method, rel_error (‖pred − Δ_i‖ / ‖Δ_i‖), cosine.
        """
        targets = self.target_positions
        target_steps = self.run_gram.steps[targets]
        if by == "model":
            codes, labels = None, None
        elif by == "tensor":
            codes, labels = np.arange(len(self.run_gram.names)), np.array(self.run_gram.names, dtype=object)
        elif by in ("layer", "module"):
            codes, labels = pd.factorize(self._labels()[by], sort=True, use_na_sentinel=False)
        else:
            raise ValueError(f"by must be 'model', 'layer', 'module' or 'tensor', not {by!r}")
        frames = []
        for method in METHODS:
            products = self.prediction_products(method, targets)
            products = products.summed(codes, 1 if labels is None else len(labels))
            frame = pd.DataFrame({"target_step": np.tile(target_steps, len(products.dot)), "method": method,
                                  "rel_error": products.relative_error.ravel(), "cosine": products.cosine.ravel()})
            if labels is not None:
                frame.insert(0, by, labels.repeat(len(targets)))
            frames.append(frame)
        columns = ([by] if by != "model" else []) + ["target_step", "method", "rel_error", "cosine"]
        if not len(targets):
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True)[columns]

    def weights_frame(self, target_step, method: str = "relex") -> pd.DataFrame:
        """How much each observed checkpoint counts in the export: one row per window checkpoint.

        Columns: step, weight_median (over tensors), weight_min, weight_max, weight_model
        (numel-weighted mean over tensors).
        """
        weights = self.weights([target_step], method)[:, :, 0]
        numel = self.run_gram.numels.astype(np.float64)
        return pd.DataFrame({"step": self.window_steps, "weight_median": np.median(weights, axis=0),
                             "weight_min": weights.min(axis=0), "weight_max": weights.max(axis=0),
                             "weight_model": numel @ weights / numel.sum()})


def spectrum_frame(fit: WindowFit) -> pd.DataFrame:
    """Trajectory singular values of every tensor. Columns: tensor, layer, module, index (1…T), sigma."""
    window = fit.window_slice
    sigma = np.sqrt(np.clip(np.linalg.eigvalsh(fit.run_gram.gram[:, window, window])[:, ::-1], 0, None))
    labels = fit._labels()
    n_tensors, size = sigma.shape
    return pd.DataFrame({"tensor": np.repeat(labels["tensor"].to_numpy(), size),
                         "layer": np.repeat(labels["layer"].to_numpy(), size),
                         "module": np.repeat(labels["module"].to_numpy(), size),
                         "index": np.tile(np.arange(1, size + 1), n_tensors), "sigma": sigma.ravel()})


def stability_frame(run_gram: RunGram, window_ends=None, start=None, reference=None) -> pd.DataFrame:
    """Stability of v_1 for growing windows start:end against a reference window (default: all).

    Columns: window_end, overlap_model (Σ_tensors |<σv1, σ'v1'>| / Σ σσ'), overlap_median,
    overlap_min (over tensors with a direction).
    """
    steps = run_gram.steps
    reference_window = _as_slice(window_positions(steps, reference))
    reference_decomposition = maths.decompose(run_gram.gram[:, reference_window, reference_window], 1)
    first = steps[0] if start is None else start
    if window_ends is None:
        window_ends = [step for step in steps if np.sum((steps >= first) & (steps <= step)) >= 2]
    records = []
    for end in window_ends:
        window = _as_slice(window_positions(steps, (first, end)))
        decomposition = maths.decompose(run_gram.gram[:, window, window], 1)
        overlap = maths.direction_overlap(decomposition, reference_decomposition,
                                          run_gram.gram[:, window, reference_window])
        scale = decomposition.sigma[:, 0] * reference_decomposition.sigma[:, 0]
        has_direction = np.isfinite(overlap)
        records.append({"window_end": int(end),
                        "overlap_model": float((overlap[has_direction] * scale[has_direction]).sum()
                                               / scale[has_direction].sum()) if has_direction.any() else np.nan,
                        "overlap_median": float(np.median(overlap[has_direction])) if has_direction.any() else np.nan,
                        "overlap_min": float(overlap[has_direction].min()) if has_direction.any() else np.nan})
    return pd.DataFrame.from_records(records, columns=["window_end", "overlap_model", "overlap_median",
                                                       "overlap_min"])
