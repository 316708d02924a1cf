"""Analysis: assemble the window maths into pandas DataFrames with documented columns.

    run = open_run("runs/my-grpo")
    run_gram = compute_gram(run)                       # one streaming pass (or the cache)
    fit = WindowFit(run_gram, window="0:400", rank=1)  # Gram-only maths, milliseconds
    fit.tensors_frame(); fit.summary_frame("module"); fit.backtest_frame()
"""

import warnings

import numpy as np
import pandas as pd

from . import fits
from . import window as maths
from .errors import RelexError
from .gram import RunGram
from .options import parse_fit, parse_window  # noqa: F401  (parse_window is public here too)

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


def _count_or_none(value, name: str) -> int | None:
    """None, or a whole number ≥ 1 (fit_last, refit_every)."""
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if isinstance(value, bool) or number is None or number != value or number < 1:
        raise RelexError(f"{name} {value!r} must be a whole number ≥ 1")
    return number


def _grid_interval(steps: np.ndarray) -> int:
    """The step interval of evenly spaced window checkpoints (refit_every steps along it)."""
    intervals = np.unique(np.diff(steps))
    if len(intervals) != 1:
        raise RelexError(f"refit_every needs evenly spaced window checkpoints, but steps "
                         f"{steps[0]}…{steps[-1]} come at intervals {', '.join(map(str, intervals[:4]))}"
                         f"{'…' if len(intervals) > 4 else ''}")
    return int(intervals[0])


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

    Parameters:
        run_gram: from `compute_gram`.
        window: 'A:B' in steps, inclusive; default every checkpoint after the base (never in it).
        rank: k, the number of the window's directions kept.
        fit: the trend of each coefficient over real steps: a name ('linear' = 'poly1', 'poly2',
            'poly3', …, 'sin') or an `options.FitSpec` (frozen, hashable).
        fit_last: fit the trend to the window's last W checkpoints only (the subspace still comes
            from the whole window); the official `--window W`. Default: the whole window.
        refit_every: autoregressive extrapolation, the official `--future_extrapolation_window F`
            (see `fits.autoregressive`): the buffer is the fit's checkpoints, it steps one window
            interval at a time and refits every F steps. Needs evenly spaced window checkpoints
            and target steps on their grid.

    Every prediction is a set of coefficients on the window's directions, so an export is the
    weighted sum `weights` of the window's checkpoints whatever the fit. A target inside the
    window gets the fitted, not the observed, coefficient.

    Fitted attributes (n = tensors, k = rank, T = window checkpoints, N = run checkpoints):
        window_positions (T,), window_slice (the same positions as a slice), window_steps (T,),
        fit_spec (FitSpec), fit_name, fit_positions / fit_steps (the checkpoints the trend is
        fitted to), interval (the window's step interval with refit_every, else None),
        decomposition (σ, U per tensor), coefficients (n, k, N) for every checkpoint, trend (the
        fit of c_k on the fit steps, with r2 (n, k), slope (n, k), intercept (n, k); with
        refit_every, the first fit), energy_rank1 (n,), energy_rank_k (n,).
    """

    def __init__(self, run_gram: RunGram, window=None, rank: int = 1, fit="linear", fit_last=None,
                 refit_every=None):
        self.run_gram = run_gram
        self.window_positions = window_positions(run_gram.steps, window)
        self.window_steps = run_gram.steps[self.window_positions]
        size = len(self.window_positions)
        if not 1 <= rank <= size:
            raise RelexError(f"rank {rank} must be between 1 and the window size {size}")
        self.rank = rank
        self.fit_spec = parse_fit(fit)
        self.fit_last = _count_or_none(fit_last, "fit_last")
        self.refit_every = _count_or_none(refit_every, "refit_every")
        if self.fit_last is not None and self.fit_last > size:
            raise RelexError(f"fit_last {self.fit_last} is larger than the window "
                             f"({size} checkpoints, steps {self.window_steps[0]}…{self.window_steps[-1]})")
        self.fit_positions = self.window_positions[-(self.fit_last or size):]
        self.fit_steps = run_gram.steps[self.fit_positions]
        if len(self.fit_positions) < self.fit_spec.minimum_points:
            raise RelexError(f"fit {self.fit_spec.name} needs at least {self.fit_spec.minimum_points} checkpoints "
                             f"to fit, {'fit_last gives' if self.fit_last else 'the window holds'} "
                             f"{len(self.fit_positions)}")
        self.interval = _grid_interval(self.window_steps) if self.refit_every is not None else None
        self.window_slice = _as_slice(self.window_positions)
        gram_rows = run_gram.gram[:, self.window_slice, :]
        # sigma_2 is reported even at rank 1, so at least two components are solved for.
        self.decomposition = maths.decompose(gram_rows[:, :, self.window_slice], components=max(rank, 2))
        self.coefficients = maths.coefficients(self.decomposition, gram_rows, rank)
        self.trend = fits.fit_trend(self.fit_spec, self.fit_steps, self.coefficients[:, :, self.fit_positions])
        self.energy_rank1 = maths.energy_fraction(self.decomposition, 1)
        self.energy_rank_k = maths.energy_fraction(self.decomposition, rank)
        self._path = None  # autoregressive predictions after the window, made on first use

    @property
    def fit_name(self) -> str:
        return self.fit_spec.name

    # ---------------------------------------------------------------- predictions
    @property
    def last_position(self) -> int:
        return int(self.window_positions[-1])

    @property
    def target_positions(self) -> np.ndarray:
        """Checkpoints after the window: the held-out targets of the backtest."""
        return np.arange(self.last_position + 1, len(self.run_gram.steps))

    def fitted_coefficients(self, steps, off_grid: str = "raise") -> np.ndarray:
        """(n, k, S) the trend's coefficient at each step, inside the window or after it.

        With refit_every, steps after the window come from the autoregressive loop, those up to
        the window's end from its first fit; a step off the window's grid raises a RelexError
        (off_grid='raise') or gets NaN (off_grid='nan', for tables of every checkpoint).
        """
        steps = np.atleast_1d(np.asarray(steps, dtype=np.float64))
        values = self.trend.predict(steps)
        if self.refit_every is None:
            return values
        offsets = (steps - self.window_steps[-1]) / self.interval
        on_grid = offsets == np.round(offsets)
        if off_grid == "raise" and not on_grid.all():
            step = steps[~on_grid][0]
            raise RelexError(f"target step {step:g} is not on the window's grid ({self.window_steps[0]}, "
                             f"{self.window_steps[0] + self.interval}, …, every {self.interval} steps), "
                             "which refit_every needs")
        values[:, :, ~on_grid] = np.nan
        later = on_grid & (offsets > 0)
        if later.any():
            ahead = offsets[later].astype(np.int64)
            values[:, :, later] = self._autoregressive_path(int(ahead.max()))[:, :, ahead - 1]
        return values

    def _autoregressive_path(self, count: int) -> np.ndarray:
        """(n, k, ≥ count) autoregressive predictions one interval apart after the window, kept: the
        path to a step is a prefix of the path to any later one, and tables ask for it repeatedly."""
        path = self._path
        if path is None or path.shape[-1] < count:
            path = fits.autoregressive(self.fit_spec, self.fit_steps, self.coefficients[:, :, self.fit_positions],
                                       self.refit_every, count)
            self._path = path
        return path

    def projections(self, target_steps, off_grid: str = "raise") -> np.ndarray:
        """(n, k, S) p_k(s) = fitted coefficient at each target step; 0 for tensors without direction."""
        predicted = self.fitted_coefficients(target_steps, off_grid)
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
            # Later checkpoints off the grid of refit_every have no prediction: NaN, not an error,
            # so that backtests of a run whose spacing changes after the window still show the rest.
            return maths.relex_products(self.projections(target_steps, off_grid="nan"),
                                        self.coefficients[:, :, targets], target_sq)
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
        slope, intercept (trend of c_1 on real steps, units of weight-norm per step; slope at the
        centre of the fitted steps), r2 (of c_1 on the checkpoints the trend is fitted to: the
        window, or its last W with fit_last), r2_rank_k (pooled over the k components),
        r2_after_window, r2_after_window_rank_k (the same for the checkpoints after the window
        against the extrapolated trend; SS_tot around their own mean, as the official plot script;
        NaN with fewer than two), update_norm (‖Δ‖ at the window's last checkpoint),
        relative_update (update_norm / ‖θ_0‖), changed_share (share of the tensor's elements whose
        stored value at the window's last checkpoint differs from the base's; NaN if not counted).
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
        rows = np.arange(len(self.run_gram.names))
        frame["r2_rank_k"] = self._pooled_r2(rows)
        frame["r2_after_window"] = self._pooled_r2(rows, "after", slice(0, 1))
        frame["r2_after_window_rank_k"] = self._pooled_r2(rows, "after")
        last = self.last_position
        frame["update_norm"] = np.sqrt(self.run_gram.gram[:, last, last])
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["relative_update"] = frame["update_norm"] / np.sqrt(self.run_gram.base_sq_norm)
        frame["changed_share"] = self._changed_at_last() / self.run_gram.numels
        return frame

    def _changed_at_last(self) -> np.ndarray:
        """(n,) elements whose stored value differs from the base at the window's last checkpoint."""
        changed = self.run_gram.changed
        if changed is None:
            return np.full(len(self.run_gram.names), np.nan)
        return changed[:, self.last_position].astype(np.float64)

    def _sums_of_squares(self, part: str = "window"):
        """Per tensor and component (n, k): residual and total sums of squares of the trend.

        part 'window': on the checkpoints the trend is fitted to (the window, or its last W);
        'after': on the checkpoints after the window, against the extrapolated trend (those off
        the grid of refit_every are left out). NaN where there are no such checkpoints.
        """
        positions = self.fit_positions if part == "window" else self.target_positions
        fitted = self.fitted_coefficients(self.run_gram.steps[positions], off_grid="nan")
        return fits.sums_of_squares(self.coefficients[:, :, positions], fitted)

    def _pooled_r2(self, rows, part: str = "window", components=None) -> np.ndarray:
        """R² of the rows' trends pooled over the given components (default all k): 1 − ΣSS_res / ΣSS_tot."""
        residual, total = self._sums_of_squares(part)
        components = slice(None) if components is None else components
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1.0 - residual[rows, components].sum(axis=1) / total[rows, components].sum(axis=1)

    def summary_frame(self, by: str = "model") -> pd.DataFrame:
        """Aggregates by 'layer', 'module' or 'model': sums of numerators and denominators, never mean ratios.

        Columns: the group column (layer or module; none for model), tensors, numel,
        energy_rank1 (Σλ_1 / Σλ), energy_rank_k, r2 (1 − ΣSS_res / ΣSS_tot of c_1 on the fitted
        checkpoints), r2_after_window (the same after the window, against the extrapolated trend),
        update_norm (sqrt Σ‖Δ_last‖²), relative_update (update_norm / sqrt Σ‖θ_0‖²), changed_share
        (Σ changed elements / Σ numel at the window's last checkpoint).
        """
        squares = self.decomposition.sigma**2
        residual, total = self._sums_of_squares()
        after_residual, after_total = self._sums_of_squares("after")
        last = self.last_position
        parts = pd.DataFrame({
            "numel": self.run_gram.numels, "lambda_1": squares[:, 0], "lambda_k": squares[:, :self.rank].sum(axis=1),
            "lambda_total": self.decomposition.total_energy, "ss_residual": residual[:, 0], "ss_total": total[:, 0],
            "ss_after_residual": after_residual[:, 0], "ss_after_total": after_total[:, 0],
            "update_sq": self.run_gram.gram[:, last, last], "base_sq": self.run_gram.base_sq_norm,
            "changed": self._changed_at_last()})
        labels = self._labels()
        if by == "model":
            grouped = parts.sum().to_frame().T
            grouped.insert(0, "tensors", len(parts))
        elif by in ("layer", "module"):
            groups = parts.groupby(labels[by].rename(by), dropna=False, sort=True)
            grouped = groups.sum()  # NaN (no checkpoint after the window) counts as 0, as in the model sum
            grouped.insert(0, "tensors", groups.size())
            grouped = grouped.reset_index()
        else:
            raise ValueError(f"by must be 'layer', 'module' or 'model', not {by!r}")
        with np.errstate(invalid="ignore", divide="ignore"):
            grouped["energy_rank1"] = grouped["lambda_1"] / grouped["lambda_total"]
            grouped["energy_rank_k"] = grouped["lambda_k"] / grouped["lambda_total"]
            grouped["r2"] = 1.0 - grouped["ss_residual"] / grouped["ss_total"]
            grouped["r2_after_window"] = 1.0 - grouped["ss_after_residual"] / grouped["ss_after_total"]
            grouped["update_norm"] = np.sqrt(grouped["update_sq"])
            grouped["relative_update"] = grouped["update_norm"] / np.sqrt(grouped["base_sq"])
            grouped["changed_share"] = grouped["changed"] / grouped["numel"]
        if self.run_gram.changed is None:  # groupby's sum turned the missing counts into zeros
            grouped["changed_share"] = np.nan
        keep = [column for column in (by, "tensors", "numel", "energy_rank1", "energy_rank_k", "r2",
                                      "r2_after_window", "update_norm", "relative_update", "changed_share")
                if column in grouped.columns]
        return grouped[keep]

    def coefficients_frame(self, tensors=None) -> pd.DataFrame:
        """Long table of coefficients for every checkpoint (in and after the window).

        Columns: tensor, component (1…k), step, coefficient c_k(step), fitted (trend value; with
        refit_every, the autoregressive prediction after the window, NaN off its grid), residual
        (coefficient − fitted), in_window (bool).
        """
        names = self.run_gram.names
        rows = np.arange(len(names)) if tensors is None else np.array([names.index(name) for name in tensors])
        steps = self.run_gram.steps
        fitted = self.fitted_coefficients(steps, off_grid="nan")[rows]
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
        With refit_every, relex has NaN at checkpoints off the window's grid.
        """
        targets = self.target_positions
        target_steps = self.run_gram.steps[targets]
        codes, labels = self._groups(by)
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

    def _groups(self, by: str):
        """(integer code per tensor, label per group) for 'tensor', 'layer' or 'module'; (None, None) for 'model'."""
        if by == "model":
            return None, None
        if by == "tensor":
            return np.arange(len(self.run_gram.names)), np.array(self.run_gram.names, dtype=object)
        if by in ("layer", "module"):
            return pd.factorize(self._labels()[by], sort=True, use_na_sentinel=False)
        raise ValueError(f"by must be 'model', 'layer', 'module' or 'tensor', not {by!r}")

    def discarded_energy_frame(self, by: str = "model") -> pd.DataFrame:
        """What the rank-k projection discards at every checkpoint, beside the errors of relex and `last`.

        P is the projection on the window's top-k directions; Δ_i = θ_i − θ_0. Squared norms, summed
        over the tensors of a group (by: 'model', 'layer', 'module' or 'tensor'), per checkpoint.
        The relex prediction lies in the subspace, so its error splits exactly into a part inside
        it and the discarded energy of Δ_i; the `last` baseline's error Δ_L − Δ_i has a part outside
        the subspace too, which shows when keeping Δ_L's "noise" helps and when it hurts.

        Columns: [group column], step, part ('before', 'window' or 'after' the window),
        update_sq (‖Δ_i‖²), discarded_sq (‖Δ_i − PΔ_i‖² = ‖Δ_i‖² − Σ_k c_k(i)²), discarded_share
        (discarded_sq / update_sq), relex_error_sq (‖δ̂(s_i) − Δ_i‖², the fitted trend at s_i inside
        the window, the extrapolation after it; NaN off the grid of refit_every), relex_error_inside_sq
        (Σ_k (p_k − c_k(i))²; relex_error_sq = relex_error_inside_sq + discarded_sq), last_error_sq
        (‖Δ_L − Δ_i‖², L the window's last checkpoint), last_error_inside_sq (Σ_k (c_k(L) − c_k(i))²),
        last_error_outside_sq (last_error_sq − last_error_inside_sq).
        """
        gram, steps = self.run_gram.gram, self.run_gram.steps
        update_sq = np.einsum("nii->ni", gram)
        coefficients = self.coefficients
        active = self.decomposition.active[:, :self.rank, None]
        predicted = np.where(active, self.fitted_coefficients(steps, off_grid="nan"), 0.0)
        last = self.last_position
        last_error_sq = np.clip(gram[:, last, last][:, None] - 2 * gram[:, last, :] + update_sq, 0.0, None)
        last_gap = coefficients[:, :, last:last + 1] - coefficients
        parts = {"update_sq": update_sq, "discarded_sq": maths.outside_energy(update_sq, coefficients),
                 "relex_error_inside_sq": ((predicted - coefficients) ** 2).sum(axis=1),
                 "last_error_sq": last_error_sq, "last_error_inside_sq": (last_gap**2).sum(axis=1),
                 "last_error_outside_sq": maths.outside_energy(last_error_sq, last_gap)}
        parts["relex_error_sq"] = parts["relex_error_inside_sq"] + parts["discarded_sq"]
        codes, labels = self._groups(by)
        groups = 1 if labels is None else len(labels)
        codes = np.zeros(len(update_sq), dtype=np.int64) if codes is None else np.asarray(codes)
        summed = {}
        for name, values in parts.items():
            summed[name] = np.zeros((groups, len(steps)))
            np.add.at(summed[name], codes, values)
        position = np.arange(len(steps))
        part = np.where(position < self.window_positions[0], "before", np.where(position <= last, "window", "after"))
        frame = pd.DataFrame({"step": np.tile(steps, groups), "part": np.tile(part, groups)})
        if labels is not None:
            frame.insert(0, by, np.asarray(labels).repeat(len(steps)))
        for name in ("update_sq", "discarded_sq"):
            frame[name] = summed[name].ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["discarded_share"] = frame["discarded_sq"] / frame["update_sq"]
        for name in ("relex_error_sq", "relex_error_inside_sq", "last_error_sq", "last_error_inside_sq",
                     "last_error_outside_sq"):
            frame[name] = summed[name].ravel()
        return frame

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


def _window_decomposition(run_gram: RunGram, window, rank: int):
    """(slice, decomposition with the top `rank` components) of a window of the run."""
    positions = _as_slice(window_positions(run_gram.steps, window))
    return positions, maths.decompose(run_gram.gram[:, positions, positions], rank)


def _padded_cosines(first, second, gram_cross, rank: int) -> np.ndarray:
    """`window.principal_cosines`, NaN-padded to `rank` columns when a window has fewer checkpoints."""
    cosines = maths.principal_cosines(first, second, gram_cross, rank)
    missing = rank - cosines.shape[1]
    return np.pad(cosines, ((0, 0), (0, missing)), constant_values=np.nan) if missing else cosines


def principal_angles_frame(run_gram: RunGram, first_window, second_window, rank: int = 1) -> pd.DataFrame:
    """Principal angles between two windows' rank-k subspaces, per tensor (Gram only).

    Columns: tensor, layer, module, angle (1…k, smallest angle first), cosine (the singular values
    of Σ1⁻¹ U1ᵀ G[W1, W2] U2 Σ2⁻¹; 1 = a shared direction, 0 = orthogonal; NaN past the
    directions either window has), degrees.
    """
    first, first_decomposition = _window_decomposition(run_gram, first_window, rank)
    second, second_decomposition = _window_decomposition(run_gram, second_window, rank)
    cosines = _padded_cosines(first_decomposition, second_decomposition, run_gram.gram[:, first, second], rank)
    n_tensors = len(run_gram.names)
    return pd.DataFrame({"tensor": np.repeat(np.array(run_gram.names, dtype=object), rank),
                         "layer": pd.array(np.repeat(np.array(run_gram.layers, dtype=object), rank), dtype="Int64"),
                         "module": np.repeat(np.array(run_gram.modules, dtype=object), rank),
                         "angle": np.tile(np.arange(1, rank + 1), n_tensors), "cosine": cosines.ravel(),
                         "degrees": np.degrees(np.arccos(cosines.ravel()))})


def stability_frame(run_gram: RunGram, window_ends=None, start=None, reference=None, rank: int = 1) -> pd.DataFrame:
    """Stability of the subspace for growing windows start:end against a reference window (default: all).

    Columns: window_end; overlap_model (Σ_tensors |<σv1, σ'v1'>| / Σ σσ'), overlap_median,
    overlap_min (of |<v1, v1'>| over tensors with a direction); principal_cosine_1 …
    principal_cosine_k (median over tensors of the cosines of the principal angles between the
    rank-k subspaces, largest first; at rank 1, principal_cosine_1 = overlap_median) and
    principal_cosine_min (the smallest cosine of any tensor: the worst tensor's largest angle).
    """
    steps = run_gram.steps
    reference_window, reference_decomposition = _window_decomposition(run_gram, reference, rank)
    first = steps[0] if start is None else start
    if window_ends is None:
        window_ends = [step for step in steps if np.sum((steps >= first) & (steps <= step)) >= 2]
    cosine_columns = [f"principal_cosine_{angle}" for angle in range(1, rank + 1)]
    records = []
    for end in window_ends:
        window, decomposition = _window_decomposition(run_gram, (first, end), rank)
        cross = run_gram.gram[:, window, reference_window]
        cosines = _padded_cosines(decomposition, reference_decomposition, cross, rank)
        overlap = cosines[:, 0] if rank == 1 else _padded_cosines(decomposition, reference_decomposition, cross, 1)[:, 0]
        scale = decomposition.sigma[:, 0] * reference_decomposition.sigma[:, 0]
        has_direction = np.isfinite(overlap)
        record = {"window_end": int(end),
                  "overlap_model": float((overlap[has_direction] * scale[has_direction]).sum()
                                         / scale[has_direction].sum()) if has_direction.any() else np.nan,
                  "overlap_median": float(np.median(overlap[has_direction])) if has_direction.any() else np.nan,
                  "overlap_min": float(overlap[has_direction].min()) if has_direction.any() else np.nan}
        with warnings.catch_warnings():  # an angle no tensor has gives NaN, which is the answer
            warnings.simplefilter("ignore", RuntimeWarning)
            record.update(zip(cosine_columns, np.nanmedian(cosines, axis=0)))
            record["principal_cosine_min"] = float(np.nanmin(cosines)) if np.isfinite(cosines).any() else np.nan
        records.append(record)
    return pd.DataFrame.from_records(records, columns=["window_end", "overlap_model", "overlap_median", "overlap_min",
                                                       *cosine_columns, "principal_cosine_min"])


def changed_frame(run_gram: RunGram, by: str = "model") -> pd.DataFrame:
    """How visible the updates are: per checkpoint, the share of elements whose stored value differs
    from the base's (a bf16 trajectory whose steps are below bf16's spacing stays mostly unchanged).

    by: 'model', 'layer', 'module', 'dtype' (the checkpoints' stored dtype) or 'tensor'.
    Columns: [group column], step, changed (elements), numel, changed_share. Empty (with these
    columns) when the RunGram carries no counts.
    """
    columns = ([] if by == "model" else [by]) + ["step", "changed", "numel", "changed_share"]
    if run_gram.changed is None:
        return pd.DataFrame(columns=columns)
    labels = {"model": np.zeros(len(run_gram.names), dtype=np.int64), "tensor": np.array(run_gram.names, dtype=object),
              "layer": pd.array(run_gram.layers, dtype="Int64"), "module": np.array(run_gram.modules, dtype=object),
              "dtype": np.array(run_gram.checkpoint_dtypes or run_gram.dtypes, dtype=object)}
    if by not in labels:
        raise ValueError(f"by must be one of {', '.join(labels)}, not {by!r}")
    steps = run_gram.steps
    long = pd.DataFrame({"group": np.repeat(labels[by], len(steps)), "step": np.tile(steps, len(run_gram.names)),
                         "changed": run_gram.changed.ravel(), "numel": np.repeat(run_gram.numels, len(steps))})
    grouped = long.groupby(["group", "step"], dropna=False, sort=True)[["changed", "numel"]].sum().reset_index()
    grouped["changed_share"] = grouped["changed"] / grouped["numel"]
    grouped = grouped.rename(columns={"group": by})
    return grouped[columns].reset_index(drop=True)
