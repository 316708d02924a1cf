"""The window maths agree with a float64 brute force: full SVD of stacked deltas and lstsq."""

import numpy as np
import pytest
import scipy.linalg

from relex_core import window as maths
from tests.brute_force import rank1_drift, trajectory_svd

STEPS = np.array([10, 20, 30, 45, 60, 80, 100, 120])


@pytest.fixture
def tensors():
    """Three tensors of different sizes, each (N, d) deltas with rank-1 drift plus noise."""
    rng = np.random.default_rng(0)
    return [rank1_drift(STEPS, dimension, noise, rng) for dimension, noise in ((50, 0.05), (300, 0.2), (17, 0.5))]


def stacked_gram(deltas_list):
    return np.stack([deltas @ deltas.T for deltas in deltas_list])


@pytest.mark.parametrize("components", [None, 3])
def test_singular_values_directions_and_energies_match_full_svd(tensors, components):
    window = np.arange(6)
    decomposition = maths.decompose(stacked_gram(tensors)[:, window][:, :, window], components)
    count = decomposition.sigma.shape[1]
    assert count == (6 if components is None else 3)
    for index, deltas in enumerate(tensors):
        sigma, directions = trajectory_svd(deltas[window])
        np.testing.assert_allclose(decomposition.sigma[index], sigma[:count], rtol=1e-8, atol=1e-10 * sigma[0])
        # v_k = Σ_t U[t, k] Δ_t / σ_k: the directions themselves, never materialised by relex.
        rebuilt = decomposition.basis[index, :, :2].T @ deltas[window] / decomposition.sigma[index, :2, None]
        np.testing.assert_allclose(rebuilt, directions[:2], atol=1e-8)
        np.testing.assert_allclose(maths.energy_fraction(decomposition, 1)[index],
                                   sigma[0] ** 2 / (sigma**2).sum(), rtol=1e-10)
        np.testing.assert_allclose(maths.energy_fraction(decomposition, 3)[index],
                                   (sigma[:3] ** 2).sum() / (sigma**2).sum(), rtol=1e-10)


def test_coefficients_of_every_checkpoint_are_projections_on_the_window_directions(tensors):
    window = np.arange(4)
    gram = stacked_gram(tensors)
    decomposition = maths.decompose(gram[:, window][:, :, window], components=2)
    coefficients = maths.coefficients(decomposition, gram[:, window, :], rank=2)
    for index, deltas in enumerate(tensors):
        _, directions = trajectory_svd(deltas[window])
        expected = directions[:2] @ deltas.T  # (k, N), checkpoints inside and after the window
        np.testing.assert_allclose(coefficients[index], expected, rtol=1e-7, atol=1e-9 * np.abs(expected).max())


def test_sign_convention_makes_the_last_window_coefficient_non_negative(tensors):
    gram = stacked_gram([-deltas for deltas in tensors])
    decomposition = maths.decompose(gram)
    coefficients = maths.coefficients(decomposition, gram, rank=3)
    assert (coefficients[:, :, -1] >= 0).all()


def test_checkpoint_weights_rebuild_the_rank_k_prediction(tensors):
    window = np.arange(6)
    gram = stacked_gram(tensors)
    decomposition = maths.decompose(gram[:, window][:, :, window])
    projections = np.random.default_rng(3).standard_normal((len(tensors), 2, 3))
    weights = maths.checkpoint_weights(decomposition, projections)
    for index, deltas in enumerate(tensors):
        _, directions = trajectory_svd(deltas[window])
        for target in range(3):
            expected = projections[index, :, target] @ directions[:2]
            np.testing.assert_allclose(weights[index, :, target] @ deltas[window], expected, rtol=1e-7,
                                       atol=1e-9 * np.abs(expected).max())


def test_prediction_products_give_direct_errors_and_cosines(tensors):
    window, targets = np.arange(5), np.arange(5, 8)
    gram = stacked_gram(tensors)
    decomposition = maths.decompose(gram[:, window][:, :, window])
    coefficients = maths.coefficients(decomposition, gram[:, window, :], rank=2)
    projections = np.random.default_rng(4).standard_normal((len(tensors), 2, len(targets)))
    target_sq = gram[:, targets, targets]
    products = maths.relex_products(projections, coefficients[:, :, targets], target_sq)
    last = window[-1]
    scale = STEPS[targets] / STEPS[last]
    linear = maths.scaled_last_products(scale, gram[:, last, last], gram[:, last, targets], target_sq)
    predictions_all, truths_all, linear_all = [], [], []
    for index, deltas in enumerate(tensors):
        _, directions = trajectory_svd(deltas[window])
        for column, target in enumerate(targets):
            prediction = projections[index, :, column] @ directions[:2]
            truth = deltas[target]
            error = np.linalg.norm(prediction - truth) / np.linalg.norm(truth)
            cosine = prediction @ truth / np.linalg.norm(prediction) / np.linalg.norm(truth)
            assert products.relative_error[index, column] == pytest.approx(error, rel=1e-7)
            assert products.cosine[index, column] == pytest.approx(cosine, rel=1e-7)
            line = scale[column] * deltas[last]
            assert linear.relative_error[index, column] == pytest.approx(
                np.linalg.norm(line - truth) / np.linalg.norm(truth), rel=1e-9)
            predictions_all.append(prediction), truths_all.append(truth), linear_all.append(line)
    # Whole-model figures: errors of the concatenated vectors, by summing numerators and denominators.
    summed = products.summed()
    first_target = slice(0, None, len(targets))
    prediction_cat = np.concatenate(predictions_all[first_target])
    truth_cat = np.concatenate(truths_all[first_target])
    assert summed.relative_error[0, 0] == pytest.approx(
        np.linalg.norm(prediction_cat - truth_cat) / np.linalg.norm(truth_cat), rel=1e-7)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_principal_cosines_match_scipy_subspace_angles_on_the_explicit_directions(tensors, rank):
    gram = stacked_gram(tensors)
    first, second = np.arange(0, 5), np.arange(2, 8)
    cosines = maths.principal_cosines(maths.decompose(gram[:, first][:, :, first]),
                                      maths.decompose(gram[:, second][:, :, second]), gram[:, first][:, :, second], rank)
    assert cosines.shape == (len(tensors), rank)
    for index, deltas in enumerate(tensors):
        directions_first = trajectory_svd(deltas[first])[1][:rank].T  # (d, k), explicit
        directions_second = trajectory_svd(deltas[second])[1][:rank].T
        angles = scipy.linalg.subspace_angles(directions_first, directions_second)  # largest angle first
        np.testing.assert_allclose(cosines[index], np.sort(np.cos(angles))[::-1], atol=1e-8)
    if rank == 1:  # the first cosine at rank 1 is |<v1, v1'>|
        for index, deltas in enumerate(tensors):
            v_first, v_second = trajectory_svd(deltas[first])[1][0], trajectory_svd(deltas[second])[1][0]
            assert cosines[index, 0] == pytest.approx(abs(v_first @ v_second), rel=1e-8)


def test_principal_cosines_are_nan_past_the_directions_a_window_has():
    rng = np.random.default_rng(5)
    direction = rng.standard_normal(40)
    deltas = np.outer(np.arange(1, 6), direction)  # exactly rank 1: one direction, the rest σ ≈ 0
    gram = np.stack([deltas @ deltas.T, np.zeros((5, 5))])
    decomposition = maths.decompose(gram)
    cosines = maths.principal_cosines(decomposition, decomposition, gram, rank=2)
    assert cosines[0, 0] == pytest.approx(1.0) and np.isnan(cosines[0, 1]) and np.isnan(cosines[1]).all()


def test_outside_energy_is_what_an_explicit_projection_leaves_out(tensors):
    window = np.arange(5)
    gram = stacked_gram(tensors)
    decomposition = maths.decompose(gram[:, window][:, :, window])
    coefficients = maths.coefficients(decomposition, gram[:, window, :], rank=2)
    discarded = maths.outside_energy(np.einsum("nii->ni", gram), coefficients)
    for index, deltas in enumerate(tensors):
        directions = trajectory_svd(deltas[window])[1][:2]
        residual = deltas - (deltas @ directions.T) @ directions  # (I − P) Δ_i for every checkpoint
        expected = (residual**2).sum(axis=1)
        np.testing.assert_allclose(discarded[index], expected, rtol=1e-6, atol=1e-12 * (deltas**2).sum(axis=1).max())


def test_a_tensor_that_never_moved_has_no_direction_and_predicts_the_base():
    gram = np.zeros((1, 4, 4))
    decomposition = maths.decompose(gram)
    assert not decomposition.active.any()
    coefficients = maths.coefficients(decomposition, gram, rank=1)
    assert np.all(coefficients == 0)
    weights = maths.checkpoint_weights(decomposition, np.ones((1, 1, 2)))
    assert np.all(weights == 0)
    assert np.isnan(maths.energy_fraction(decomposition, 1)).all()
