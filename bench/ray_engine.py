"""The Ray engine against the local engine on this machine: the pass and the export, 1 and 2 Ray nodes.

    python bench/ray_engine.py                       # writes bench/ray_engine.json, prints the tables

A synthetic bf16 run (made once in --run) is read warm. The local engine uses this machine's
cores (2 threads); each Ray node is a separate `ray start` of one CPU (tests/engines/ray_cluster.py),
so 2 nodes have the same 2 cores as the local engine and no more: on this machine Ray can only
add overhead. What carries over to a cluster is measured here too: the cost of one task, and the
float64 product rate of one core (what the pass's time is bound by when storage is fast).
"""

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import ray  # noqa: E402

from relex_core import threads  # noqa: E402
from relex_core.analysis import WindowFit  # noqa: E402
from relex_core.engines.ray import RayEngine, _gram_task, _Source  # noqa: E402
from relex_core.export import extrapolate  # noqa: E402
from relex_core.gram import LocalEngine, gram_block, pass_bytes, pass_items, run_gram_pass  # noqa: E402
from relex_core.io.discover import open_run  # noqa: E402
from relex_core.stream import open_layout  # noqa: E402
from relex_core.synthetic import make_run, qwen2_config, qwen2_shapes  # noqa: E402
from tests.engines.ray_cluster import LocalRayCluster  # noqa: E402

SHAPES = dict(layers=4, hidden=896, intermediate=4864, vocab=32000, heads=14, kv_heads=2)
STEPS = tuple(range(10, 170, 10))  # 16 checkpoints after the base


def timed(function, repeats: int) -> tuple[float, object]:
    """Median wall seconds of `repeats` calls, and the last result."""
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def export_once(fit, engine, scratch: Path) -> None:
    out = Path(tempfile.mkdtemp(dir=scratch)) / "out"
    extrapolate(fit, [2 * STEPS[-1]], out, progress=False, engine=engine)


def task_overhead(engine: RayEngine, run, tasks: int) -> dict:
    """Empty relex tasks (the layout opened once per worker) through the engine's scheduler: seconds per
    task with at most one in flight (latency) and with the usual bound (throughput)."""
    source = _Source(run, tuple(range(len(run.checkpoints))), "overhead")
    groups = [()] * tasks

    def submit(group):
        return _gram_task.options(num_cpus=1, memory=1 << 20).remote(source, group, None, 1)

    def drain(limit):
        engine.max_in_flight = limit
        started = time.perf_counter()
        for _ in engine._run(groups, submit, 1 << 20, 0, "overhead", lambda group: 0, False):
            pass
        return (time.perf_counter() - started) / tasks

    drain(None)  # workers started and the layout opened on each
    result = {"latency_ms": 1000 * drain(1), "throughput_ms": 1000 * drain(None)}
    engine.max_in_flight = None
    return result


def product_rate(checkpoints: int, columns: int) -> float:
    """GFLOP/s of one core in the pass's float64 products (gram_block on one thread): N(N+1) flops an element."""
    threads.configure()
    rows = torch.randn(checkpoints + 1, columns).to(torch.bfloat16)
    gram_block(rows)  # warm
    started = time.perf_counter()
    gram_block(rows)
    return checkpoints * (checkpoints + 1) * columns / (time.perf_counter() - started) / 1e9


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # a SIGTERM still stops the Ray nodes this script started (their `with` blocks)


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="/tmp/relex-ray-bench/run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=200, help="empty tasks for the overhead (default 200)")
    parser.add_argument("--json", default=str(REPO / "bench" / "ray_engine.json"))
    args = parser.parse_args()
    folder = Path(args.run)
    if not folder.exists():
        make_run(folder, steps=STEPS, shapes=qwen2_shapes(**SHAPES), config=qwen2_config(**SHAPES),
                 dtype=torch.bfloat16, relative_update=1e-3, shard_size=200_000_000)
    run = open_run(folder)
    scratch = Path(tempfile.mkdtemp(prefix="relex-ray-bench-"))
    results = {"run": {"parameters": int(sum(np.prod(shape) for shape in qwen2_shapes(**SHAPES).values())),
                       "checkpoints": len(run.checkpoints)}, "cores": threads.cores(), "rows": [],
               "load_average_before": os.getloadavg()[0]}  # other jobs on this shared machine
    with open_layout(run) as layout:
        items = pass_items(layout, 256)
        gigabytes = pass_bytes(layout, items) / 1e9
        run_gram_pass(layout, progress=False)  # warm: the files in the page cache
        local_pass, local = timed(lambda: LocalEngine().gram_sums(layout, progress=False), args.repeats)
        fit = WindowFit(run_gram_pass(layout, progress=False), rank=1)
        local_export, _ = timed(lambda: export_once(fit, None, scratch), args.repeats)
        results["run"].update(gigabytes=gigabytes, items=len(items))
        results["rows"].append({"engine": "local", "nodes": 1, "pass_s": local_pass, "export_s": local_export})
        for nodes in (1, 2):
            with LocalRayCluster(nodes=nodes) as cluster:
                engine = RayEngine(cluster.address)
                started = time.perf_counter()
                engine.gram_sums(layout, progress=False)  # connect, start the workers
                first = time.perf_counter() - started
                ray_pass, sums = timed(lambda: engine.gram_sums(layout, progress=False), args.repeats)
                assert all(np.array_equal(mine, theirs) for mine, theirs in zip(sums, local)), "Gram differs"
                ray_export, _ = timed(lambda: export_once(fit, engine, scratch), args.repeats)
                overhead = task_overhead(engine, run, args.tasks)
                ray.shutdown()
            results["rows"].append({"engine": "ray", "nodes": nodes, "pass_s": ray_pass, "export_s": ray_export,
                                    "first_pass_s": first, **overhead})
    results["product_gflops_per_core"] = {str(count): product_rate(count, 1 << 15) for count in (8, 64, 500)}
    for row in results["rows"]:
        row["pass_vs_local"] = row["pass_s"] / local_pass
        row["export_vs_local"] = row["export_s"] / local_export
        row["pass_GBps"] = gigabytes / row["pass_s"]
    results["load_average_after"] = os.getloadavg()[0]
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"run: {results['run']}; load average {results['load_average_before']:.1f} before, "
          f"{results['load_average_after']:.1f} after")
    print("| engine | nodes | pass s | pass GB/s | pass ÷ local | export s | export ÷ local | first pass s "
          "| task latency ms | task throughput ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in results["rows"]:
        print(f"| {row['engine']} | {row['nodes']} | {row['pass_s']:.2f} | {row['pass_GBps']:.2f} | "
              f"{row['pass_vs_local']:.2f} | {row['export_s']:.2f} | {row['export_vs_local']:.2f} | "
              f"{row.get('first_pass_s', float('nan')):.2f} | {row.get('latency_ms', float('nan')):.1f} | "
              f"{row.get('throughput_ms', float('nan')):.1f} |")
    print("float64 product GFLOP/s per core (N checkpoints):", {key: round(value, 1) for key, value in
                                                              results["product_gflops_per_core"].items()})


if __name__ == "__main__":
    main()
