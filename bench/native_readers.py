"""The verl-shard reader against the read floor on the same bytes; writes bench/NATIVE.md.

    python bench/native_readers.py                       # ~2 GB in /work/bench-data/native, a few minutes
    python bench/native_readers.py --data DIR --layers 2 --checkpoints 3 --repeats 2

A Qwen2-shaped model (hidden 896, intermediate 4864, vocab 32768, `--layers`) is written twice
with the same fp32 values: as verl FSDP checkpoints (three gloo ranks save their uneven
`Shard(0)` DTensor shards with torch.save: `model_world_size_3_rank_R.pt`) and as HF
safetensors. Then, side by side in one run, in alternating order (the machine is shared):

  floor          pread of every byte of the files a run's readers read (the base's safetensors and
                 the model rank files, or the safetensors copy), in 64 MB pieces, into one reused buffer;
  reader         relex's reader on the same files: every analysed tensor of every checkpoint, in the
                 Gram pass's chunk plan, into one reused buffer (what the pass reads, nothing else),
                 opening the readers included;
  gram           the whole Gram pass (`compute_gram`, no cache), reading and products.
Each on the verl run and on its safetensors copy, for "as fast per byte as safetensors".

Everything is warm (read once before): the runs fit the page cache of this machine.
"""

import argparse
import json
import os
import statistics
import sys
import time
import zlib
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relex_core.gram import compute_gram, pass_items  # noqa: E402
from relex_core.stream import open_layout  # noqa: E402
from relex_core.io.discover import open_run  # noqa: E402
from relex_core.synthetic import qwen2_shapes  # noqa: E402

WORLD = 3
DIMS = {"hidden": 896, "intermediate": 4864, "vocab": 32768, "heads": 14, "kv_heads": 2}
TINY = {"hidden": 32, "intermediate": 70, "vocab": 97, "heads": 4, "kv_heads": 2}  # --tiny: the smoke test's
PIECE = 64 << 20


def _values(name: str, shape, step: int) -> torch.Tensor:
    """θ_step of one tensor, the same on every rank: base noise plus a drift that grows with the step."""
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    base = torch.randn(shape, generator=generator) * 0.02
    return base + (1e-4 * step) * torch.randn(shape, generator=generator)


def _write_rank(rank: int, folder: Path, shapes: dict, steps) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/.rendezvous", rank=rank, world_size=WORLD)
    mesh = init_device_mesh("cpu", (WORLD,))
    for step in steps[1:]:  # verl saves no step 0: the base is the HF folder
        state = {}
        for name, shape in shapes.items():
            rows = -(-shape[0] // WORLD)  # FSDP2's split: ceil-sized shards, the last ranks shorter
            full = _values(name, shape, step)
            local = full[rank * rows:(rank + 1) * rows].clone()
            state[name] = DTensor.from_local(local, mesh, [Shard(0)], run_check=False, shape=torch.Size(shape),
                                             stride=full.stride())
        actor = folder / "verl" / f"global_step_{step}" / "actor"
        actor.mkdir(parents=True, exist_ok=True)
        torch.save(state, actor / f"model_world_size_{WORLD}_rank_{rank}.pt")
        dist.barrier()
    dist.destroy_process_group()


def generate(folder: Path, layers: int, checkpoints: int, dims=DIMS) -> dict:
    """Write the verl run, its safetensors copy and the base (reused when present)."""
    from safetensors.torch import save_file

    dims = dict(dims, layers=layers)
    steps = [0, *range(10, 10 * checkpoints + 1, 10)]
    description = {"dims": dims, "steps": steps, "world": WORLD}
    record = folder / "native-run.json"
    if record.is_file() and json.loads(record.read_text()).get("run") == description:
        return json.loads(record.read_text())
    import shutil

    import torch.multiprocessing as mp

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shapes = qwen2_shapes(**dims)
    started = time.perf_counter()
    mp.start_processes(_write_rank, args=(folder, shapes, steps), nprocs=WORLD, start_method="fork")
    (folder / ".rendezvous").unlink(missing_ok=True)
    for step in steps:
        target = folder / ("base" if step == 0 else f"hf/checkpoint-{step}")
        target.mkdir(parents=True, exist_ok=True)
        save_file({name: _values(name, shape, step) for name, shape in shapes.items()}, str(target / "model.safetensors"))
    rank_bytes = sum(file.stat().st_size for file in (folder / "verl").rglob("model_*.pt"))
    result = {"run": description, "parameters": sum(torch.Size(shape).numel() for shape in shapes.values()),
              "rank_file_bytes": rank_bytes, "seconds": round(time.perf_counter() - started, 1)}
    record.write_text(json.dumps(result, indent=2))
    return result


def run_files(run) -> list[Path]:
    """The files the readers of a run read: the base's and every checkpoint's."""
    from relex_core.io.reader import weight_files

    return [file for checkpoint in (run.base, *run.checkpoints) for file in weight_files(checkpoint.path)[1]]


def floor(files) -> float:
    """Seconds to pread every byte of these files into one reused buffer."""
    buffer = bytearray(PIECE)
    view = memoryview(buffer)
    started = time.perf_counter()
    for file in files:
        descriptor = os.open(file, os.O_RDONLY)
        try:
            position = 0
            while True:
                count = os.preadv(descriptor, [view], position)
                if count == 0:
                    break
                position += count
        finally:
            os.close(descriptor)
    return time.perf_counter() - started


def reader_pass(run, chunk_mb: float = 256) -> tuple[float, int]:
    """Seconds (opening the readers included) and bytes to read every analysed tensor of every checkpoint."""
    started = time.perf_counter()
    layout = open_layout(run)
    try:
        items = pass_items(layout, chunk_mb)  # the Gram pass's own chunks
        readers = (layout.base, *layout.readers)
        largest = max((stop - start) * layout.base.tensors[name].row_numel * 8 for name, start, stop in items)
        buffer = torch.empty(largest, dtype=torch.uint8)
        total = 0
        for name, start, stop in items:
            for reader in readers:
                rows = reader.read(name, start, stop, out=buffer)
                total += rows.numel() * rows.element_size()
    finally:
        layout.close()
    return time.perf_counter() - started, total


def gram_pass(run, cache_dir: Path) -> float:
    started = time.perf_counter()
    compute_gram(run, cache_dir=cache_dir, use_cache=False, progress=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/bench-data/native")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--checkpoints", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "bench" / "NATIVE.md"))
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, to check that the kit runs")
    args = parser.parse_args()
    folder = Path(args.data)
    generated = generate(folder, args.layers, args.checkpoints, TINY if args.tiny else DIMS)
    torch.set_num_threads(1)  # the pass's own setting (gram.PASS_TORCH_THREADS)
    verl_run = open_run(folder / "verl", base=folder / "base")
    hf_run = open_run(folder / "hf", base=folder / "base")
    runs = {"verl": verl_run, "hf": hf_run}
    files = {kind: run_files(run) for kind, run in runs.items()}
    for kind, run in runs.items():  # warm the page cache (and import what the readers need)
        floor(files[kind]), reader_pass(run)
    timings = {f"{kind}_{what}": [] for kind in runs for what in ("floor", "reader", "gram")}
    for repeat in range(args.repeats):
        order = list(timings) if repeat % 2 == 0 else list(reversed(timings))
        for key in order:
            kind, what = key.split("_")
            if what == "floor":
                timings[key].append(floor(files[kind]))
            elif what == "reader":
                timings[key].append(reader_pass(runs[kind])[0])
            else:
                timings[key].append(gram_pass(runs[kind], folder / "cache"))
    sizes = {kind: sum(file.stat().st_size for file in files[kind]) for kind in runs}
    rank_bytes = sum(file.stat().st_size for file in files["verl"] if file.suffix == ".pt")
    median = {key: statistics.median(values) for key, values in timings.items()}
    lines = [
        "# Native readers against the read floor",
        "",
        f"Command: `python bench/native_readers.py --layers {args.layers} --checkpoints {args.checkpoints} "
        f"--repeats {args.repeats}`  ",
        f"Machine: {os.cpu_count()} cores, shared with other jobs (compare ratios within one run); torch {torch.__version__}.  ",
        f"Run: Qwen2-shaped, {generated['parameters'] / 1e6:.0f}M parameters ({json.dumps(generated['run']['dims'])}), "
        f"fp32, {len(generated['run']['steps']) - 1} checkpoints after the base, verl FSDP shards of world size "
        f"{WORLD} ({rank_bytes / 1e9:.2f} GB of model rank files) and the same values as safetensors. Warm page cache.",
        "",
        "| run | what | GB | repeats (s) | median s | GB/s | ratio to its floor |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {"verl": "verl FSDP shards", "hf": "safetensors copy"}
    for key in timings:
        kind, what = key.split("_")
        values = ", ".join(f"{value:.2f}" for value in timings[key])
        lines.append(f"| {labels[kind]} | {what} | {sizes[kind] / 1e9:.2f} | {values} | {median[key]:.2f} | "
                     f"{sizes[kind] / median[key] / 1e9:.2f} | {median[key] / median[f'{kind}_floor']:.2f} |")
    lines.append("")
    lines.append(f"Per byte, the verl reader against the safetensors reader: "
                 f"{(median['verl_reader'] / sizes['verl']) / (median['hf_reader'] / sizes['hf']):.2f}× the time.")
    lines += ["", "The reader rows include opening the readers (for verl: unpickling every rank file's DTensors on "
              "the meta device, once per checkpoint). The floor reads every byte of the files, pickles and headers "
              "too.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
