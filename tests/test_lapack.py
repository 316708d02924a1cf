"""Top-k symmetric eigenpairs without the GIL agree with numpy's full float64 eigh."""

import ctypes
import threading
import time

import numpy as np
import pytest

from relex_core import lapack, threads


def psd(eigenvalues, rng) -> np.ndarray:
    """Q diag(eigenvalues) Qᵀ for a random orthogonal Q: a PSD matrix with a known spectrum."""
    size = len(eigenvalues)
    basis, _ = np.linalg.qr(rng.standard_normal((size, size)))
    return (basis * np.asarray(eigenvalues, dtype=np.float64)) @ basis.T


def rank1_plus_noise(size: int, rng) -> np.ndarray:
    """The Gram of a trajectory: deltas drifting along one direction, plus noise."""
    drift = np.outer(np.arange(1, size + 1), rng.standard_normal(40))
    deltas = drift + 0.05 * rng.standard_normal((size, 40)) * np.arange(1, size + 1)[:, None]
    return deltas @ deltas.T


def structured_matrices(size: int, rng) -> dict:
    """Rank 1 plus noise, exactly rank-deficient, and a repeated top eigenvalue."""
    low_rank = rng.standard_normal((size, min(3, size)))
    return {"rank1_plus_noise": rank1_plus_noise(size, rng),
            "rank_deficient": low_rank @ low_rank.T,
            "repeated": psd(np.r_[[5.0] * min(3, size), np.linspace(1.0, 0.0, max(size - 3, 0))], rng)}


def assert_matches_eigh(matrix: np.ndarray, values: np.ndarray, vectors: np.ndarray) -> None:
    """Eigenvalues to 1e-12·λ1; eigenvectors orthonormal, A u = λ u, and equal to numpy's up to
    sign where an eigenvalue is separated from the rest of the spectrum."""
    size, count = vectors.shape
    threads.configure()  # BLAS on one thread, as relex runs it (OpenBLAS's threads slow small eigh down)
    reference_values, reference_vectors = np.linalg.eigh(matrix)
    scale = max(abs(reference_values).max(), 1e-300)
    np.testing.assert_allclose(values, reference_values[size - count:], rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(count), atol=1e-12)
    np.testing.assert_allclose(matrix @ vectors, vectors * values, rtol=0, atol=1e-12 * scale)
    for column in range(count):
        position = size - count + column
        gap = np.delete(reference_values, position) - reference_values[position]
        if size > 1 and abs(gap).min() < 1e-3 * scale:
            continue  # a repeated eigenvalue has no single eigenvector to compare
        reference = reference_vectors[:, position]
        sign = np.sign(reference @ vectors[:, column])
        np.testing.assert_allclose(sign * vectors[:, column], reference, atol=1e-10)


def test_the_installed_scipy_exposes_dsyevr_so_the_gil_free_path_is_the_one_tested():
    assert lapack._dsyevr is not None


@pytest.mark.parametrize("count", [1, 2, 3])
def test_top_eigenpairs_of_structured_grams_match_numpy(count):
    rng = np.random.default_rng(count)
    for size in (3, 8, 30, 99):
        for name, matrix in structured_matrices(size, rng).items():
            values, vectors = lapack.top_eigenpairs(matrix[None], count)
            assert values.shape == (1, count) and vectors.shape == (1, size, count), name
            assert np.all(np.diff(values[0]) >= 0), "ascending, like LAPACK and scipy"
            assert_matches_eigh(matrix, values[0], vectors[0])


def test_every_size_from_1_to_100_with_one_two_and_all_pairs():
    rng = np.random.default_rng(7)
    for size in range(1, 101):
        matrix = rank1_plus_noise(size, rng)
        for count in sorted({1, min(2, size), size}):
            values, vectors = lapack.top_eigenpairs(matrix[None], count)
            assert_matches_eigh(matrix, values[0], vectors[0])


def test_one_by_one_and_two_by_two_are_solved_exactly():
    values, vectors = lapack.top_eigenpairs(np.array([[[4.0]]]), 1)
    assert values[0, 0] == 4.0 and abs(vectors[0, 0, 0]) == 1.0
    # [[2, 1], [1, 2]] has eigenvalues 1 and 3 with eigenvectors (1, -1)/√2 and (1, 1)/√2.
    values, vectors = lapack.top_eigenpairs(np.array([[[2.0, 1.0], [1.0, 2.0]]]), 2)
    np.testing.assert_allclose(values[0], [1.0, 3.0], atol=1e-15)
    np.testing.assert_allclose(abs(vectors[0]), np.full((2, 2), np.sqrt(0.5)), atol=1e-15)


def test_a_repeated_top_eigenvalue_gives_a_basis_of_its_eigenspace():
    rng = np.random.default_rng(3)
    eigenvalues = np.r_[np.full(3, 5.0), np.linspace(1.0, 0.1, 17)]
    basis, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    matrix = (basis * eigenvalues) @ basis.T
    _, vectors = lapack.top_eigenpairs(matrix[None], 3)
    eigenspace = basis[:, :3]
    np.testing.assert_allclose(vectors[0] @ vectors[0].T, eigenspace @ eigenspace.T, atol=1e-12)


def test_matrices_split_over_threads_give_the_serial_results_bit_for_bit():
    rng = np.random.default_rng(1)
    stack = np.stack([rank1_plus_noise(40, rng) for _ in range(13)])
    serial = lapack.top_eigenpairs(stack, 2, workers=1)
    for workers in (2, 3, 13):
        threaded = lapack.top_eigenpairs(stack, 2, workers=workers)
        assert np.array_equal(threaded[0], serial[0]) and np.array_equal(threaded[1], serial[1])


def test_strided_views_are_read_like_copies():
    rng = np.random.default_rng(2)
    gram = np.stack([rank1_plus_noise(30, rng) for _ in range(4)])
    window = gram[:, 5:25, 5:25]  # a window of the Gram, as WindowFit passes it
    from_view = lapack.top_eigenpairs(window, 2)
    from_copy = lapack.top_eigenpairs(np.ascontiguousarray(window), 2)
    assert np.array_equal(from_view[0], from_copy[0]) and np.array_equal(from_view[1], from_copy[1])


def capsule(pointer: int, name: bytes):
    """A real PyCapsule holding `pointer` under the signature `name`, as Cython makes them."""
    new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(
        ("PyCapsule_New", ctypes.pythonapi))
    return new(pointer, name, None)


def test_the_capsule_is_used_only_with_the_signature_the_ctypes_call_passes():
    from scipy.linalg.cython_lapack import __pyx_capi__

    assert lapack._load_dsyevr(__pyx_capi__) is not None
    assert lapack._load_dsyevr({}) is None
    # An ILP64 build declares LAPACK integers 64-bit: the same capsule with `long *` must be refused.
    # (The pointer is never called; `ilp64` outlives the capsule, which keeps a pointer to its name.)
    ilp64 = lapack.DSYEVR_SIGNATURE.replace("int *", "long *").encode()
    fake = capsule(ctypes.cast(ctypes.pythonapi.Py_IncRef, ctypes.c_void_p).value, ilp64)
    assert lapack._load_dsyevr({"dsyevr": fake}) is None
    assert lapack._load_dsyevr({"dsyevr": fake}, expected=ilp64.decode()) is not None  # the check, not the capsule
    assert lapack._load_dsyevr(__pyx_capi__, expected=ilp64.decode()) is None


def test_a_refused_capsule_falls_back_to_scipy_with_the_same_results(monkeypatch):
    from scipy.linalg.cython_lapack import __pyx_capi__

    rng = np.random.default_rng(6)
    stack = np.stack([rank1_plus_noise(30, rng) for _ in range(5)])
    gil_free = lapack.top_eigenpairs(stack, 2)
    monkeypatch.setattr(lapack, "_dsyevr", lapack._load_dsyevr(__pyx_capi__, expected="void (int *)"))
    assert lapack._dsyevr is None
    fallback = lapack.top_eigenpairs(stack, 2)
    for matrix, values, vectors in zip(stack, *fallback):
        assert_matches_eigh(matrix, values, vectors)
    np.testing.assert_allclose(fallback[0], gil_free[0], rtol=0, atol=1e-12 * abs(stack).max())


def test_without_the_capsule_scipy_solves_the_same_problems(monkeypatch):
    rng = np.random.default_rng(4)
    stack = np.stack(list(structured_matrices(25, rng).values()))
    gil_free = lapack.top_eigenpairs(stack, 2)
    monkeypatch.setattr(lapack, "_dsyevr", None)
    fallback = lapack.top_eigenpairs(stack, 2)
    for matrix, values, vectors in zip(stack, *fallback):
        assert_matches_eigh(matrix, values, vectors)
    np.testing.assert_allclose(fallback[0], gil_free[0], rtol=0, atol=1e-12 * abs(stack).max())


def test_no_matrices_and_a_bad_count():
    values, vectors = lapack.top_eigenpairs(np.empty((0, 5, 5)), 2)
    assert values.shape == (0, 2) and vectors.shape == (0, 5, 2)
    for count in (0, 6):
        with pytest.raises(ValueError, match="count"):
            lapack.top_eigenpairs(np.eye(5)[None], count)


def test_a_lapack_error_is_raised_not_returned():
    solver = lapack._Solver(size=10, count=2, lwork=1, liwork=1)  # workspace far too small: info < 0
    np.copyto(solver.matrix, np.eye(10))
    vectors = np.empty((2, 10))
    with pytest.raises(np.linalg.LinAlgError, match="info=-"):
        solver.call(vectors.ctypes.data)


def test_other_python_threads_run_while_a_matrix_is_solved():
    """The point of the module: during dsyevr the GIL is free, so a Python thread keeps ticking.

    Holding the GIL (scipy's wrapper) stops the ticker for about the whole solve.
    """
    rng = np.random.default_rng(5)
    deltas = rng.standard_normal((900, 900))
    matrix = (deltas @ deltas.T)[None]
    stop, longest_pause = threading.Event(), [0.0]

    def tick():
        last = time.perf_counter()
        while not stop.is_set():
            now = time.perf_counter()
            longest_pause[0], last = max(longest_pause[0], now - last), now

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        time.sleep(0.02)
        longest_pause[0] = 0.0
        started = time.perf_counter()
        lapack.top_eigenpairs(matrix, 2, workers=1)
        solve_seconds = time.perf_counter() - started
    finally:
        stop.set()
        ticker.join()
    assert longest_pause[0] < 0.5 * solve_seconds, (longest_pause[0], solve_seconds)
