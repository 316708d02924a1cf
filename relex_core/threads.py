"""How many threads relex uses, decided once per process.

relex splits its heavy work over its own pools of `cores()` Python threads (the Gram pass's
products, the export's sums, the eigensolver's matrices): the calls inside release the GIL
(BLAS, LAPACK through ctypes, torch's kernels). Each of those calls then runs on one thread
itself, so `configure()` sets BLAS (through threadpoolctl) and torch's intra-op pool to one
thread, once, the first time relex computes anything. Libraries threading on top of relex's
pool would oversubscribe the cores (measurements: bench/STUDIES.md, bench/RESULTS.md's pass variants).

Nothing is saved and restored around calls: two dashboard sessions, or a pass beside an export,
share one setting and cannot restore each other's stale values.

`cores()` is the number of CPUs this process may really use: the affinity mask, capped by a
container's cgroup CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`). `RELEX_THREADS=N` overrides it.
"""

import functools
import math
import os
import threading
from pathlib import Path

from .errors import RelexError

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")

_configured = False
_configure_lock = threading.Lock()


@functools.cache
def cores() -> int:
    """Threads in relex's pools: $RELEX_THREADS, else the usable CPUs (affinity and cgroup quota)."""
    return cores_from(os.environ)


def cores_from(environ, cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """`cores()` for this environment and these cgroup files (the arguments make it testable)."""
    override = environ.get("RELEX_THREADS", "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            raise RelexError(f"RELEX_THREADS must be a whole number of threads, at least 1, not '{override}'")
        return int(override)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    if quota is not None:
        usable = min(usable, max(1, math.ceil(quota)))
    return max(1, usable)


def cgroup_cpu_limit(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs' worth of time this process's cgroup may use (quota / period), or None when unlimited.

    A quota anywhere on the way from the process's cgroup up to the root applies, so the
    smallest one counts. Inside a container the process's cgroup is usually the root itself.
    """
    limits = [limit for folder in _cgroup_folders(cgroup_root, proc_cgroup)
              for limit in (_cpu_max(folder / "cpu.max"),
                            _cfs_quota(folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us"))
              if limit is not None]
    return min(limits) if limits else None


def _cgroup_folders(cgroup_root: Path, proc_cgroup: Path) -> list[Path]:
    """The folders of this process's cgroup and its ancestors, in v2 and in v1's cpu hierarchy."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    folders = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2: "0::/path"
            mounts = [cgroup_root]
        elif "cpu" in controllers.split(","):  # v1: "4:cpu,cpuacct:/path"
            mounts = [cgroup_root / controllers, cgroup_root / "cpu", cgroup_root / "cpu,cpuacct"]
        else:
            continue
        relative = Path(path.strip().lstrip("/"))
        for mount in mounts:
            for ancestor in (relative, *relative.parents):
                folders.append(mount / ancestor)
    folders.append(cgroup_root)  # a container whose /proc/self/cgroup names a path it cannot see
    return list(dict.fromkeys(folders))


def _cpu_max(path: Path) -> float | None:
    """cgroup v2 `cpu.max`: "QUOTA PERIOD" in microseconds, QUOTA "max" for no limit."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _cfs_quota(quota_path: Path, period_path: Path) -> float | None:
    """cgroup v1: `cpu.cfs_quota_us` (-1 for no limit) over `cpu.cfs_period_us`."""
    try:
        quota, period = int(quota_path.read_text()), int(period_path.read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def configure() -> None:
    """BLAS and torch intra-op on one thread each, for the whole process; later calls do nothing.

    relex calls it before its first heavy call (the pass, the export, the eigensolver). A
    program that wants other settings for its own work can set them after relex has run.
    """
    global _configured
    if _configured:
        return
    with _configure_lock:
        if _configured:
            return
        import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS, so that the limit reaches it too)
        import torch
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")  # applied now and kept: never restored
        torch.set_num_threads(1)
        _configured = True
