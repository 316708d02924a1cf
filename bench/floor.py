"""The read floor: read every analysed tensor of every checkpoint once into float32, chunked as relex chunks.

    python bench/floor.py RUN [--chunk-mb 256] [--write OUT --shard-gb 5]

It uses relex's own reader and chunk plan (so the same bytes are read in the same pieces) and
does nothing else with them: no subtraction, no products. With --write it is the floor of an
export too: the base's rows are also written, as stored, to HF shards in OUT (one model's worth
of output, written the way relex writes it).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relex_core.gram import pass_items  # noqa: E402
from relex_core.io.discover import open_run  # noqa: E402
from relex_core.io.writer import ShardedWriter, TensorSpec  # noqa: E402
from relex_core.stream import open_layout  # noqa: E402


def read_floor(run_source, chunk_mb: float = 256, threads: int | None = 1, write=None,
               shard_size: int | None = None) -> dict:
    """Seconds to read the run once into float32 (and write one model, with `write`), and bytes read.

    Like the pass, it reuses one raw buffer and one float32 buffer (fresh allocations would
    page-fault and make the floor slower than it needs to be) and runs torch on one thread, as
    relex does (relex_core.threads).
    """
    if threads:
        torch.set_num_threads(threads)
    layout = open_layout(open_run(run_source))
    started = time.perf_counter()
    total_bytes = 0
    writer = None
    try:
        items = pass_items(layout, chunk_mb)
        readers = (layout.base, *layout.readers)
        sizes = [((stop - start) * layout.base.tensors[name].row_numel,
                  max(reader.tensors[name].dtype.itemsize for reader in readers)) for name, start, stop in items]
        raw = torch.empty(max((numel * itemsize for numel, itemsize in sizes), default=0), dtype=torch.uint8)
        rows32 = torch.empty(max((numel for numel, _ in sizes), default=0), dtype=torch.float32)
        if write is not None:
            Path(write).mkdir(parents=True, exist_ok=True)
            specs = [TensorSpec(name, tuple(layout.base.tensors[name].shape), layout.base.tensors[name].dtype)
                     for name in layout.names]
            writer = ShardedWriter(write, specs, shard_size=shard_size, metadata={"format": "pt"})
        for name, start, stop in items:
            for reader in readers:
                rows = reader.read(name, start, stop, out=raw).reshape(-1)
                rows32[:rows.numel()].copy_(rows)
                total_bytes += rows.numel() * reader.tensors[name].dtype.itemsize
                if writer is not None and reader is layout.base:
                    writer.write(name, rows)
        if writer is not None:
            writer.close()
    finally:
        layout.close()
    return {"seconds": time.perf_counter() - started, "bytes": total_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--chunk-mb", type=float, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as in relex)")
    parser.add_argument("--write", default=None, help="also write the base's tensors here (export floor)")
    parser.add_argument("--shard-gb", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(read_floor(args.run, args.chunk_mb, args.threads, args.write, int(args.shard_gb * 1e9))))


if __name__ == "__main__":
    main()
