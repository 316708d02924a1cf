"""Symmetric top-k eigenpairs without holding the GIL.

scipy.linalg.eigh(subset_by_index=...) reaches LAPACK's dsyevr through an f2py wrapper that keeps
the GIL for the whole call, so a loop over hundreds of small Grams runs on one core whatever the
threads. scipy also exports the same dsyevr as a plain C function for Cython
(scipy.linalg.cython_lapack); ctypes releases the GIL while a foreign function runs, so calling
that pointer lets each thread solve its share of the matrices at the same time.
The pointer is used only when its capsule's signature string is the one this module passes
arguments for (32-bit LAPACK integers, doubles); otherwise (an ILP64 build, another scipy) the
same solver runs serially through scipy.
"""

import ctypes
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.linalg

from . import threads

# cython_lapack declares LAPACK integers as C `int` (32-bit): scipy's own OpenBLAS is LP64.
_INT = np.intc

# dsyevr(jobz, range, uplo, n, a, lda, vl, vu, il, iu, abstol, m, w, z, ldz, isuppz, work, lwork,
# iwork, liwork, info), every argument by address (Fortran), as the capsule names them once
# Cython's typedef of double (`__pyx_t_..._d`) is written `double`.
DSYEVR_SIGNATURE = ("void (char *, char *, char *, int *, double *, int *, double *, double *, int *, int *, "
                    "double *, int *, double *, double *, int *, int *, double *, int *, int *, int *, int *)")


def _plain_signature(capsule_name: str) -> str:
    """A capsule's signature with Cython's double typedef spelled `double`."""
    return re.sub(r"__pyx_t_\w*?cython_lapack_d\b", "double", capsule_name)


def _load_dsyevr(capi=None, expected: str = DSYEVR_SIGNATURE):
    """scipy's Cython-facing dsyevr as a ctypes function, or None where the capsule is missing or
    its signature is not `expected` (calling it with the wrong integer width would corrupt memory).

    capi: the `__pyx_capi__` dict to look in (default scipy.linalg.cython_lapack's).
    """
    if capi is None:
        try:
            from scipy.linalg.cython_lapack import __pyx_capi__ as capi
        except ImportError:
            return None
    capsule = capi.get("dsyevr")
    if capsule is None:
        return None
    # Own prototypes rather than setting argtypes on ctypes.pythonapi, which other code shares.
    capsule_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(("PyCapsule_GetName", ctypes.pythonapi))
    name = capsule_name(capsule)
    if name is None or _plain_signature(name.decode()) != expected:
        return None
    capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
        ("PyCapsule_GetPointer", ctypes.pythonapi))
    address = capsule_pointer(capsule, name)
    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 21)(address)


_dsyevr = _load_dsyevr()


class _Solver:
    """One thread's dsyevr for size × size matrices, top `count` pairs, with its own buffers.

    Every argument lives in a buffer made once, so a solve is one copy in and one foreign call.
    """

    def __init__(self, size: int, count: int, lwork: int, liwork: int):
        self.size, self.count = size, count
        self.matrix = np.empty((size, size))  # dsyevr overwrites its input: solve a copy
        self.values = np.empty(size)  # LAPACK asks for room for all n eigenvalues (W is dimension N)
        # n, lda, il, iu, m (found), ldz, lwork, liwork, info. range='I' asks for eigenvalues
        # il..iu of n (1-based, ascending), so the top `count` are size-count+1 .. size.
        self.ints = np.array([size, size, size - count + 1, size, 0, size, lwork, liwork, 0], dtype=_INT)
        self.floats = np.zeros(3)  # vl, vu (unused with range='I'), abstol = 0: LAPACK's default, as scipy's
        self.isuppz = np.empty(2 * count, dtype=_INT)
        self.work = np.empty(max(1, lwork))
        self.iwork = np.empty(max(1, liwork), dtype=_INT)
        # The Gram is symmetric, so its C-order buffer is also its Fortran (column-major) layout;
        # Fortran sees the transpose, so uplo='U' reads the triangle numpy and scipy read by default ('L').
        self.letters = [ctypes.create_string_buffer(letter) for letter in (b"V", b"I", b"U")]
        n, lda, il, iu, found, ldz, lwork_at, liwork_at, info = (
            self.ints.ctypes.data + index * self.ints.itemsize for index in range(9))
        vl, vu, abstol = (self.floats.ctypes.data + index * 8 for index in range(3))
        self.arguments_before_w = [*(ctypes.addressof(letter) for letter in self.letters), n,
                                   self.matrix.ctypes.data, lda, vl, vu, il, iu, abstol, found,
                                   self.values.ctypes.data]
        self.arguments_after_z = [ldz, self.isuppz.ctypes.data, self.work.ctypes.data, lwork_at,
                                  self.iwork.ctypes.data, liwork_at, info]

    def call(self, vectors_at: int, query: bool = False) -> None:
        """dsyevr on self.matrix: the top `count` eigenvalues, ascending, to self.values[:count],
        their eigenvectors one after the other (Fortran's size × count Z) to the doubles at vectors_at."""
        _dsyevr(*self.arguments_before_w, vectors_at, *self.arguments_after_z)
        found, info = self.ints[4], self.ints[8]
        if info != 0 or (found != self.count and not query):
            raise np.linalg.LinAlgError(f"LAPACK dsyevr failed on a {self.size}×{self.size} matrix "
                                        f"(info={info}, found {found} of {self.count} eigenpairs)")


def _workspace_sizes(size: int, count: int) -> tuple[int, int]:
    """Optimal lwork and liwork for this problem size, by LAPACK's query (lwork = liwork = -1)."""
    query = _Solver(size, count, -1, -1)
    vectors = np.empty((count, size))
    query.call(vectors.ctypes.data, query=True)
    return int(query.work[0]), int(query.iwork[0])


def top_eigenpairs(matrices: np.ndarray, count: int, workers: int | None = None):
    """Largest `count` eigenpairs of each symmetric matrix in (n, size, size), in ascending order.

    Returns values (n, count) and vectors (n, size, count), like scipy.linalg.eigh with
    subset_by_index=[size - count, size - 1]. The matrices are split over `workers` threads
    (default `threads.cores()`), each LAPACK call on one BLAS thread (`threads.configure`).
    """
    n_matrices, size, _ = matrices.shape
    if not 1 <= count <= size:
        raise ValueError(f"count must be between 1 and the matrix size {size}, got {count}")
    threads.configure()
    if _dsyevr is None:
        return _scipy_top_eigenpairs(matrices, count)
    values = np.empty((n_matrices, count))
    # Row j of vectors_by_row[i] is eigenvector j: the column-major Z that dsyevr writes.
    vectors_by_row = np.empty((n_matrices, count, size))
    if n_matrices:
        lwork, liwork = _workspace_sizes(size, count)
        workers = max(1, min(workers or threads.cores(), n_matrices))
        vectors_at = vectors_by_row.ctypes.data

        def solve_share(indices):
            solver = _Solver(size, count, lwork, liwork)
            for index in indices.tolist():
                np.copyto(solver.matrix, matrices[index])
                solver.call(vectors_at + index * count * size * 8)
                values[index] = solver.values[:count]

        shares = np.array_split(np.arange(n_matrices), workers)
        if workers == 1:
            solve_share(shares[0])
        else:
            with ThreadPoolExecutor(workers) as pool:
                for finished in [pool.submit(solve_share, share) for share in shares]:
                    finished.result()  # re-raises a worker's LinAlgError here
    return values, vectors_by_row.transpose(0, 2, 1)


def _scipy_top_eigenpairs(matrices: np.ndarray, count: int):
    """The same dsyevr through scipy's wrapper, one matrix after another (it holds the GIL)."""
    n_matrices, size, _ = matrices.shape
    pairs = [scipy.linalg.eigh(matrix, subset_by_index=[size - count, size - 1], driver="evr",
                               check_finite=False) for matrix in matrices]
    values = np.array([pair[0] for pair in pairs]).reshape(n_matrices, count)
    vectors = np.array([pair[1] for pair in pairs]).reshape(n_matrices, size, count)
    return values, vectors
