"""Warm in-process export timing against a read floor, with an older export.py side by side.

    python bench/export_vs_floor.py /tmp/relex-export-run --before feb310b

RUN is any run (a folder or a manifest); a missing folder is made first (synthetic, Qwen2-like,
bf16, 8 checkpoints). The export is one target at twice the last step, window = every checkpoint,
rank 1, read warm. The floor reads every window tensor once with `stream.read_rows` (reused buffer)
and writes the output's size once; the process's CPU seconds (user + system) are shown beside.
--before takes a git commit whose relex_core is loaded beside this one (bench/before.py); both
run in this process, so they share its thread settings (bench/side_by_side.py runs each alone).
"""

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from relex_core import export  # noqa: E402
from relex_core.analysis import WindowFit  # noqa: E402
from relex_core.gram import compute_gram, pass_items  # noqa: E402
from relex_core.io.discover import open_run  # noqa: E402
from relex_core.stream import chunk_bytes, open_layout, read_rows  # noqa: E402
from relex_core.synthetic import make_run, qwen2_shapes  # noqa: E402

SHAPES = dict(layers=4, hidden=896, intermediate=4864, vocab=32000, heads=14, kv_heads=2)
STEPS = tuple(range(10, 90, 10))  # 8 checkpoints after the base


def floor(run, out: Path) -> float:
    """Read every tensor of every checkpoint once (as the export must), write the output size once."""
    layout = open_layout(run)
    started = time.perf_counter()
    try:
        items = pass_items(layout, 256)
        buffer = torch.empty(chunk_bytes(layout, items), dtype=torch.uint8)
        out.mkdir(parents=True)
        with open(out / "model.safetensors", "wb") as file:
            for item in items:
                rows = read_rows(layout, item, out=buffer)
                file.write(rows[0].view(torch.uint8).numpy().data)
    finally:
        layout.close()
    return time.perf_counter() - started


def _cpu_seconds(before, after) -> float:
    return (after.user - before.user) + (after.system - before.system)


def load_before(ref: str):
    from bench.before import package_at

    return importlib.import_module(f"{package_at(ref).__name__}.export")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--before", default=None, help="a git commit whose export to time beside this one")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = Path(args.run)
    if not folder.exists():
        make_run(folder, steps=STEPS, shapes=qwen2_shapes(**SHAPES), dtype=torch.bfloat16)
    run = open_run(folder)
    scratch = Path(tempfile.mkdtemp(prefix="relex-export-bench-"))
    run_gram = compute_gram(run, cache_dir=scratch / "cache", progress=False)
    fit = WindowFit(run_gram, rank=1)
    target = 2 * int(run_gram.steps[-1])
    versions = {"after": export}
    if args.before:
        versions = {"before": load_before(args.before), **versions}
    try:
        floor(run, scratch / "warm")  # warm the page cache
        shutil.rmtree(scratch / "warm")
        rows = []
        for repeat in range(args.repeats):
            # Alternate the order (floor, before, after / after, before, floor): on a shared machine
            # whatever runs first or last in a repeat should not always be the same version.
            order = [("floor", None), *versions.items()]
            order = order if repeat % 2 == 0 else order[::-1]
            seconds, cpu = {}, {}
            for label, module in order:
                started, before = time.perf_counter(), os.times()
                if module is None:
                    floor(run, scratch / label)
                else:
                    module.extrapolate(fit, [target], scratch / label, progress=False)
                seconds[label] = time.perf_counter() - started
                cpu[label] = _cpu_seconds(before, os.times())
                shutil.rmtree(scratch / label)
            rows.append(seconds)
            print(f"repeat {repeat + 1}: " + ", ".join(
                f"{label} {seconds[label]:.2f} s, cpu {cpu[label]:.2f} s"
                + ("" if label == "floor" else f" ({seconds[label] / seconds['floor']:.2f}× floor)")
                for label in ("floor", *versions)), flush=True)
        medians = {label: float(np.median([row[label] for row in rows])) for label in rows[0]}
        ratios = {label: float(np.median([row[label] / row["floor"] for row in rows])) for label in versions}
        print("median: " + ", ".join(f"{label} {value:.2f} s" for label, value in medians.items())
              + "; median ratio to the floor: " + ", ".join(f"{label} {value:.2f}×" for label, value in ratios.items()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
