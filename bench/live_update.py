"""What a live update costs against a full pass, at several run lengths, side by side in one process.

    python bench/live_update.py [--folder /tmp/relex-live-bench] [--lengths 5,10,20,40] [--new 1,4] [--repeats 3]

One synthetic bf16 run (Qwen2-shaped, bench size below) with max(lengths) checkpoints is written
once. For each length N and each batch size K, the two ways of getting the Gram of the first N
checkpoints are timed in turn, on warm files (read once before): the full pass over N
checkpoints (`run_gram_pass`), and growing the Gram of the first N − K by K new ones (`grow_gram`,
what `relex watch` does). Both read every checkpoint once: the new rows G[new, all] need every
earlier Δ_i. The update saves the products: K × N per element instead of N(N+1)/2. Each cell is
the median (min–max) of the repeats; the ratio is of medians. Prints a markdown table.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from relex_core import open_run  # noqa: E402
from relex_core.gram import grow_gram, run_gram_pass  # noqa: E402
from relex_core.stream import open_layout  # noqa: E402
from relex_core.synthetic import TINY, make_run, qwen2_config, qwen2_shapes  # noqa: E402

SIZE = {"layers": 4, "hidden": 384, "intermediate": 1024, "vocab": 8192, "heads": 6, "kv_heads": 2}
INTERVAL = 48


def prepared_run(folder: Path, count: int, size: dict) -> Path:
    steps = tuple(INTERVAL * index for index in range(1, count + 1))
    if (folder / f"checkpoint-{steps[-1]}" / "trainer_state.json").is_file():
        return folder
    return make_run(folder, steps=steps, shapes=qwen2_shapes(**size), config=qwen2_config(**size),
                    dtype=torch.bfloat16)


def warm(folder: Path) -> None:
    for file in folder.rglob("*.safetensors"):
        with open(file, "rb") as handle:
            while handle.read(1 << 24):
                pass


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, default=Path("/tmp/relex-live-bench"))
    parser.add_argument("--lengths", default="5,10,20,40")
    parser.add_argument("--new", default="1,4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="a tiny model (the test suite's smoke run)")
    args = parser.parse_args(argv)
    size = TINY if args.tiny else SIZE
    lengths = [int(value) for value in args.lengths.split(",")]
    batches = [int(value) for value in args.new.split(",")]
    started = time.perf_counter()
    folder = prepared_run(args.folder, max(lengths), size)
    parameters = sum(numel(shape) for shape in qwen2_shapes(**size).values())
    print(f"run: {folder} ({max(lengths)} checkpoints, {parameters:,} "
          f"parameters, bf16; ready in {time.perf_counter() - started:.0f} s)\n")
    warm(folder)
    run = open_run(folder)
    print("| N | K new | full pass s | update s | update ÷ full | max rel. diff |")
    print("|---|---|---|---|---|---|")
    for length in lengths:
        with open_layout(run, checkpoints=range(length)) as layout:
            full = run_gram_pass(layout, progress=False)
            for batch in batches:
                if batch >= length - 1:
                    continue
                with open_layout(run, checkpoints=range(length - batch)) as prefix_layout:
                    prefix = run_gram_pass(prefix_layout, progress=False)
                grown = grow_gram(prefix, layout, progress=False)
                difference = float(np.max(np.abs(grown.gram - full.gram)) / np.max(np.abs(full.gram)))
                full_times, update_times = [], []
                for _ in range(args.repeats):  # alternate, so load from other processes hits both alike
                    full_times.append(timed(lambda: run_gram_pass(layout, progress=False)))
                    update_times.append(timed(lambda: grow_gram(prefix, layout, progress=False)))
                print(f"| {length} | {batch} | {cell(full_times)} | {cell(update_times)} | "
                      f"{statistics.median(update_times) / statistics.median(full_times):.2f} | {difference:.1e} |")


def numel(shape) -> int:
    return int(np.prod(shape))


def cell(times) -> str:
    return f"{statistics.median(times):.2f} ({min(times):.2f}–{max(times):.2f})"


if __name__ == "__main__":
    main()
