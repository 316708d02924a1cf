"""Window change latency, before and after the GIL-free eigensolver, side by side in one process.

    python bench/window_latency.py [--before REF] [--repeats 15] [--sweeps 3]

'Before' is relex_core/window.py and analysis.py at git REF (default: the commit this work
started from), loaded from git as separate modules beside the current ones; both see the same
synthetic RunGram (bench/run_bench.synthetic_run_gram: 290 tensors × 100 checkpoints). Calls
alternate before/after, so load from other processes hits both alike; each cell is the median
and (min–max) over the repeats. Prints a markdown table.
"""

import argparse
import importlib
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.run_bench import synthetic_run_gram  # noqa: E402
from relex_core import analysis, lapack, threads, window  # noqa: E402

STARTED_FROM = "522304cc845c46cbeac1fb7b4cd3f475d601af94"  # main before the GIL-free eigensolver
TENSORS, CHECKPOINTS = 290, 100


def load_before(ref: str) -> types.ModuleType:
    """relex_core at `ref` as the package `relex_before` (bench/before.py), with its window and analysis loaded."""
    from bench.before import package_at

    package = package_at(ref)
    for name in ("window", "analysis"):
        importlib.import_module(f"{package.__name__}.{name}")
    return package


def seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def side_by_side(functions: dict, repeats: int, cpu: dict | None = None) -> dict:
    """{label: [wall seconds, ...]}: the functions called in turn, `repeats` rounds, after one
    warm-up each. `cpu`, if given, gets {label: [process CPU seconds / wall seconds, ...]}:
    about 1 for one busy thread, up to the core count when threads really run side by side."""
    for function in functions.values():
        function()
    times = {label: [] for label in functions}
    for _ in range(repeats):
        for label, function in functions.items():
            cpu_started = time.process_time()
            times[label].append(seconds(function))
            if cpu is not None:
                cpu.setdefault(label, []).append((time.process_time() - cpu_started) / times[label][-1])
    return times


def cell(values) -> str:
    values = 1e3 * np.asarray(values)
    return f"{np.median(values):.1f} ({values.min():.1f}–{values.max():.1f})"


def check_same_results(before, run_gram, windows) -> None:
    """The after path must give the before path's numbers (same maths, other solver and indexing)."""
    for window_text in windows:
        old = before.analysis.WindowFit(run_gram, window_text).backtest_frame(by="tensor")
        new = analysis.WindowFit(run_gram, window_text).backtest_frame(by="tensor")
        assert old[["tensor", "target_step", "method"]].equals(new[["tensor", "target_step", "method"]])
        np.testing.assert_allclose(new[["rel_error", "cosine"]].to_numpy(), old[["rel_error", "cosine"]].to_numpy(),
                                   rtol=1e-9, atol=1e-12)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=STARTED_FROM, help="git ref of the window.py/analysis.py to compare")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sweeps", type=int, default=3, help="passes over the 50 random windows")
    args = parser.parse_args()
    before = load_before(args.before)
    run_gram = synthetic_run_gram(TENSORS, CHECKPOINTS)
    steps = run_gram.steps
    full = f"{steps[0]}:{steps[-2]}"  # 99 checkpoints, the last one left to backtest
    check_same_results(before, run_gram, [full, f"{steps[3]}:{steps[40]}", f"{steps[0]}:{steps[1]}"])
    load = os.getloadavg()[0]

    print(f"{TENSORS} tensors × {CHECKPOINTS} checkpoints, {threads.cores()} cores, before = {args.before[:10]}, "
          f"dsyevr capsule: {'yes' if lapack._dsyevr is not None else 'no (scipy fallback)'}; "
          f"ms, median (min–max) over {args.repeats} repeats\n")

    grams = np.ascontiguousarray(run_gram.gram[:, :99, :99])
    cpu_share = {}
    eigen = side_by_side({
        "before: scipy eigh(subset, evr), serial": lambda: before.window._top_eigenpairs(grams, 2),
        "after, 1 thread": lambda: lapack.top_eigenpairs(grams, 2, workers=1),
        f"after, {threads.cores()} threads (default)": lambda: window._top_eigenpairs(grams, 2)}, args.repeats,
        cpu_share)
    print("| top-2 eigenpairs of 290 × (99 × 99) Grams | ms | CPU time / wall time |\n|---|---|---|")
    for label, values in eigen.items():
        print(f"| {label} | {cell(values)} | {np.median(cpu_share[label]):.2f} |")

    print("\n| window change (WindowFit + backtest_frame), T checkpoints | before | after | before / after |")
    print("|---|---|---|---|")
    for size in (10, 25, 50, 99):
        window_text = f"{steps[0]}:{steps[size - 1]}"
        times = side_by_side({
            "before": lambda: before.analysis.WindowFit(run_gram, window_text).backtest_frame(),
            "after": lambda: analysis.WindowFit(run_gram, window_text).backtest_frame()}, args.repeats)
        ratio = np.median(times["before"]) / np.median(times["after"])
        print(f"| T = {size} ({window_text}) | {cell(times['before'])} | {cell(times['after'])} | {ratio:.2f}× |")

    # The random windows of bench/run_bench.window_latency (same generator and seed).
    rng = np.random.default_rng(1)
    windows, sizes = [], []
    for _ in range(50):
        first = int(rng.integers(0, len(steps) - 3))
        last = int(rng.integers(first + 1, len(steps) - 1))
        windows.append(f"{steps[first]}:{steps[last]}")
        sizes.append(last - first + 1)
    medians = {"before": [], "after": []}
    worst = {"before": [], "after": []}
    for _ in range(args.sweeps):
        sweep = {"before": [], "after": []}
        for window_text in windows:
            sweep["before"].append(seconds(lambda: before.analysis.WindowFit(run_gram, window_text).backtest_frame()))
            sweep["after"].append(seconds(lambda: analysis.WindowFit(run_gram, window_text).backtest_frame()))
        for label, values in sweep.items():
            medians[label].append(np.median(values))
            worst[label].append(np.max(values))
    print(f"\n| 50 random windows (median T = {np.median(sizes):.0f}), over {args.sweeps} sweeps | before | after |"
          "\n|---|---|---|")
    print(f"| median over the 50 windows | {cell(medians['before'])} | {cell(medians['after'])} |")
    print(f"| slowest of the 50 windows | {cell(worst['before'])} | {cell(worst['after'])} |")
    print(f"\nload average (1 min) at start {load:.2f}, at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
