"""The per-matrix ΔW spectrum agrees with a full float64 np.linalg.svd."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from relex_core import RelexError, compute_gram, open_run
from relex_core.spectra import delta_spectrum_frame, top_singular_values
from relex_core.synthetic import make_run


def low_rank_plus_noise(rows, columns, rank, noise, rng):
    """A matrix with a known, fast-decaying spectrum: Σ_j 2^-j u_j v_jᵀ plus small Gaussian noise."""
    left = np.linalg.qr(rng.standard_normal((rows, rank)))[0]
    right = np.linalg.qr(rng.standard_normal((columns, rank)))[0]
    return (left * 2.0 ** -np.arange(rank)) @ right.T + noise * rng.standard_normal((rows, columns)) / np.sqrt(rows)


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_top_singular_values_match_full_svd(method):
    matrix = low_rank_plus_noise(300, 200, rank=6, noise=1e-3, rng=np.random.default_rng(0))
    brute = np.linalg.svd(matrix, compute_uv=False)
    spectrum = top_singular_values(matrix, 6, method=method)  # the signal's rank: above the noise floor
    np.testing.assert_allclose(spectrum.sigma, brute[:6], rtol=1e-6)
    np.testing.assert_allclose(spectrum.frobenius_sq, (brute**2).sum(), rtol=1e-12)
    np.testing.assert_allclose(spectrum.energy_rank1, brute[0] ** 2 / (brute**2).sum(), rtol=1e-6)
    np.testing.assert_allclose(spectrum.stable_rank, (brute**2).sum() / brute[0] ** 2, rtol=1e-6)
    np.testing.assert_allclose(spectrum.energy_share, brute[:6] ** 2 / (brute**2).sum(), rtol=1e-6)


def test_a_rank_one_matrix_has_unit_energy_and_stable_rank_one():
    rng = np.random.default_rng(1)
    spectrum = top_singular_values(np.outer(rng.standard_normal(50), rng.standard_normal(40)), 4)
    assert spectrum.energy_rank1 == pytest.approx(1.0, abs=1e-12)
    assert spectrum.stable_rank == pytest.approx(1.0, abs=1e-12)


def test_k_is_capped_by_the_matrix_and_a_zero_matrix_has_no_energy():
    spectrum = top_singular_values(np.zeros((3, 5)), 10)
    assert len(spectrum.sigma) == 3
    assert np.isnan(spectrum.energy_rank1) and np.isnan(spectrum.stable_rank)


def test_delta_spectrum_frame_reads_two_checkpoints_and_uses_the_gram_norm(tmp_path):
    folder = make_run(tmp_path / "run", steps=(10, 20, 30), dtype=torch.bfloat16, relative_update=1e-2)
    run_gram = compute_gram(open_run(folder), cache_dir=tmp_path / "cache", progress=False)
    name = "model.layers.1.mlp.down_proj.weight"
    frame = delta_spectrum_frame(run_gram, name, 20, k=5)
    base = load_file(folder / "checkpoint-0" / "model.safetensors")[name].to(torch.float64).numpy()
    later = load_file(folder / "checkpoint-20" / "model.safetensors")[name].to(torch.float64).numpy()
    brute = np.linalg.svd(later - base, compute_uv=False)
    frobenius_sq = (brute**2).sum()
    assert list(frame.columns) == ["index", "sigma", "energy_share", "cumulative_share"]
    assert list(frame["index"]) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(frame["sigma"], brute[:5], rtol=1e-9)
    np.testing.assert_allclose(frame.attrs["frobenius_sq"], frobenius_sq, rtol=1e-9)
    np.testing.assert_allclose(frame["cumulative_share"], np.cumsum(brute[:5] ** 2) / frobenius_sq, rtol=1e-9)
    np.testing.assert_allclose(frame.attrs["energy_rank1"], brute[0] ** 2 / frobenius_sq, rtol=1e-9)
    np.testing.assert_allclose(frame.attrs["stable_rank"], frobenius_sq / brute[0] ** 2, rtol=1e-9)
    assert frame.attrs["tensor"] == name and frame.attrs["step"] == 20


def test_delta_spectrum_frame_refuses_vectors_unknown_tensors_and_steps(tmp_path):
    folder = make_run(tmp_path / "run", steps=(10, 20))
    run_gram = compute_gram(open_run(folder), cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(RelexError, match="2-D tensor"):
        delta_spectrum_frame(run_gram, "model.norm.weight", 10)
    with pytest.raises(RelexError, match="not among the analysed tensors"):
        delta_spectrum_frame(run_gram, "model.nothing.weight", 10)
    with pytest.raises(RelexError, match="step 15 is not a checkpoint"):
        delta_spectrum_frame(run_gram, "model.layers.0.mlp.up_proj.weight", 15)
