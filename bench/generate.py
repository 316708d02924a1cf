"""Write a synthetic run shaped like a real model, for benchmarks (uses relex_core.synthetic).

    python bench/generate.py /work/bench-data/qwen2-0.5b --checkpoints 20
    python bench/generate.py /work/bench-data/qwen2-0.5b-4l --checkpoints 20 --layers 4

Default shapes: Qwen2-0.5B (24 layers, hidden 896, intermediate 4864, vocab 151936, tied
embeddings), bf16, HF shards of 2 GB, a checkpoint every 50 steps. Each tensor drifts along one
direction at constant speed plus a random walk, ‖Δ‖/‖θ_0‖ ≈ 1e-3 at the last step. Memory stays
at a few row blocks whatever the model size. Nothing is written if the folder already holds the
same run (a `bench-run.json` records what was generated).
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from relex_core.io.dtypes import element_count  # noqa: E402
from relex_core.synthetic import QWEN2_0_5B, make_run, qwen2_config, qwen2_shapes  # noqa: E402


def model_dims(layers=None, vocab=None) -> dict:
    """Qwen2-0.5B dimensions, optionally with fewer layers or a smaller vocabulary."""
    dims = dict(QWEN2_0_5B)
    if layers is not None:
        dims["layers"] = layers
    if vocab is not None:
        dims["vocab"] = vocab
    return dims


def parameter_count(dims: dict) -> int:
    return sum(element_count(shape) for shape in qwen2_shapes(**dims).values())


def generate(folder, *, dims=None, checkpoints=20, every=50, dtype="bfloat16", shard_gb=2.0, seed=0,
             relative_update=1e-3, noise=0.1) -> dict:
    """Generate (or reuse) a run of a Qwen2-shaped model (`dims`, default 0.5B); returns its
    description (also saved as bench-run.json)."""
    folder = Path(folder)
    dims = model_dims() if dims is None else dict(dims)
    description = {"dims": dims, "steps": [every * index for index in range(1, checkpoints + 1)],
                   "dtype": dtype, "shard_gb": shard_gb, "seed": seed, "relative_update": relative_update,
                   "noise": noise, "parameters": parameter_count(dims)}
    record = folder / "bench-run.json"
    if record.is_file() and json.loads(record.read_text()).get("run") == description:
        return json.loads(record.read_text())
    if folder.exists():
        shutil.rmtree(folder)
    started = time.perf_counter()
    make_run(folder, steps=description["steps"], shapes=qwen2_shapes(**dims), config=qwen2_config(**dims),
             dtype=getattr(torch, dtype), relative_update=relative_update, noise=noise, seed=seed,
             shard_size=int(shard_gb * 1e9))
    size = sum(file.stat().st_size for file in folder.rglob("*.safetensors"))
    result = {"run": description, "bytes": size, "seconds": round(time.perf_counter() - started, 1)}
    record.write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--checkpoints", type=int, default=20, help="checkpoints after the base (default 20)")
    parser.add_argument("--every", type=int, default=50, help="steps between checkpoints (default 50)")
    parser.add_argument("--layers", type=int, default=None, help="keep only this many layers (default 24)")
    parser.add_argument("--vocab", type=int, default=None, help="vocabulary size (default 151936)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--shard-gb", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = generate(args.folder, dims=model_dims(args.layers, args.vocab), checkpoints=args.checkpoints,
                      every=args.every, dtype=args.dtype, shard_gb=args.shard_gb, seed=args.seed)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
