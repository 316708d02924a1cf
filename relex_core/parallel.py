"""How relex uses the cores it may run on.

Work is split over CORES Python threads where the heavy calls release the GIL (LAPACK through
ctypes, numpy's batched eigh, torch's element-wise kernels), and each of those calls runs on one
thread itself: on a small machine, OpenBLAS's and OpenMP's own threads on top oversubscribe the
cores and made small problems ~10× slower (measured on 2 cores). The streaming passes pin torch
the same way (gram.pass_torch_threads).
"""

import functools
import os

from threadpoolctl import ThreadpoolController

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


def one_blas_thread():
    """Context: OpenBLAS on one thread.

    One controller, found once: threadpool_limits() looks the libraries up on every call (~1 ms).
    """
    return _blas_controller().limit(limits=1, user_api="blas")
