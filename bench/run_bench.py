"""relex against the cost of reading the run, side by side in one run; writes bench/RESULTS.md.

    python bench/run_bench.py                      # full benchmark (~10 min, ~25 GB in /work/bench-data)
    python bench/run_bench.py --data DIR --out FILE

What it measures (every timed command is a fresh subprocess under `/usr/bin/time -v`, or
os.wait4 where that tool is missing, for wall time and peak RSS):
  1. read floor: bench/floor.py reads every tensor of every checkpoint once into float32,
     with relex's reader and chunk plan;
  2. `relex analyze` on the same run: wall, peak RSS, GB/s, ratio to the floor;
  3. the naive approach (bench/naive.py: load everything, stack, torch.linalg.svd per tensor)
     against relex on a run small enough to fit, with the largest difference in their numbers;
  4. `relex extrapolate` against its floor (read the window once + write the output), when the
     export command exists in this checkout;
  5. window-change latency: WindowFit + backtest_frame for ~300 tensors × 100 checkpoints
     from a synthetic Gram (no I/O), median over random windows;
  6. a scaling table: T = 5, 10, 20 checkpoints for two model sizes.
Runs that do not fit the page cache are measured cold (their files evicted with
posix_fadvise before each command); small ones warm (read once before). Pairs are run in
alternating order (floor, relex, relex, floor, ...) because the machine is shared and noisy.
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.generate import generate, model_dims, parameter_count  # noqa: E402
from relex_core.analysis import WindowFit  # noqa: E402
from relex_core import threads  # noqa: E402
from relex_core.gram import RunGram, run_gram_pass  # noqa: E402
from relex_core.io.discover import Checkpoint, Run, open_run  # noqa: E402
from relex_core.stream import open_layout  # noqa: E402
from relex_core.synthetic import TINY, qwen2_shapes  # noqa: E402

PYTHON = sys.executable
TIME_TOOL = "/usr/bin/time"


@dataclass
class BenchConfig:
    """What to run. The defaults are the full benchmark; `smoke()` is the few-second version."""
    data: Path = Path("/work/bench-data")
    sizes: dict = field(default_factory=lambda: {"0.5B": model_dims(), "mini": model_dims(layers=4, vocab=32768)})
    checkpoint_counts: tuple = (5, 10, 20)
    warm_sizes: tuple = ("mini",)          # sizes small enough to measure with the run in the page cache
    headline: tuple = ("0.5B", 20)         # the target run: analyze ≤ 1.5× floor, peak RSS ≤ 1.5 GB
    # naive SVD against relex: (size, T, SVD dtype); float32 as reference scripts do, float64 to check accuracy
    naive_runs: tuple = (("mini", 10, "float32"), ("mini", 5, "float64"))
    export_runs: tuple = (("0.5B", 20), ("mini", 20))  # extrapolate against its floor on these
    repeats: int = 2                       # floor/relex pairs per scaling row (alternating order)
    chunk_mb: float = 256
    window_tensors: int = 290              # Qwen2-0.5B has 290 analysed tensors
    window_checkpoints: int = 100
    window_trials: int = 50
    ablations: bool = True                 # prefetch on/off, chunk size, threads (in-process)
    before_commit: str | None = "0328d4f"  # the pass before this branch, for a before/after row
    shard_gb: float = 2.0

    @classmethod
    def smoke(cls, data) -> "BenchConfig":
        tiny = dict(TINY)
        return cls(data=Path(data), sizes={"tiny": tiny}, checkpoint_counts=(4,), warm_sizes=("tiny",),
                   headline=("tiny", 4), naive_runs=(("tiny", 4, "float64"),), export_runs=(("tiny", 4),), repeats=1,
                   window_tensors=12, window_checkpoints=12, window_trials=5, ablations=False,
                   before_commit=None, shard_gb=0.00002)


# ---------------------------------------------------------------- measuring commands
def measure(command, cwd=REPO) -> dict:
    """Run a command; wall seconds, peak RSS in MB and its stdout. Raises if it fails.

    Peak RSS comes from `/usr/bin/time -v` when present, else from the child's own rusage (wait4).
    """
    time_tool = TIME_TOOL if Path(TIME_TOOL).exists() else None
    with tempfile.TemporaryDirectory() as folder:
        report, stdout, stderr = (Path(folder) / name for name in ("time.txt", "stdout.txt", "stderr.txt"))
        full = [time_tool, "-v", "-o", str(report), *command] if time_tool else list(command)
        with open(stdout, "w") as out, open(stderr, "w") as err:
            started = time.perf_counter()
            process = subprocess.Popen(full, cwd=cwd, stdout=out, stderr=err)
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise RuntimeError(f"{' '.join(map(str, command))} failed ({process.returncode}): "
                               f"{stderr.read_text()[-2000:]}")
        if time_tool:
            peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report.read_text()).group(1))
        else:
            peak_kb = usage.ru_maxrss  # kB on Linux
        return {"seconds": wall, "peak_rss_mb": peak_kb / 1024, "stdout": stdout.read_text()}


def run_files(run_source) -> list[Path]:
    run = open_run(run_source)
    files = []
    for checkpoint in (run.base, *run.checkpoints):
        path = Path(checkpoint.path)
        files += sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    return files


def evict(files) -> None:
    """Drop these files from the page cache (clean pages only; nothing else is touched)."""
    for file in files:
        descriptor = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def warm(files) -> None:
    """Read these files once so they sit in the page cache."""
    for file in files:
        with open(file, "rb", buffering=0) as handle:
            while handle.read(64 << 20):
                pass


def prepare_cache(files, cached: bool) -> None:
    warm(files) if cached else evict(files)


# ---------------------------------------------------------------- runs
def make_runs(config: BenchConfig, log) -> dict:
    """Generate (or reuse) one run per model size with the most checkpoints; manifests for fewer."""
    runs = {}
    largest = max(config.checkpoint_counts)
    manifests = config.data / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    for size, dims in config.sizes.items():
        folder = config.data / f"qwen2-{size.lower()}"
        log(f"run {size}: generating or reusing {folder}")
        description = generate(folder, dims=dims, checkpoints=largest, shard_gb=config.shard_gb)
        steps = description["run"]["steps"]
        for count in config.checkpoint_counts:
            manifest = manifests / f"{size.lower()}-T{count}.csv"
            rows = [(0, folder / "checkpoint-0")] + [(step, folder / f"checkpoint-{step}") for step in steps[:count]]
            manifest.write_text("step,path\n" + "".join(f"{step},{path}\n" for step, path in rows))
            runs[(size, count)] = manifest
        runs[size] = {"folder": folder, "parameters": parameter_count(dims), "generation": description}
    return runs


def relex_command(subcommand, run, out, config: BenchConfig, cache_dir, *extra, fresh: bool = True) -> list:
    """A relex CLI call; fresh: ignore the Gram cache (a full pass), else use what analyze cached."""
    return [PYTHON, "-m", "relex_core", subcommand, str(run), "--out", str(out), *(["--no-cache"] if fresh else []),
            "--cache-dir", str(cache_dir), "--chunk-mb", str(config.chunk_mb), "--quiet", *extra]


def floor_vs_relex(run, config: BenchConfig, cached: bool, work: Path, code=REPO) -> list[dict]:
    """`repeats` pairs of (floor, relex analyze) in alternating order, each after a cache reset."""
    files = run_files(run)
    rows = []
    for repeat in range(config.repeats):
        order = ("floor", "relex") if repeat % 2 == 0 else ("relex", "floor")
        row = {}
        for kind in order:
            prepare_cache(files, cached)
            if kind == "floor":
                result = measure([PYTHON, str(REPO / "bench" / "floor.py"), str(run), "--chunk-mb", str(config.chunk_mb)])
                floor = json.loads(result["stdout"])
                row["floor"] = result | {"read_s": floor["seconds"], "bytes": floor["bytes"]}
            else:
                out = work / f"analyze-{run.stem}-{repeat}"
                row["relex"] = measure(relex_command("analyze", run, out, config, work / "cache"), cwd=code)
                row["relex"]["out"] = out
        rows.append(row)
    return rows


# ---------------------------------------------------------------- sections
def scaling(config: BenchConfig, runs: dict, work: Path, log) -> list[dict]:
    table = []
    for size in config.sizes:
        cached = size in config.warm_sizes
        for count in config.checkpoint_counts:
            log(f"scaling: {size} T={count} ({'warm' if cached else 'cold'})")
            pairs = floor_vs_relex(runs[(size, count)], config, cached, work)
            for repeat, pair in enumerate(pairs):
                table.append({"model": size, "parameters": runs[size]["parameters"], "T": count,
                              "cache": "warm" if cached else "cold", "repeat": repeat + 1,
                              "GB": pair["floor"]["bytes"] / 1e9, "floor_s": pair["floor"]["seconds"],
                              "floor_read_s": pair["floor"]["read_s"],
                              "relex_s": pair["relex"]["seconds"], "ratio": pair["relex"]["seconds"] / pair["floor"]["seconds"],
                              "relex_GBps": pair["floor"]["bytes"] / 1e9 / pair["relex"]["seconds"],
                              "floor_peak_mb": pair["floor"]["peak_rss_mb"], "relex_peak_mb": pair["relex"]["peak_rss_mb"],
                              "relex_out": str(pair["relex"]["out"])})
    return table


def naive_comparison(config: BenchConfig, runs: dict, table: list[dict], work: Path, log) -> list[dict]:
    """Naive full-SVD script against relex analyze on the same runs, and their largest disagreement."""
    comparisons = []
    for size, count, dtype in config.naive_runs:
        run = runs[(size, count)]
        cached = size in config.warm_sizes
        log(f"naive {dtype} SVD on {size} T={count}")
        prepare_cache(run_files(run), cached)
        out = work / f"naive-{size}-{count}-{dtype}.csv"
        naive = measure([PYTHON, str(REPO / "bench" / "naive.py"), str(run), str(out), "--dtype", dtype])
        relex_rows = [row for row in table if row["model"] == size and row["T"] == count]
        relex = pd.read_csv(Path(relex_rows[0]["relex_out"]) / "tensors.csv").set_index("tensor")
        reference = pd.read_csv(out).set_index("tensor").loc[relex.index]
        differences, worst = {}, {}
        for column in ("sigma_1", "energy_rank1", "slope", "r2"):
            relative = np.abs(relex[column] - reference[column]) / np.abs(reference[column]).clip(lower=1e-300)
            differences[column], worst[column] = float(relative.max()), str(relative.idxmax())
        comparisons.append({"model": size, "T": count, "cache": "warm" if cached else "cold", "dtype": dtype,
                            "naive_s": naive["seconds"], "naive_peak_mb": naive["peak_rss_mb"],
                            "relex_s": float(np.median([row["relex_s"] for row in relex_rows])),
                            "relex_peak_mb": float(max(row["relex_peak_mb"] for row in relex_rows)),
                            "tensors": len(relex), "max_relative_difference": differences, "worst_tensor": worst})
    return comparisons


def export_comparison(config: BenchConfig, runs: dict, work: Path, log) -> list[dict] | None:
    """`relex extrapolate` (Gram from the cache the scaling rows wrote, so the export alone is timed)
    against its floor: read the window's checkpoints once and write one model (bench/floor.py --write)."""
    if not (REPO / "relex_core" / "export.py").exists():
        return None
    rows = []
    for size, count in config.export_runs:
        run = runs[(size, count)]
        cached = size in config.warm_sizes
        target = 2 * runs[size]["generation"]["run"]["steps"][count - 1]
        files = run_files(run)
        for repeat in range(config.repeats):
            order = ("floor", "relex") if repeat % 2 == 0 else ("relex", "floor")
            row = {"model": size, "T": count, "cache": "warm" if cached else "cold", "repeat": repeat + 1,
                   "target_step": target}
            for kind in order:
                log(f"export: {kind} {size} T={count} repeat {repeat + 1}")
                out = work / f"export-{kind}"
                prepare_cache(files, cached)
                if kind == "floor":
                    result = measure([PYTHON, str(REPO / "bench" / "floor.py"), str(run), "--chunk-mb",
                                      str(config.chunk_mb), "--write", str(out), "--shard-gb", "5"])
                else:
                    result = measure(relex_command("extrapolate", run, out, config, work / "cache", "--target",
                                                   str(target), "--window", f":{target // 2}", fresh=False))
                row[f"{kind}_s"] = result["seconds"]
                row[f"{kind}_peak_mb"] = result["peak_rss_mb"]
                row["GB_written"] = sum(file.stat().st_size for file in out.rglob("*.safetensors")) / 1e9
                shutil.rmtree(out)
            row["ratio"] = row["relex_s"] / row["floor_s"]
            rows.append(row)
    return rows


def synthetic_run_gram(n_tensors: int, n_checkpoints: int, seed: int = 0) -> RunGram:
    """A RunGram of trajectory-like random PSD Grams (drift along one direction plus noise), no files."""
    rng = np.random.default_rng(seed)
    steps = 10 * np.arange(1, n_checkpoints + 1)
    shapes = qwen2_shapes(**model_dims())
    names = [name for name in shapes][:n_tensors]
    names += [f"extra.{index}.weight" for index in range(n_tensors - len(names))]
    rank = 16
    drift = steps[None, :, None] * rng.standard_normal((n_tensors, 1, rank))
    noise = rng.standard_normal((n_tensors, n_checkpoints, rank)).cumsum(axis=1) * steps.max() * 0.01
    trajectory = drift + noise
    gram = trajectory @ trajectory.transpose(0, 2, 1)
    paths = [Checkpoint(int(step), Path(f"synthetic/checkpoint-{step}")) for step in steps]
    run = Run(source=Path("synthetic"), base=Checkpoint(0, Path("synthetic/checkpoint-0")), checkpoints=tuple(paths))
    return RunGram(run=run, steps=steps, names=names, shapes=[shapes.get(name, (1,)) for name in names],
                   dtypes=["bfloat16"] * n_tensors, gram=gram, base_sq_norm=np.full(n_tensors, 1e4))


def window_latency(config: BenchConfig, log) -> dict:
    """Seconds for WindowFit + backtest_frame after a window change, over random windows."""
    log(f"window latency: {config.window_tensors} tensors × {config.window_checkpoints} checkpoints")
    run_gram = synthetic_run_gram(config.window_tensors, config.window_checkpoints)
    rng = np.random.default_rng(1)
    steps = run_gram.steps
    fit_times, backtest_times, sizes = [], [], []
    WindowFit(run_gram, f"{steps[0]}:{steps[-2]}").backtest_frame()  # first call pays imports and caches
    for _ in range(config.window_trials):
        first = int(rng.integers(0, len(steps) - 3))
        last = int(rng.integers(first + 1, len(steps) - 1))  # at least one checkpoint left to backtest
        started = time.perf_counter()
        fit = WindowFit(run_gram, f"{steps[first]}:{steps[last]}")
        fitted = time.perf_counter()
        fit.backtest_frame()
        done = time.perf_counter()
        fit_times.append(fitted - started)
        backtest_times.append(done - fitted)
        sizes.append(last - first + 1)
    total = np.add(fit_times, backtest_times)
    by_size = {}
    for size in sorted({10, 25, 50, len(steps) - 1} & set(range(2, len(steps)))):
        window = f"{steps[0]}:{steps[size - 1]}"
        by_size[size] = float(np.median([_best_time(lambda: WindowFit(run_gram, window).backtest_frame(), 1)
                                         for _ in range(5)]))
    stacked = run_gram.gram[:, :50, :50]
    eigh = {"numpy": _best_time(lambda: np.linalg.eigh(stacked)),
            "torch": _best_time(lambda: torch.linalg.eigh(torch.from_numpy(stacked)))}
    return {"tensors": config.window_tensors, "checkpoints": config.window_checkpoints,
            "trials": config.window_trials, "median_window": float(np.median(sizes)),
            "median_s": float(np.median(total)), "p90_s": float(np.percentile(total, 90)),
            "max_s": float(total.max()), "median_fit_s": float(np.median(fit_times)),
            "median_backtest_s": float(np.median(backtest_times)), "by_window_size_s": by_size, "eigh_T50_s": eigh}


def _best_time(function, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def ablations(config: BenchConfig, runs: dict, log) -> list[dict]:
    """In-process variants on the warm mini run: the pass with prefetch off, other chunk sizes, its
    products on one thread, torch's own thread count; the floor with torch's own thread count."""
    size = config.warm_sizes[0]
    run = runs[(size, max(config.checkpoint_counts))]
    warm(run_files(run))
    threads.configure()
    cores, own_threads = threads.cores(), os.cpu_count() or 1
    default = f"pass: default (prefetch, {config.chunk_mb:g} MB chunks, products on {cores} threads, 1 torch thread)"
    variants = [(default, {}, 1),
                ("pass: no prefetch", {"prefetch": False}, 1),
                ("pass: 64 MB chunks", {"chunk_mb": 64}, 1),
                ("pass: 1024 MB chunks", {"chunk_mb": 1024}, 1),
                ("pass: products on 1 thread", {"workers": 1}, 1),
                (f"pass: torch at {own_threads} threads", {}, own_threads),
                (default + ", again", {}, 1)]
    rows = []
    try:
        for label, options, torch_threads in variants:
            log(f"ablation: {label}")
            torch.set_num_threads(torch_threads)
            layout = open_layout(open_run(run))
            try:
                started = time.perf_counter()
                run_gram_pass(layout, progress=False, **({"chunk_mb": config.chunk_mb} | options))
                rows.append({"variant": label, "seconds": time.perf_counter() - started})
            finally:
                layout.close()
    finally:
        torch.set_num_threads(1)  # what relex_core.threads chose for this process
    for torch_threads in (1, own_threads):
        log(f"ablation: floor with {torch_threads} torch threads")
        result = measure([PYTHON, str(REPO / "bench" / "floor.py"), str(run), "--chunk-mb", str(config.chunk_mb),
                          "--threads", str(torch_threads)])
        rows.append({"variant": f"floor: {torch_threads} torch thread(s)",
                     "seconds": json.loads(result["stdout"])["seconds"]})
    return rows


def before_after(config: BenchConfig, runs: dict, work: Path, log) -> list[dict]:
    """`relex analyze` from the commit before this branch against this checkout, same run, alternating."""
    size, count, _ = config.naive_runs[0]
    run = runs[(size, count)]
    old = work / "before"
    old.mkdir()
    archive = subprocess.run(["git", "archive", config.before_commit], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    files = run_files(run)
    rows = []
    for label, code in (("before", old), ("after", REPO), ("after", REPO), ("before", old)):
        log(f"before/after: {label}")
        warm(files)
        result = measure(relex_command("analyze", run, work / f"ba-{label}-{len(rows)}", config, work / "cache"),
                         cwd=code)
        rows.append({"code": label, "seconds": result["seconds"], "peak_rss_mb": result["peak_rss_mb"]})
    return rows


# ---------------------------------------------------------------- report
def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory = next((int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), float("nan"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": round(memory, 1), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "commit": commit,
            "time_tool": f"{TIME_TOOL} -v" if Path(TIME_TOOL).exists() else "os.wait4 rusage",
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _table(frame: pd.DataFrame, formats: dict) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    lines = []
    for _, row in frame.iterrows():
        cells = [formats.get(column, "{}").format(row[column]) for column in frame.columns]
        lines.append("| " + " | ".join(cells) + " |")
    return header + "\n".join(lines) + "\n"


DESIGN_NOTES = """## Where the time goes

- A background thread reads each chunk with `pread`, as stored (bf16: 2 bytes an element), into one of two
  reused buffers (relex_core/stream.py); a pool of `threads.cores()` threads takes cache-sized column blocks
  of it, converts them to float64, subtracts θ_0 and multiplies with BLAS syrk (numpy `a @ a.T`, BLAS on one
  thread), and the blocks' products are added in column order. Nothing is memory-mapped, so peak RSS is a few chunks
  plus the interpreter, whatever the run's size or T.
- The product is T/2 multiply-adds per stored element of each checkpoint, in float64 (the exactness the
  Gram identities rely on). On this CPU BLAS manages roughly 0.3–0.6 G element·checkpoints/s per core for
  this skinny shape, so warm runs and large T are compute-bound (the ratio to the read floor grows with T),
  while cold runs are bounded by the disk and the product hides behind the reads.
- Changes on this branch, from profiles taken while developing (single runs on this shared machine):
  safetensors rows are read with `pread` instead of through a memory map (a mapped run counted in RSS: 4.3 GB
  peak for a 3.7 GB run); read and conversion buffers are reused (fresh multi-MB allocations page-fault:
  reads and conversions ran 2–5× slower); torch runs one thread (two OpenMP threads on two
  shared cores made the conversions ~10× slower; relex_core/threads.py sets it once per process); the product is numpy's syrk on float64 blocks instead of
  torch's MKL GEMM (2–3× slower on this AMD CPU for a (T × k)(k × T) product); a `dot` on the base rows goes
  through torch (numpy's woke BLAS threads and cost more than the product).
- `relex extrapolate` uses the same reading thread and buffers. Each chunk's columns are split over the
  cores (torch and numpy release the GIL); each part is converted to float64 in cache-sized blocks and
  multiplied once by the weights of θ_0 and of every θ_t (δ̂ = Σ w_t θ_t − (Σ w) θ_0, so no Δ_t is formed),
  then θ_0 is added and the result correctly rounded (`rounding.round_to`, whose tie search runs in numpy)
  over the whole part. Before/after figures in-process: bench/STUDIES.md.
- Window change: `WindowFit` is dominated by the top-2 eigenpairs of each (T × T) window Gram: LAPACK's
  dsyevr (subset), called through scipy's Cython pointer with ctypes so that the GIL is free and the tensors
  are split over the cores (relex_core/lapack.py); the Gram is indexed by slices (views). Before/after in
  bench/STUDIES.md.
- Prefetch (reading the next chunk while this one is multiplied) is measured in the variants table above:
  it overlaps disk reads with the product; on a warm run both threads compete for the same two cores.
- GPU (`--device cuda`): rows travel as stored and are converted, differenced and multiplied in float64 on
  the device. Not measured here (no GPU lent to this session); tests/test_cuda.py checks it against the CPU
  where a GPU exists.
"""


def write_report(results: dict, path: Path) -> None:
    info, config, command = results["machine"], results["config"], results["command"]
    table = pd.DataFrame(results["scaling"])
    head_size, head_count = config["headline"]
    headline = table[(table.model == head_size) & (table["T"] == head_count)]
    lines = [
        "# relex benchmark results", "",
        f"Command: `{command}`  ",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB RAM, shared with other jobs "
        f"(noisy: compare ratios within one run, not seconds across runs); Python {info['python']}, torch "
        f"{info['torch']}, numpy {info['numpy']}; commit {info['commit']}; peak RSS from `{info['time_tool']}`.  ",
        f"GPU: {info['gpu'] or 'not measured (no GPU lent to this session)'}.", "",
        "Runs are synthetic Qwen2-shaped bf16 checkpoints in HF shards (bench/generate.py): every tensor drifts along "
        "one direction at constant speed plus a random walk, ‖Δ‖/‖θ_0‖ ≈ 1e-3 at the last step.",
        "Sizes: " + "; ".join(f"{size} = {results['runs'][size]['parameters'] / 1e6:.3g}M parameters "
                              f"({json.dumps(results['runs'][size]['generation']['run']['dims'])})"
                              for size in config["sizes"]) + ". Generated once, reused if present: " +
        "; ".join(f"{size} {results['runs'][size]['generation']['bytes'] / 1e9:.1f} GB in "
                  f"{results['runs'][size]['generation']['seconds']:.0f} s" for size in config["sizes"]) + ".",
        "Cold = the run's files evicted from the page cache before each command (runs bigger than the cache "
        "are read from disk in real use); warm = read once before each command. Wall times include starting "
        "Python and importing torch (~2 s) for both the floor and relex.", "",
        f"## 1–2. `relex analyze` against the read floor ({head_size}, T = {head_count})", "",
        _table(headline[["repeat", "cache", "GB", "floor_s", "relex_s", "ratio", "relex_GBps", "floor_peak_mb",
                         "relex_peak_mb"]],
               {"GB": "{:.2f}", "floor_s": "{:.1f}", "relex_s": "{:.1f}", "ratio": "{:.2f}", "relex_GBps": "{:.2f}",
                "floor_peak_mb": "{:.0f}", "relex_peak_mb": "{:.0f}"}),
        f"Targets: ratio ≤ 1.5 → median {headline.ratio.median():.2f}; peak RSS ≤ 1536 MB → "
        f"max {headline.relex_peak_mb.max():.0f} MB.", ""]
    naive = results.get("naive")
    if naive:
        lines += ["## 3. Naive full SVD against relex (same run, same cache state)", "",
                  "bench/naive.py loads every checkpoint, stacks each tensor's deltas and takes torch.linalg.svd; "
                  "relex is `relex analyze` from the scaling rows (median). Differences: largest over tensors of "
                  "|relex − naive| / |naive|.", "",
                  "| run | naive SVD dtype | naive s | relex s | speed-up | naive peak MB | relex peak MB | memory ÷ "
                  "| Δ sigma_1 | Δ energy_rank1 | Δ slope | Δ r2 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in naive:
            difference = row["max_relative_difference"]
            lines.append(f"| {row['model']} T = {row['T']} ({row['cache']}) | {row['dtype']} | {row['naive_s']:.1f} | "
                         f"{row['relex_s']:.1f} | {row['naive_s'] / row['relex_s']:.1f}× | {row['naive_peak_mb']:.0f} | "
                         f"{row['relex_peak_mb']:.0f} | {row['naive_peak_mb'] / row['relex_peak_mb']:.1f}× | "
                         + " | ".join(f"{difference[column]:.1e}" for column in ("sigma_1", "energy_rank1", "slope", "r2"))
                         + " |")
        worst = {row["worst_tensor"]["sigma_1"] for row in naive if row["dtype"] == "float32"}
        lines += ["", "Against a float64 SVD the differences are float64 rounding."
                  + (" A float32 SVD (what scripts usually run) is itself off by the Δ shown, worst on "
                     f"{', '.join(sorted(worst))}." if worst else ""), ""]
    export = results.get("export")
    lines += ["## 4. `relex extrapolate` against its floor", ""]
    if export:
        frame = pd.DataFrame(export)
        lines += ["`relex extrapolate RUN --window :L --target 2L` with the Gram from the cache (the export "
                  "alone: weights, one read of the window, one model written) against bench/floor.py --write "
                  "(read the same checkpoints once into float32, write the base's tensors to shards).", "",
                  _table(frame[["model", "T", "cache", "repeat", "target_step", "GB_written", "floor_s", "relex_s",
                                "ratio", "floor_peak_mb", "relex_peak_mb"]],
                         {"GB_written": "{:.2f}", "floor_s": "{:.1f}", "relex_s": "{:.1f}", "ratio": "{:.2f}",
                          "floor_peak_mb": "{:.0f}", "relex_peak_mb": "{:.0f}"}),
                  f"Target: ratio ≤ 2 → median {frame.ratio.median():.2f} (max {frame.ratio.max():.2f}).", ""]
    else:
        lines += [results.get("export_note", "Not measured: the export command is not in this checkout."), ""]
    window = results["window"]
    lines += [f"## 5. Window-change latency ({window['tensors']} tensors × {window['checkpoints']} checkpoints, "
              f"synthetic Gram, no I/O)", "",
              f"`WindowFit(run_gram, window)` + `fit.backtest_frame()` over {window['trials']} random windows "
              f"(median size {window['median_window']:.0f}): median {window['median_s'] * 1e3:.1f} ms "
              f"(fit {window['median_fit_s'] * 1e3:.1f} ms + backtest {window['median_backtest_s'] * 1e3:.1f} ms), "
              f"p90 {window['p90_s'] * 1e3:.1f} ms, max {window['max_s'] * 1e3:.1f} ms. Target ≤ 100 ms.  ",
              "By window size (first checkpoints, median of 5): " + ", ".join(
                  f"T = {size}: {seconds * 1e3:.1f} ms" for size, seconds in window["by_window_size_s"].items()) + ".  ",
              f"Batched eigh of ({window['tensors']}, 50, 50): numpy {window['eigh_T50_s']['numpy'] * 1e3:.1f} ms, "
              f"torch {window['eigh_T50_s']['torch'] * 1e3:.1f} ms.", "",
              "## 6. Scaling: time and peak memory against T and model size", "",
              _table(table[["model", "parameters", "T", "cache", "repeat", "GB", "floor_s", "relex_s", "ratio",
                            "relex_GBps", "relex_peak_mb"]],
                     {"parameters": "{:.3g}", "GB": "{:.2f}", "floor_s": "{:.1f}", "relex_s": "{:.1f}",
                      "ratio": "{:.2f}", "relex_GBps": "{:.2f}", "relex_peak_mb": "{:.0f}"}), ""]
    if results.get("ablations"):
        variants = pd.DataFrame(results["ablations"])
        default, floor = variants.seconds.iloc[0], variants.seconds.iloc[-2]
        lines += ["## Pass variants (warm run; the pass in-process, in this order; the floor in-process time)", "",
                  _table(variants, {"seconds": "{:.2f}"}), "",
                  f"In-process, without Python's start-up, the warm pass takes {default / floor:.1f}× the read floor "
                  "(first default row ÷ 1-thread floor): warm runs are bound by the float64 product, see below. "
                  "The end-to-end ratios above are smaller because both sides pay the same start-up.", ""]
    if results.get("before_after"):
        size, count, _ = config["naive_runs"][0]
        lines += [f"## Before / after this branch (`relex analyze`, {size}, T = {count}, warm; before = commit "
                  f"{config['before_commit']})", "",
                  _table(pd.DataFrame(results["before_after"]), {"seconds": "{:.1f}", "peak_rss_mb": "{:.0f}"}), ""]
    lines += [DESIGN_NOTES]
    path.write_text("\n".join(lines).rstrip() + "\n" + _kept_sections(path))


# Sections other scripts write into RESULTS.md (bench/ray_engine.py's): kept when this report is rewritten.
KEPT_HEADINGS = ("## Ray engine",)


def _kept_sections(path: Path) -> str:
    """The old report from the first kept heading on, or '' (run_bench writes everything before it)."""
    old = path.read_text() if path.is_file() else ""
    starts = [old.find("\n" + heading) for heading in KEPT_HEADINGS if "\n" + heading in old]
    return "\n" + old[min(starts) + 1:].rstrip() + "\n" if starts else ""


def run_benchmark(config: BenchConfig, out: Path, command: str = "", log=print) -> dict:
    config.data.mkdir(parents=True, exist_ok=True)
    runs = make_runs(config, log)
    results = {"machine": machine(),
               "config": {"sizes": {k: v for k, v in config.sizes.items()}, "headline": config.headline,
                          "before_commit": config.before_commit, "chunk_mb": config.chunk_mb,
                          "naive_runs": config.naive_runs},
               "runs": {size: {"parameters": runs[size]["parameters"], "generation": runs[size]["generation"]}
                        for size in config.sizes}}
    with tempfile.TemporaryDirectory(dir=config.data, prefix="work-") as work:
        work = Path(work)
        results["scaling"] = scaling(config, runs, work, log)
        results["naive"] = naive_comparison(config, runs, results["scaling"], work, log)
        results["export"] = export_comparison(config, runs, work, log)
        results["window"] = window_latency(config, log)
        if config.ablations:
            results["ablations"] = ablations(config, runs, log)
        if config.before_commit:
            results["before_after"] = before_after(config, runs, work, log)
    for row in results["scaling"]:
        row.pop("relex_out")
    results["command"] = command
    out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    write_report(results, out)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/bench-data", help="where runs are generated (outside git)")
    parser.add_argument("--out", default=str(REPO / "bench" / "RESULTS.md"))
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, seconds (what the test suite runs)")
    parser.add_argument("--repeats", type=int, default=None, help="floor/relex pairs per row (default 2)")
    parser.add_argument("--report-only", action="store_true", help="rewrite OUT from OUT's .json, measure nothing")
    args = parser.parse_args()
    if args.report_only:
        write_report(json.loads(Path(args.out).with_suffix(".json").read_text()), Path(args.out))
        return
    config = BenchConfig.smoke(args.data) if args.smoke else BenchConfig(data=Path(args.data))
    if args.repeats:
        config.repeats = args.repeats
    started = time.perf_counter()
    run_benchmark(config, Path(args.out), command="python " + " ".join(sys.argv),
                  log=lambda message: print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True))


if __name__ == "__main__":
    main()
