"""The Gram pass and the export of this checkout against an older commit, each in a fresh process.

    python bench/side_by_side.py RUN --before feb310b --repeats 6

RUN: a run folder or manifest, read warm (its files are read once first). Each measurement is a
new Python process that loads either this checkout's relex_core or the package at --before
(bench/before.py) and times, in-process: the read floor (every tensor of every checkpoint read
once into float32, bench/floor.py), the Gram pass (`open_layout` + `run_gram_pass`, no cache, 256
MB chunks), and the export (one target at twice the last step, window = every checkpoint, rank
1, the Gram from a cache). A fresh process per measurement gives each version the thread
settings it would have on its own. The order alternates from repeat to repeat. At the end the
two versions' Grams are compared (rtol 1e-12) and their exported files byte for byte.
"""

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def modules(code: str, ref: str) -> dict:
    """{name: module} of relex_core (code 'after') or of the package at `ref` (code 'before')."""
    if code == "before":
        from bench.before import package_at
        package = package_at(ref).__name__
    else:
        package = "relex_core"
    return {name: importlib.import_module(f"{package}.{name}")
            for name in ("gram", "analysis", "export", "io.discover")}


def child(task: str, code: str, ref: str, run_source: str, scratch: Path) -> dict:
    """One measurement in this (fresh) process; returns wall and CPU seconds."""
    parts = modules(code, ref)
    run = parts["io.discover"].open_run(run_source)
    if task == "floor":
        from bench.floor import read_floor
        return {"seconds": read_floor(run_source)["seconds"]}
    if task == "pass":
        gram = parts["gram"]
        opener = getattr(gram, "open_layout")  # stream.open_layout, imported into gram after this change
        started, cpu = time.perf_counter(), os.times()
        layout = opener(run)
        try:
            result = gram.run_gram_pass(layout, chunk_mb=256, progress=False)
        finally:
            layout.close()
        timing = _timing(started, cpu)
        np.save(scratch / f"gram-{code}.npy", result.gram)
        return timing
    run_gram = parts["gram"].compute_gram(run, cache_dir=scratch / "cache", progress=False)
    fit = parts["analysis"].WindowFit(run_gram, rank=1)
    out = scratch / f"export-{code}"
    shutil.rmtree(out, ignore_errors=True)
    started, cpu = time.perf_counter(), os.times()
    parts["export"].extrapolate(fit, [2 * int(run_gram.steps[-1])], out, progress=False)
    return _timing(started, cpu)


def _timing(started: float, cpu) -> dict:
    now = os.times()
    return {"seconds": time.perf_counter() - started,
            "cpu": (now.user - cpu.user) + (now.system - cpu.system)}


def measure(task: str, code: str, args, scratch: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, args.run, "--before", args.before, "--child", task,
                           "--code", code, "--scratch", str(scratch)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_exports(first: Path, second: Path) -> bool:
    names = sorted(path.relative_to(first) for path in first.rglob("*.safetensors"))
    return names == sorted(path.relative_to(second) for path in second.rglob("*.safetensors")) and all(
        (first / name).read_bytes() == (second / name).read_bytes() for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--before", default="feb310b", help="git commit of the older relex_core")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--child", choices=("floor", "pass", "export"), help=argparse.SUPPRESS)
    parser.add_argument("--code", choices=("before", "after"), help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.code, args.before, args.run, Path(args.scratch))))
        return
    from bench.run_bench import run_files, warm
    from relex_core.gram import compute_gram
    from relex_core.io.discover import open_run

    scratch = Path(tempfile.mkdtemp(prefix="relex-side-by-side-"))
    try:
        compute_gram(open_run(args.run), cache_dir=scratch / "cache", progress=False)  # for the exports
        warm(run_files(args.run))
        rows = []
        for repeat in range(args.repeats):
            order = ["before", "after"] if repeat % 2 == 0 else ["after", "before"]
            row = {"floor": measure("floor", "after", args, scratch)["seconds"]}
            for task in ("pass", "export"):
                for code in order:
                    row[f"{task} {code}"] = measure(task, code, args, scratch)
            rows.append(row)
            print(f"repeat {repeat + 1} ({' then '.join(order)}): floor {row['floor']:.2f} s; " + "; ".join(
                f"{task} before {row[f'{task} before']['seconds']:.2f} s (cpu {row[f'{task} before']['cpu']:.2f}), "
                f"after {row[f'{task} after']['seconds']:.2f} s (cpu {row[f'{task} after']['cpu']:.2f}), "
                f"after/before {row[f'{task} after']['seconds'] / row[f'{task} before']['seconds']:.2f}"
                for task in ("pass", "export")), flush=True)
        for task in ("pass", "export"):
            before = [row[f"{task} before"]["seconds"] for row in rows]
            after = [row[f"{task} after"]["seconds"] for row in rows]
            ratios = np.divide(after, before)
            print(f"{task}: median before {np.median(before):.2f} s, after {np.median(after):.2f} s; after/before "
                  f"median {np.median(ratios):.2f} (range {ratios.min():.2f}–{ratios.max():.2f}); median ÷ floor "
                  f"before {np.median(np.divide(before, [row['floor'] for row in rows])):.2f}, "
                  f"after {np.median(np.divide(after, [row['floor'] for row in rows])):.2f}")
        old, new = np.load(scratch / "gram-before.npy"), np.load(scratch / "gram-after.npy")
        scale = np.abs(old).max(axis=(1, 2), keepdims=True)
        difference = float(np.max(np.abs(new - old) / np.where(scale > 0, scale, 1.0)))
        print(f"Grams: largest difference {difference:.1e} of a tensor's largest entry; exports byte-identical: "
              f"{same_exports(scratch / 'export-before', scratch / 'export-after')}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
