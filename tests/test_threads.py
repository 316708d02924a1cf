"""Thread counts, decided once per process: RELEX_THREADS, the affinity mask, a cgroup's CPU quota.

Each case that depends on the process's environment runs in a fresh Python process that sets it
(environment variables, os.sched_setaffinity), as a container or a batch scheduler would.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relex_core import threads

REPO = Path(__file__).resolve().parents[1]
CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

REPORT = """
import json, torch, threadpoolctl
from relex_core import threads
cores = threads.cores()
threads.configure()
blas = sorted({info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"})
print(json.dumps({"cores": cores, "torch": torch.get_num_threads(), "blas": blas}))
"""


def child(code: str, environment: dict | None = None, cpus=None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python with these extra environment variables and this affinity mask."""
    env = {key: value for key, value in os.environ.items() if key != "RELEX_THREADS"} | (environment or {})
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)


def report(environment=None, cpus=None) -> dict:
    done = child(REPORT, environment, cpus)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_by_default_relex_uses_the_cpus_it_may_run_on_with_one_blas_and_torch_thread_each():
    expected = threads.cores_from({})
    assert report() == {"cores": expected, "torch": 1, "blas": [1]}
    assert 1 <= expected <= len(CPUS or [1])


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs to restrict the affinity to one")
def test_the_affinity_mask_limits_the_threads():
    assert report(cpus={CPUS[0]})["cores"] == 1


def test_relex_threads_overrides_the_choice():
    assert report({"RELEX_THREADS": "3"}) == {"cores": 3, "torch": 1, "blas": [1]}
    assert report({"RELEX_THREADS": "1"}, cpus=set(CPUS) or None)["cores"] == 1


def test_a_bad_relex_threads_is_a_one_line_error_with_exit_code_2(tmp_path):
    run = REPO / "sample_data" / "run"
    done = subprocess.run([sys.executable, "-m", "relex_core", "analyze", str(run), "--out", str(tmp_path / "out"),
                           "--cache-dir", str(tmp_path / "cache"), "--quiet"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=os.environ | {"RELEX_THREADS": "many"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "relex: error: RELEX_THREADS must be a whole number of threads, at least 1, not 'many'"


def test_settings_are_made_once_and_a_later_choice_of_the_program_stands():
    code = """
import json, torch
from relex_core import threads, lapack
import numpy as np
threads.configure()
torch.set_num_threads(2)  # the program's own choice, after relex has configured
threads.configure()
lapack.top_eigenpairs(np.eye(4)[None], 1)
print(json.dumps(torch.get_num_threads()))
"""
    done = child(code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == 2


# ---------------------------------------------------------------- cgroup CPU quotas, as the kernel writes them


def cgroup_v2(root: Path, cpu_max: dict) -> Path:
    """A cgroup v2 tree under `root`: {relative folder: cpu.max content}; returns /proc/self/cgroup's stand-in."""
    for folder, content in cpu_max.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(content + "\n")
    proc = root.parent / "proc-self-cgroup"
    proc.write_text("0::/system.slice/job.scope\n")
    return proc


def test_cgroup_v2_quota_and_the_smallest_quota_on_the_way_to_the_root(tmp_path):
    root = tmp_path / "cgroup"
    proc = cgroup_v2(root, {"system.slice/job.scope": "150000 100000", "system.slice": "max 100000", ".": "max"})
    assert threads.cgroup_cpu_limit(root, proc) == 1.5
    assert threads.cores_from({}, root, proc) == min(len(CPUS or [1]), 2)  # 1.5 CPUs: two threads, rounded up
    (root / "system.slice" / "cpu.max").write_text("50000 100000\n")
    assert threads.cgroup_cpu_limit(root, proc) == 0.5
    assert threads.cores_from({}, root, proc) == 1
    assert threads.cores_from({"RELEX_THREADS": "4"}, root, proc) == 4


def test_no_quota_means_the_affinity_decides(tmp_path):
    root = tmp_path / "cgroup"
    proc = cgroup_v2(root, {"system.slice/job.scope": "max 100000"})
    assert threads.cgroup_cpu_limit(root, proc) is None
    assert threads.cores_from({}, root, proc) == len(CPUS or [1])
    assert threads.cgroup_cpu_limit(tmp_path / "nothing", tmp_path / "no-proc-file") is None


def test_cgroup_v1_cfs_quota(tmp_path):
    root = tmp_path / "cgroup"
    folder = root / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("300000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    assert threads.cgroup_cpu_limit(root, proc) == 3.0
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_limit(root, proc) is None
