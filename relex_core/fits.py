"""Trends of the window's coefficients over real steps: polynomials, a sinusoid, autoregressive use.

Pure functions on arrays. `values` is (..., T), one series per tensor and component, at the
steps (T,) the trend is fitted to; every fit treats each series on its own. A trend predicts at
any step, inside the fitted points or beyond them, so a prediction at an observed step is the
fitted (not the observed) coefficient (the official scripts' `fit_reconstruct`).

    trend = fit_trend(parse_fit("poly3"), steps, values)   # PolynomialTrend
    trend.predict([600, 800])                               # (..., 2)
"""

from dataclasses import dataclass

import numpy as np

from .options import FitSpec


def sums_of_squares(values: np.ndarray, fitted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(residual, total) sums of squares over the last axis: Σ(y − ŷ)², Σ(y − ȳ)². NaN entries are skipped.

    R² = 1 − residual / total. Pooled R² over tensors or components sums both before dividing.
    """
    with np.errstate(invalid="ignore"):
        residual = np.nansum((values - fitted) ** 2, axis=-1)
        present = np.isfinite(fitted) & np.isfinite(values)
        count = present.sum(axis=-1)
        mean = np.where(present, values, 0.0).sum(axis=-1) / np.maximum(count, 1)
        total = np.where(present, (values - mean[..., None]) ** 2, 0.0).sum(axis=-1)
    return np.where(count > 0, residual, np.nan), np.where(count > 0, total, np.nan)


def r_squared(values: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """1 − SS_res / SS_tot over the last axis; NaN where the values are constant (SS_tot = 0)."""
    residual, total = sums_of_squares(values, fitted)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - residual / total, np.nan)


class Trend:
    """A fitted trend per series. r2: (...) on the fitted points; center: mean of the fitted steps."""
    r2: np.ndarray
    center: float

    def predict(self, steps) -> np.ndarray:
        """(..., S) trend values at the given steps."""
        raise NotImplementedError

    def derivative(self, steps) -> np.ndarray:
        """(..., S) d value / d step at the given steps."""
        raise NotImplementedError

    @property
    def slope(self) -> np.ndarray:
        """d value / d step at the centre of the fitted steps (a line's slope, anywhere)."""
        return self.derivative([self.center])[..., 0]

    @property
    def intercept(self) -> np.ndarray:
        """The trend's value at step 0 (a line's intercept on the real step axis)."""
        return self.predict([0.0])[..., 0]


@dataclass(frozen=True)
class PolynomialTrend(Trend):
    """c ≈ Σ_j beta_j x^j with x = (step − center) / scale.

    Centring and scaling the step axis keeps the least squares well conditioned at real step
    numbers (thousands). beta: (..., degree + 1), lowest power first.
    """
    beta: np.ndarray
    center: float
    scale: float
    r2: np.ndarray

    @property
    def degree(self) -> int:
        return self.beta.shape[-1] - 1

    def predict(self, steps) -> np.ndarray:
        return self.beta @ _powers(self._x(steps), self.degree).T

    def derivative(self, steps) -> np.ndarray:
        powers = _powers(self._x(steps), self.degree - 1)  # d x^j / dx = j x^(j−1)
        slopes = self.beta[..., 1:] * np.arange(1, self.degree + 1)
        return slopes @ powers.T / self.scale

    def _x(self, steps) -> np.ndarray:
        return (np.atleast_1d(np.asarray(steps, dtype=np.float64)) - self.center) / self.scale


def _powers(x: np.ndarray, degree: int) -> np.ndarray:
    return np.stack([x**power for power in range(degree + 1)], axis=-1)


def fit_polynomial(steps, values: np.ndarray, degree: int) -> PolynomialTrend:
    """Least squares, with intercept, of values (..., T) on a degree-`degree` polynomial of real steps (T,)."""
    steps = np.asarray(steps, dtype=np.float64)
    if len(steps) <= degree:
        raise ValueError(f"a degree-{degree} fit needs more than {degree} points, got {len(steps)}")
    center = float(steps.mean())
    scale = float(np.abs(steps - center).max()) or 1.0
    design = _powers((steps - center) / scale, degree)
    beta = values @ np.linalg.pinv(design).T
    return PolynomialTrend(beta=beta, center=center, scale=scale, r2=r_squared(values, beta @ design.T))


@dataclass(frozen=True)
class SineTrend(Trend):
    """c ≈ amplitude · sin(2π · frequency · step + phase) + offset, each (...); frequency in cycles per step."""
    amplitude: np.ndarray
    frequency: np.ndarray
    phase: np.ndarray
    offset: np.ndarray
    center: float
    r2: np.ndarray

    def predict(self, steps) -> np.ndarray:
        angle = self._angle(steps)
        return self.amplitude[..., None] * np.sin(angle) + self.offset[..., None]

    def derivative(self, steps) -> np.ndarray:
        rate = 2 * np.pi * self.frequency[..., None]
        return self.amplitude[..., None] * rate * np.cos(self._angle(steps))

    def _angle(self, steps) -> np.ndarray:
        steps = np.atleast_1d(np.asarray(steps, dtype=np.float64))
        return 2 * np.pi * self.frequency[..., None] * steps + self.phase[..., None]


# Frequency search of the sine fit: a grid over the bracket, then golden-section steps around the best.
_SINE_GRID_POINTS = 17
_SINE_GOLDEN_STEPS = 48


def fit_sine(steps, values: np.ndarray) -> SineTrend:
    """Least squares of values (..., T) on A·sin(2πf·s + φ) + C, one fit per series.

    How it is fitted (it need not match the official scripts bit for bit, which run scipy's
    curve_fit from A = 3·std/√2, φ = 0 and the same initial frequency):
    - Initial frequency f₀: the largest non-zero-frequency component of the FFT of the centred
      values, on the mean step interval (exact for evenly spaced steps).
    - For a fixed f the model is linear in (a, b, C) with a·sin + b·cos, so those come from an
      exact least squares; A = hypot(a, b) and φ = atan2(b, a). Only f is searched.
    - f is searched within one FFT bin of f₀, on [max(f₀ − bin, bin/4), min(f₀ + bin, Nyquist)]:
      a grid, then golden-section steps around its best point. This finds the least-squares
      optimum of all four parameters near the FFT peak, as a local optimiser started there would.
    A series with constant values gets A = 0 and C = its value.
    """
    steps = np.asarray(steps, dtype=np.float64)
    if len(steps) < FitSpec("sin", None).minimum_points:
        raise ValueError(f"a sin fit needs at least {FitSpec('sin', None).minimum_points} points, got {len(steps)}")
    shape = values.shape[:-1]
    series = values.reshape(-1, len(steps)).astype(np.float64)
    center = float(steps.mean())
    local = steps - center  # the phase is solved on centred steps, then moved to the real axis
    interval = float(np.diff(steps).mean())
    count = len(steps)
    bin_width = 1.0 / (count * interval)
    spectrum = np.fft.rfft(series - series.mean(axis=1, keepdims=True), axis=1)
    frequencies = np.fft.rfftfreq(count, d=interval)
    initial = frequencies[1 + np.argmax(np.abs(spectrum[:, 1:]), axis=1)]
    low = np.maximum(initial - bin_width, bin_width / 4)
    high = np.minimum(initial + bin_width, frequencies[-1])

    grid = low[:, None] + (high - low)[:, None] * np.linspace(0, 1, _SINE_GRID_POINTS)
    errors = np.stack([_sine_solve(local, series, grid[:, point])[1] for point in range(_SINE_GRID_POINTS)], axis=1)
    best = np.argmin(errors, axis=1)
    spacing = (high - low) / (_SINE_GRID_POINTS - 1)
    rows = np.arange(len(series))
    left = np.maximum(grid[rows, best] - spacing, low)
    right = np.minimum(grid[rows, best] + spacing, high)
    frequency = _golden_section(lambda f: _sine_solve(local, series, f)[1], left, right)
    # The grid's best point stays the answer where the search around it found nothing better.
    grid_better = errors[rows, best] < _sine_solve(local, series, frequency)[1]
    frequency = np.where(grid_better, grid[rows, best], frequency)
    (sine, cosine, offset), _ = _sine_solve(local, series, frequency)

    constant = np.ptp(series, axis=1) == 0
    amplitude = np.where(constant, 0.0, np.hypot(sine, cosine))
    phase = np.where(constant, 0.0, np.arctan2(cosine, sine) - 2 * np.pi * frequency * center)
    offset = np.where(constant, series[:, 0], offset)
    phase = np.mod(phase + np.pi, 2 * np.pi) - np.pi
    fitted = amplitude[:, None] * np.sin(2 * np.pi * frequency[:, None] * steps + phase[:, None]) + offset[:, None]
    return SineTrend(amplitude=amplitude.reshape(shape), frequency=frequency.reshape(shape),
                     phase=phase.reshape(shape), offset=offset.reshape(shape), center=center,
                     r2=r_squared(series, fitted).reshape(shape))


def _sine_solve(local_steps: np.ndarray, series: np.ndarray, frequency: np.ndarray):
    """For each series (m, T) at its frequency (m,): the least-squares (a, b, C) of a·sin + b·cos + C
    on the centred steps, and the residual sum of squares (m,).

    The 3×3 normal equations are well conditioned on centred steps with f ≥ bin/4; at the
    Nyquist frequency a column vanishes and the pseudo-inverse takes over.
    """
    angle = 2 * np.pi * frequency[:, None] * local_steps[None, :]
    design = np.stack([np.sin(angle), np.cos(angle), np.ones_like(angle)], axis=2)  # (m, T, 3)
    normal = np.einsum("mti,mtj->mij", design, design)
    right = np.einsum("mti,mt->mi", design, series)
    try:
        coefficients = np.linalg.solve(normal, right[..., None])[..., 0]
    except np.linalg.LinAlgError:
        coefficients = np.einsum("mij,mj->mi", np.linalg.pinv(normal), right)
    residual = series - np.einsum("mtj,mj->mt", design, coefficients)
    return coefficients.T, (residual**2).sum(axis=1)


def _golden_section(objective, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Minimise a vectorised objective over (m,) brackets [left, right], all series at once.

    Each step drops the third of the bracket beyond the worse inner point and evaluates one new point.
    """
    ratio = (np.sqrt(5) - 1) / 2
    lower, upper = right - ratio * (right - left), left + ratio * (right - left)
    value_lower, value_upper = objective(lower), objective(upper)
    for _ in range(_SINE_GOLDEN_STEPS):
        keep_left = value_lower < value_upper  # the minimum lies in [left, upper]
        right = np.where(keep_left, upper, right)
        left = np.where(keep_left, left, lower)
        point = np.where(keep_left, right - ratio * (right - left), left + ratio * (right - left))
        value = objective(point)
        lower, upper, value_lower, value_upper = (
            np.where(keep_left, point, upper), np.where(keep_left, lower, point),
            np.where(keep_left, value, value_upper), np.where(keep_left, value_lower, value))
    return (left + right) / 2


def fit_trend(spec: FitSpec, steps, values: np.ndarray) -> Trend:
    """The trend `spec` names ('linear', 'polyD' or 'sin', see options.FitSpec), fitted to values (..., T)."""
    if spec.kind == "sin":
        return fit_sine(steps, values)
    return fit_polynomial(steps, values, spec.degree)


def autoregressive(spec: FitSpec, steps, values: np.ndarray, refit_every: int, count: int) -> np.ndarray:
    """(..., count) predictions at steps[-1] + j·Δ, j = 1…count, as the official `--future_extrapolation_window`.

    steps (W,) are evenly spaced by Δ and values (..., W) are the buffer it starts from. Step by
    step: every `refit_every` steps (and at the first) the trend is refitted to the buffer and
    evaluated one interval past the buffer's end; that value is the prediction at this step and
    is appended to the buffer, whose oldest entry drops out. Between refits the official script
    keeps evaluating the last refit at the same point (its buffer-local index W), so a prediction
    is held for `refit_every` steps; so is it here. refit_every = 1 refits before every step.
    """
    steps = np.asarray(steps, dtype=np.float64)
    interval = steps[1] - steps[0]
    buffer = np.array(values, dtype=np.float64)
    predictions = np.empty((*buffer.shape[:-1], count))
    value = None
    for index in range(count):
        if index % refit_every == 0:
            buffer_steps = steps + index * interval  # where the buffer's entries now sit
            value = fit_trend(spec, buffer_steps, buffer).predict([buffer_steps[-1] + interval])[..., 0]
        predictions[..., index] = value
        buffer = np.concatenate([buffer[..., 1:], value[..., None]], axis=-1)
    return predictions
