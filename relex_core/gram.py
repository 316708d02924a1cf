"""The one streaming pass: per tensor, G[i, j] = <θ_i − θ_0, θ_j − θ_0> over every checkpoint.

Every byte of every checkpoint is read once. Tensors are cut into row chunks whose size is set
by `chunk_mb`, so memory does not grow with the model or with the number of checkpoints. A
background thread reads the next chunk, as stored, while this one is multiplied (pread, torch
and BLAS all release the GIL). The product runs in float64 on cache-sized column blocks:
convert, subtract θ_0, BLAS syrk. The deltas are exact for bf16/fp16/fp32 checkpoints; products
and sums round as in a float64 brute force.

The unit of work, `read_rows` + `gram_block` on (name, start, stop), is a plain function of the
tensor name, the checkpoint files and a row range, so the pass can be spread over many
machines by handing out (name, range) pairs and summing the blocks.
"""

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from .errors import RelexError
from .io.discover import Run
from .io.dtypes import element_count
from .io.names import layer_and_module, tied_lm_head
from .io.reader import CheckpointReader


@dataclass
class RunGram:
    """Everything the window maths need, from one pass over a run.

    Attributes:
        steps: (N,) training step of each checkpoint after the base.
        names, shapes, dtypes: one entry per analysed tensor (floating tensors; a tied lm_head excluded).
        gram: (n_tensors, N, N) float64, gram[n, i, j] = <Δ_i, Δ_j> for tensor n.
        base_sq_norm: (n_tensors,) ‖θ_0‖² per tensor, for relative-size figures.
        tied: {alias tensor name: source tensor name} for a tied lm_head stored twice.
        notes: remarks worth showing the user (e.g. mixed dtypes).
    """
    run: Run
    steps: np.ndarray
    names: list
    shapes: list
    dtypes: list
    gram: np.ndarray
    base_sq_norm: np.ndarray
    tied: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    fingerprint: str = ""
    from_cache: bool = False

    @property
    def numels(self) -> np.ndarray:
        return np.array([element_count(shape) for shape in self.shapes], dtype=np.int64)

    @property
    def layers(self) -> list:
        return [layer_and_module(name)[0] for name in self.names]

    @property
    def modules(self) -> list:
        return [layer_and_module(name)[1] for name in self.names]

    def index_of_steps(self, steps) -> np.ndarray:
        """Positions of the given steps in `self.steps` (each must be a checkpoint of the run)."""
        lookup = {int(step): position for position, step in enumerate(self.steps)}
        try:
            return np.array([lookup[int(step)] for step in steps], dtype=np.int64)
        except KeyError as missing:
            raise RelexError(f"step {missing.args[0]} is not a checkpoint of this run "
                             f"(steps: {_step_summary(self.steps)})", path=self.run.source) from None


def _step_summary(steps) -> str:
    steps = list(steps)
    return ", ".join(map(str, steps)) if len(steps) <= 6 else f"{steps[0]}, {steps[1]}, …, {steps[-1]}"


@dataclass
class RunLayout:
    """Open readers for a run plus the tensors to analyse, checked for consistency."""
    run: Run
    base: CheckpointReader
    readers: list
    names: list
    tied: dict
    notes: list

    def close(self) -> None:
        for reader in (self.base, *self.readers):
            reader.close()


def open_layout(run: Run) -> RunLayout:
    """Open every checkpoint lazily and check that they hold the same tensors and shapes."""
    base = CheckpointReader(run.base.path)
    readers = [CheckpointReader(checkpoint.path) for checkpoint in run.checkpoints]
    tied_pair = tied_lm_head(base.tensors, run.config())
    tied = {tied_pair[0]: tied_pair[1]} if tied_pair else {}
    names = [name for name, info in base.tensors.items() if info.dtype is not None and name not in tied]
    reference = set(base.tensors)
    for reader in readers:
        for name in reference - set(reader.tensors):
            raise RelexError("tensor is missing from this checkpoint", path=reader.location, tensor=name)
        for name in set(reader.tensors) - reference:
            raise RelexError("tensor is not in the base checkpoint", path=reader.location, tensor=name)
        for name in names:
            if reader.tensors[name].shape != base.tensors[name].shape:
                raise RelexError(f"shape {list(reader.tensors[name].shape)} differs from the base's "
                                 f"{list(base.tensors[name].shape)}", path=reader.tensors[name].file, tensor=name)
    notes = []
    dtypes = {str(reader.tensors[name].dtype).removeprefix("torch.") for reader in (base, *readers)
              for name in names}
    if len(dtypes) > 1:
        notes.append(f"checkpoints mix dtypes ({', '.join(sorted(dtypes))}); deltas are computed in float64")
    return RunLayout(run, base, readers, names, tied, notes)


# Bytes of one float64 block of the CPU product: (N + 1) × columns, converted, differenced and
# multiplied while it stays in the L2/L3 cache instead of streaming through memory three times.
BLOCK_BYTES = 4 << 20

# torch intra-op threads during the pass. The pass already runs two threads (one reading, one
# converting and multiplying with BLAS, which keeps its own threads); torch's OpenMP threads on
# top oversubscribe a small machine: on 2 shared cores conversions ran ~10× slower with 2.
# None leaves torch's setting alone.
PASS_TORCH_THREADS = 1


def plan_chunks(layout: RunLayout, chunk_mb: float) -> list[tuple[str, int, int]]:
    """(tensor name, first row, stop row) work items whose float64 θ_0 and deltas would fit chunk_mb.

    The pass itself holds chunks as stored (bf16: a quarter of that), two at a time.
    """
    budget_elements = max(1, int(chunk_mb * 2**20) // (8 * (len(layout.readers) + 1)))
    items = []
    for name in layout.names:
        info = layout.base.tensors[name]
        rows_per_chunk = max(1, budget_elements // max(1, info.row_numel))
        for start in range(0, info.rows, rows_per_chunk):
            items.append((name, start, min(info.rows, start + rows_per_chunk)))
    return items


def rows_dtype(dtypes) -> torch.dtype:
    """The dtype a chunk is held in: the stored one, or float64 when checkpoints disagree."""
    dtypes = set(dtypes)
    return dtypes.pop() if len(dtypes) == 1 else torch.float64


def chunk_bytes(layout: RunLayout, items) -> int:
    """Bytes `read_rows` needs for the largest of these chunks."""
    largest = 0
    for name, start, stop in items:
        dtype = rows_dtype(reader.tensors[name].dtype for reader in (layout.base, *layout.readers))
        numel = (stop - start) * layout.base.tensors[name].row_numel
        largest = max(largest, (len(layout.readers) + 1) * numel * dtype.itemsize)
    return largest


def read_rows(base: CheckpointReader, readers, name: str, start: int, stop: int,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """(N + 1, chunk) rows [start, stop) of one tensor: θ_0 first, then every checkpoint, as stored.

    Nothing is converted (bf16 stays 2 bytes an element) unless checkpoints store the tensor in
    different dtypes; then rows are float64, which holds every one of them exactly.
    `out`: a uint8 buffer of at least `chunk_bytes` to read into, reused from chunk to chunk
    (a fresh allocation of hundreds of MB page-faults on first touch, which costs more than
    the copy itself); the result is then a view of it.
    """
    sources = (base, *readers)
    dtype = rows_dtype(reader.tensors[name].dtype for reader in sources)
    numel = (stop - start) * base.tensors[name].row_numel
    nbytes = len(sources) * numel * dtype.itemsize
    storage = torch.empty(nbytes, dtype=torch.uint8) if out is None else out[:nbytes]
    rows = storage.view(dtype).view(len(sources), numel)
    for row, reader in enumerate(sources):
        same = reader.tensors[name].dtype == dtype
        data = reader.read(name, start, stop, out=rows[row].view(torch.uint8) if same else None).reshape(-1)
        if data.data_ptr() != rows[row].data_ptr():  # read elsewhere (.bin/.pt, or another dtype)
            rows[row].copy_(data)
    return rows


def gram_block(rows: torch.Tensor, device: str = "cpu") -> tuple[np.ndarray, float]:
    """Δ Δᵀ (N × N, float64 numpy) and ‖θ_0‖² for one chunk of `read_rows`.

    Precision is a float64 brute force's: stored values convert exactly to float64, the
    difference of two bf16/fp16/fp32 values is exact in float64 (and products of bf16/fp16
    differences are too); the rest rounds in float64.
    On the CPU the chunk goes through in column blocks of BLOCK_BYTES: convert to float64,
    subtract θ_0, numpy's `a @ a.T` (BLAS syrk, half the work of a general product).
    On a GPU the rows travel as stored (bf16: 2 bytes an element) and all of it happens there.
    """
    if device != "cpu":
        values = rows.to(device).to(torch.float64)
        deltas = values[1:] - values[0]
        return (deltas @ deltas.T).cpu().numpy(), float(values[0] @ values[0])
    count = rows.shape[0] - 1
    gram, base_square = np.zeros((count, count)), 0.0
    for _, block in delta_blocks(rows):
        base_square += float(block[0].dot(block[0]))  # torch: numpy's dot would wake BLAS threads
        deltas = block[1:].numpy()
        gram += deltas @ deltas.T
    return gram, base_square


def float64_blocks(rows: torch.Tensor):
    """(first column, float64 block) over a chunk of `read_rows`, BLOCK_BYTES at a time.

    The block is (N + 1, width), the stored values converted exactly. It is one reused scratch
    buffer: use it before asking for the next block.
    """
    count, numel = rows.shape
    columns = max(1024, BLOCK_BYTES // (8 * count))
    scratch = torch.empty(count * min(columns, numel), dtype=torch.float64)
    for first in range(0, numel, columns):
        width = min(columns, numel - first)
        block = scratch[:count * width].view(count, width)
        block.copy_(rows[:, first:first + width])
        yield first, block


def delta_blocks(rows: torch.Tensor):
    """`float64_blocks` with θ_0 in row 0 and Δ_t = θ_t − θ_0 in the rows below (exact for bf16/fp16/fp32)."""
    for first, block in float64_blocks(rows):
        block[1:] -= block[0]
        yield first, block


@contextmanager
def pass_torch_threads():
    """torch at PASS_TORCH_THREADS for a streaming pass (the gram pass, the export), restored after."""
    threads = torch.get_num_threads()
    if PASS_TORCH_THREADS:
        torch.set_num_threads(PASS_TORCH_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def resolve_device(device: str) -> str:
    """'cuda' when asked for and present; otherwise 'cpu' (the fallback is said on stderr)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("relex: CUDA is not available, using the CPU", file=sys.stderr)
        return "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise RelexError(f"unknown device '{device}' (use cpu or cuda)")
    return device


def _locate_non_finite(layout: RunLayout, name: str) -> RelexError:
    """Only on the error path: find which file holds the NaN/Inf, to name it."""
    for reader in (layout.base, *layout.readers):
        info = reader.tensors[name]
        rows_per_read = max(1, 2**22 // info.row_numel)
        for start in range(0, info.rows, rows_per_read):
            if not torch.isfinite(reader.read(name, start, start + rows_per_read)).all():
                return RelexError("tensor holds NaN or Inf values", path=info.file, tensor=name)
    return RelexError("Gram of this tensor overflowed float64", path=layout.run.source, tensor=name)


class _Deferred:
    """The prefetcher's Future when prefetch is off: the chunk is read only when asked for."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def result(self):
        return self.function(*self.args)

    def cancel(self) -> bool:
        return True


def _bytes_to_read(layout: RunLayout) -> int:
    return sum(reader.tensors[name].numel * reader.tensors[name].dtype.itemsize
               for reader in (layout.base, *layout.readers) for name in layout.names)


def run_gram_pass(layout: RunLayout, *, chunk_mb: float = 256, device: str = "cpu", progress=True,
                  prefetch: bool = True) -> RunGram:
    """The streaming pass itself (no cache): read every chunk once, sum Gram blocks per tensor.

    `progress` is True (tqdm bar on stderr), False, or a callable(fraction, message).
    `prefetch` reads the next chunk on a background thread while this one is multiplied.
    """
    with pass_torch_threads():
        return _gram_pass(layout, chunk_mb, resolve_device(device), progress, prefetch)


def _gram_pass(layout: RunLayout, chunk_mb: float, device: str, progress, prefetch: bool) -> RunGram:
    items = plan_chunks(layout, chunk_mb)
    position = {name: index for index, name in enumerate(layout.names)}
    n_checkpoints = len(layout.readers)
    gram = np.zeros((len(layout.names), n_checkpoints, n_checkpoints))
    base_sq_norm = np.zeros(len(layout.names))
    total_bytes = _bytes_to_read(layout)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="relex gram pass", file=sys.stderr,
               disable=None if progress is True else True, leave=False)  # None: no bar when not a terminal
    started, done_bytes, done_tensors = time.perf_counter(), 0, 0
    bytes_per_row = {name: sum(reader.tensors[name].row_numel * reader.tensors[name].dtype.itemsize
                               for reader in (layout.base, *layout.readers)) for name in layout.names}
    # Two read buffers with prefetch: chunk k+1 is read into one while chunk k, in the other, is
    # multiplied; chunk k+2 is read into k's buffer only after k's product is done.
    buffers = [torch.empty(chunk_bytes(layout, items), dtype=torch.uint8) for _ in range(2 if prefetch else 1)]

    def load(number):
        return read_rows(layout.base, layout.readers, *items[number], out=buffers[number % len(buffers)])

    with ThreadPoolExecutor(max_workers=1) as prefetcher, bar:  # the bar is cleared before any error shows
        submit = prefetcher.submit if prefetch else _Deferred
        pending = submit(load, 0) if items else None
        for number, (name, start, stop) in enumerate(items):
            rows = pending.result()
            pending = submit(load, number + 1) if number + 1 < len(items) else None
            index = position[name]
            block, base_square = gram_block(rows, device)
            gram[index] += block
            base_sq_norm[index] += base_square
            del rows
            last_chunk_of_tensor = number + 1 == len(items) or items[number + 1][0] != name
            if last_chunk_of_tensor:
                if not np.isfinite(gram[index]).all() or not np.isfinite(base_sq_norm[index]):
                    if pending is not None:
                        pending.cancel()
                    raise _locate_non_finite(layout, name)
                done_tensors += 1
            chunk_size = (stop - start) * bytes_per_row[name]
            done_bytes += chunk_size
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.update(chunk_size)
            bar.set_postfix_str(f"{done_tensors / elapsed:.1f} tensors/s", refresh=False)
            if callable(progress):
                progress(done_bytes / max(total_bytes, 1),
                         f"{done_tensors}/{len(layout.names)} tensors, {done_bytes / elapsed / 1e9:.2f} GB/s")
    base = layout.base.tensors
    return RunGram(run=layout.run, steps=np.array(layout.run.steps, dtype=np.int64), names=list(layout.names),
                   shapes=[tuple(base[name].shape) for name in layout.names],
                   dtypes=[str(base[name].dtype).removeprefix("torch.") for name in layout.names],
                   gram=gram, base_sq_norm=base_sq_norm, tied=dict(layout.tied), notes=list(layout.notes))


def compute_gram(run: Run, *, cache_dir=None, use_cache: bool = True, chunk_mb: float = 256,
                 device: str = "cpu", progress=True) -> RunGram:
    """The Gram of a run: from the cache when the inputs are unchanged, else one streaming pass.

    Args:
        run: from `open_run`.
        cache_dir: cache folder (default ~/.cache/relex or $RELEX_CACHE_DIR); never the run folder.
        use_cache: False forces a fresh pass (the result is still written to the cache).
        chunk_mb: working set per chunk (deltas of all checkpoints together).
        device: 'cpu' or 'cuda' for the Gram products.
        progress: True for a tqdm bar on stderr, False, or a callable(fraction, message).
    """
    from . import cache  # local import: the cache is an optional layer over the pass

    cache_dir = cache.default_cache_dir() if cache_dir is None else cache_dir
    layout = open_layout(run)
    try:
        key = cache.fingerprint(layout)
        cached = cache.load(layout, key, cache_dir) if use_cache else None
        if cached is not None:
            header = cached["header"]
            return RunGram(run=run, steps=cached["steps"], names=header["names"],
                           shapes=[tuple(shape) for shape in header["shapes"]], dtypes=header["dtypes"],
                           gram=cached["gram"], base_sq_norm=cached["base_sq_norm"], tied=header["tied"],
                           notes=header["notes"], fingerprint=key, from_cache=True)
        result = run_gram_pass(layout, chunk_mb=chunk_mb, device=device, progress=progress)
    finally:
        layout.close()
    result.fingerprint = key
    try:
        cache.save(result, cache_dir)
    except OSError as error:  # an unwritable cache must not lose the analysis
        print(f"relex: could not write the cache in {cache_dir} ({error.strerror or error})", file=sys.stderr)
    return result
