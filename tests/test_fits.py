"""Trends of coefficients over steps agree with numpy's polyfit, a known sinusoid and a direct autoregressive loop."""

from collections import deque

import numpy as np
import pytest

from relex_core import fits
from relex_core.options import parse_fit


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_polynomial_fits_match_numpy_polyfit_on_real_steps(degree):
    rng = np.random.default_rng(degree)
    steps = np.array([1000, 1100, 1250, 1300, 1500, 1800, 1900, 2400], dtype=float)
    values = rng.standard_normal((3, 2, len(steps))) + 1e-3 * steps + 1e-7 * steps**2
    trend = fits.fit_trend(parse_fit(f"poly{degree}"), steps, values)
    query = np.array([900.0, 1250.0, 2600.0, 4000.0])  # before, inside and after the fitted points
    for row in range(3):
        for component in range(2):
            series = values[row, component]
            coefficients = np.polyfit(steps, series, degree)
            np.testing.assert_allclose(trend.predict(query)[row, component], np.polyval(coefficients, query),
                                       rtol=1e-8, atol=1e-9 * np.abs(series).max())
            fitted = np.polyval(coefficients, steps)
            r2 = 1 - ((series - fitted) ** 2).sum() / ((series - series.mean()) ** 2).sum()
            assert trend.r2[row, component] == pytest.approx(r2, rel=1e-9)
            slope = np.polyval(np.polyder(coefficients), steps.mean())
            assert trend.slope[row, component] == pytest.approx(slope, rel=1e-7, abs=1e-12)
            assert trend.intercept[row, component] == pytest.approx(np.polyval(coefficients, 0.0), rel=1e-6)
    with pytest.raises(ValueError, match="more than"):
        fits.fit_polynomial(steps[:degree], values[..., :degree], degree)


def test_sine_fit_recovers_a_known_sinusoid_on_real_steps():
    steps = np.arange(48, 48 * 31, 48, dtype=float)  # 30 checkpoints, one every 48 steps
    amplitude = np.array([2.0, 0.5, 3.0])
    frequency = np.array([1 / 700, 1 / 300, 1 / 1100])  # cycles per step, between FFT bins
    phase = np.array([0.5, -2.0, 2.8])
    offset = np.array([1.0, -4.0, 0.0])
    angle = 2 * np.pi * frequency[:, None] * steps + phase[:, None]
    values = amplitude[:, None] * np.sin(angle) + offset[:, None]
    trend = fits.fit_trend(parse_fit("sin"), steps, values)
    np.testing.assert_allclose(trend.amplitude, amplitude, rtol=1e-6)
    np.testing.assert_allclose(trend.frequency, frequency, rtol=1e-6)
    np.testing.assert_allclose(np.angle(np.exp(1j * (trend.phase - phase))), 0, atol=1e-5)
    np.testing.assert_allclose(trend.offset, offset, atol=1e-5)
    np.testing.assert_allclose(trend.r2, 1.0, atol=1e-10)
    later = np.array([1500.0, 2000.0])
    expected = amplitude[:, None] * np.sin(2 * np.pi * frequency[:, None] * later + phase[:, None]) + offset[:, None]
    np.testing.assert_allclose(trend.predict(later), expected, atol=1e-4)
    slope = amplitude * 2 * np.pi * frequency * np.cos(2 * np.pi * frequency * steps.mean() + phase)
    np.testing.assert_allclose(trend.slope, slope, rtol=1e-4)


def test_sine_fit_with_noise_is_the_least_squares_optimum_near_the_fft_peak():
    rng = np.random.default_rng(3)
    steps = np.arange(10, 410, 10, dtype=float)
    values = 2 * np.sin(2 * np.pi * 0.0037 * steps + 0.5) + 1 + rng.normal(0, 0.05, len(steps))
    trend = fits.fit_sine(steps, values[None])
    residual = ((values - trend.predict(steps)[0]) ** 2).sum()
    # No nearby frequency does better once A, φ and C are solved for exactly (plain lstsq per frequency).
    for frequency in trend.frequency[0] * np.array([0.98, 0.995, 1.005, 1.02]):
        angle = 2 * np.pi * frequency * steps
        design = np.column_stack([np.sin(angle), np.cos(angle), np.ones_like(steps)])
        _, other, *_ = np.linalg.lstsq(design, values, rcond=None)
        assert residual <= other[0] * (1 + 1e-9)
    assert trend.amplitude[0] == pytest.approx(2, rel=0.05) and trend.frequency[0] == pytest.approx(0.0037, rel=0.02)


def test_sine_fit_of_a_constant_series_is_flat():
    trend = fits.fit_sine(np.arange(1, 9, dtype=float), np.full((1, 8), 0.25))
    assert trend.amplitude[0] == 0 and trend.offset[0] == 0.25
    np.testing.assert_allclose(trend.predict([100.0]), 0.25)


def official_loop(values, window, refit_every, count, degree):
    """The official script's autoregressive loop on one series, verbatim in spirit: index axis 0…W−1,
    np.polyfit on the deque, evaluated at index W; refit when `refit_every` steps have passed."""
    buffer = deque(values[-window:], maxlen=window)
    since_refit, predictions = refit_every, []
    for _ in range(count):
        if since_refit >= refit_every:
            polynomial = np.poly1d(np.polyfit(np.arange(window, dtype=float), np.array(buffer), degree))
            since_refit = 0
        prediction = polynomial(window)
        predictions.append(prediction)
        buffer.append(prediction)
        since_refit += 1
    return np.array(predictions)


@pytest.mark.parametrize("degree, window, refit_every", [(1, 6, 1), (1, 6, 4), (2, 8, 3), (3, 10, 5)])
def test_autoregressive_predictions_match_the_official_loop_on_the_index_axis(degree, window, refit_every):
    rng = np.random.default_rng(window)
    steps = np.arange(20, 20 * 13, 20, dtype=float)  # 12 checkpoints every 20 steps
    values = rng.standard_normal((2, len(steps))) + 0.01 * steps
    predictions = fits.autoregressive(parse_fit(f"poly{degree}"), steps[-window:], values[:, -window:], refit_every, 13)
    for row in range(2):
        expected = official_loop(values[row], window, refit_every, 13, degree)
        np.testing.assert_allclose(predictions[row], expected, rtol=1e-8, atol=1e-8 * np.abs(expected).max())
    # Between refits the prediction is held, as in the official script.
    held = predictions[:, :refit_every]
    np.testing.assert_array_equal(held, held[:, :1].repeat(refit_every, axis=1))


def test_sums_of_squares_skip_missing_predictions_and_pool():
    values = np.array([[1.0, 2.0, 4.0, 3.0]])
    fitted = np.array([[1.5, np.nan, 3.0, 3.5]])
    residual, total = fits.sums_of_squares(values, fitted)
    kept = np.array([1.0, 4.0, 3.0])
    assert residual[0] == pytest.approx(0.25 + 1 + 0.25) and total[0] == pytest.approx(((kept - kept.mean()) ** 2).sum())
    assert np.isnan(fits.r_squared(np.ones((1, 3)), np.ones((1, 3))))[0]
    empty_residual, _ = fits.sums_of_squares(np.zeros((2, 0)), np.zeros((2, 0)))
    assert np.isnan(empty_residual).all()
