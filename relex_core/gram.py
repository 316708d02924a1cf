"""The one streaming pass: per tensor, G[i, j] = <θ_i − θ_0, θ_j − θ_0> over every checkpoint.

Every byte of every checkpoint is read once (relex_core.stream). Tensors are cut into row
chunks whose size is set by `chunk_mb`, so memory does not grow with the model or with the
number of checkpoints. A background thread reads the next chunk, as stored, while this one is
multiplied. The product runs in float64 on cache-sized column blocks (convert, subtract θ_0,
BLAS syrk), the blocks spread over `threads.cores()` threads and summed in column order, so
the result does not depend on the thread count. The deltas are exact for bf16/fp16/fp32
checkpoints; products and sums round as in a float64 brute force.

The unit of work is `item_gram(layout, item, new)`: a plain function of the layout and one
(tensor, row range) that returns that range's `GramBlock` (Gram block, ‖θ_0‖², and how many
elements each checkpoint stores differently from the base). Summing the blocks of
`pass_items(layout)` per tensor gives the pass's Gram, in any order, on any machine; with `new`
it returns only the rows of new checkpoints, G[new, all], to grow a Gram without redoing it.

The changed-element counts come free with the subtraction: Δ_t is exact, so Δ_t ≠ 0 exactly
where the stored θ_t differs from θ_0. They show when a bf16 trajectory is mostly rounding.
"""

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import torch

from . import threads
from .errors import RelexError
from .io.discover import Run
from .io.dtypes import dtype_name, element_count
from .io.names import layer_and_module
from .stream import (ByteProgress, ReadAhead, RunLayout, WorkItem, block_columns, budget_bytes, chunk_bytes,
                     locate_non_finite, open_layout, plan_chunks, read_rows, stored_bytes)


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
        changed: (n_tensors, N) int64, elements whose stored value differs from the base's at each
            checkpoint (None for a RunGram built from Gram matrices alone).
        checkpoint_dtypes: per tensor, the dtype the checkpoints store it in ('mixed' if they differ).
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
    changed: np.ndarray | None = None
    checkpoint_dtypes: list = field(default_factory=list)

    @classmethod
    def from_sums(cls, layout: RunLayout, gram: np.ndarray, base_sq_norm: np.ndarray,
                  changed: np.ndarray) -> "RunGram":
        """The RunGram of a layout whose items' blocks were summed into `gram`, `base_sq_norm` and
        `changed` (by `run_gram_pass`, or by any engine that hands out `item_gram` work)."""
        base = layout.base.tensors
        return cls(run=layout.run, steps=np.array(layout.run.steps, dtype=np.int64)[layout.positions],
                   names=list(layout.names), shapes=[tuple(base[name].shape) for name in layout.names],
                   dtypes=[dtype_name(base[name].dtype) for name in layout.names], gram=gram,
                   base_sq_norm=base_sq_norm, tied=dict(layout.tied), notes=list(layout.notes), changed=changed,
                   checkpoint_dtypes=checkpoint_dtypes(layout))

    def select(self, positions) -> "RunGram":
        """The RunGram of some of its checkpoints (positions in `steps`, in order): the sub-matrix a
        pass over just those checkpoints would have computed. Used when a trainer deleted some."""
        positions = np.asarray(positions, dtype=np.int64)
        run = self.run
        if run is not None and len(run.checkpoints) == len(self.steps):  # keep run.checkpoints[i] ↔ steps[i]
            run = replace(run, checkpoints=tuple(run.checkpoints[position] for position in positions))
        return replace(self, run=run, steps=self.steps[positions], gram=self.gram[:, positions][:, :, positions],
                       changed=None if self.changed is None else self.changed[:, positions],
                       fingerprint="", from_cache=False)

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


def checkpoint_dtypes(layout: RunLayout) -> list[str]:
    """Per analysed tensor, the dtype the checkpoints (base excluded) store it in, or 'mixed'."""
    stored = []
    for name in layout.names:
        dtypes = {dtype_name(reader.tensors[name].dtype) for reader in layout.readers}
        stored.append(dtypes.pop() if len(dtypes) == 1 else "mixed")
    return stored


def _step_summary(steps) -> str:
    steps = list(steps)
    return ", ".join(map(str, steps)) if len(steps) <= 6 else f"{steps[0]}, {steps[1]}, …, {steps[-1]}"


# ---------------------------------------------------------------- the unit of work


def pass_items(layout: RunLayout, chunk_mb: float = 256) -> list[WorkItem]:
    """The pass's work items: row ranges whose float64 θ_0 and deltas would fit chunk_mb.

    The pass itself holds chunks as stored (bf16: a quarter of that), two at a time.
    """
    return plan_chunks(layout, budget_bytes(chunk_mb), 8 * (len(layout.readers) + 1))


class GramBlock(NamedTuple):
    """What one work item adds to the pass: its Gram block (K × N; N × N for the whole run), ‖θ_0‖²
    of its rows, and per checkpoint row of the block (K,) how many elements differ from the base."""
    gram: np.ndarray
    base_sq_norm: float
    changed: np.ndarray


def item_gram(layout: RunLayout, item: WorkItem, new=None, *, out: torch.Tensor | None = None,
              device: str = "cpu", pool: ThreadPoolExecutor | None = None) -> GramBlock:
    """The `GramBlock` of one work item: `read_rows`, then `gram_block`.

    new: None for the whole (N × N) block; positions in layout.readers (a slice or a list) for
    only their rows, the (K × N) block G[new, all]. out: a reused read buffer (`chunk_bytes`).
    """
    return gram_block(read_rows(layout, item, out=out), new, device=device, pool=pool)


def gram_block(rows: torch.Tensor, new=None, *, device: str = "cpu",
               pool: ThreadPoolExecutor | None = None) -> GramBlock:
    """Δ[new] Δᵀ (float64 numpy; N × N when new is None), ‖θ_0‖² and the count of Δ[new] ≠ 0 per row,
    for a chunk of `read_rows`.

    Precision is a float64 brute force's: stored values convert exactly to float64, the
    difference of two bf16/fp16/fp32 values is exact in float64 (and products of bf16/fp16
    differences are too); the rest rounds in float64.
    On the CPU the chunk goes through in column blocks of stream.BLOCK_BYTES (convert, subtract
    θ_0, numpy's `a @ a.T`, BLAS syrk: half the work of a general product), on `pool`'s threads
    when given; the blocks' products are added in column order whoever computed them.
    On a GPU the rows travel as stored (bf16: 2 bytes an element) and all of it happens there.
    """
    if device != "cpu":
        values = rows.to(device).to(torch.float64)
        deltas = values[1:] - values[0]
        chosen = deltas if new is None else deltas[new]
        return GramBlock((chosen @ deltas.T).cpu().numpy(), float(values[0] @ values[0]),
                         (chosen != 0).sum(dim=1).cpu().numpy().astype(np.int64))
    count, numel = rows.shape
    columns = block_columns(count)
    bounds = [(first, min(numel, first + columns)) for first in range(0, numel, columns)]
    if pool is None or len(bounds) == 1:
        parts = (_block_product(rows, first, stop, new) for first, stop in bounds)
    else:
        parts = (future.result() for future in [pool.submit(_block_product, rows, first, stop, new)
                                                 for first, stop in bounds])
    rows_out = count - 1 if new is None else len(np.arange(count - 1)[new])
    gram, base_square, changed = np.zeros((rows_out, count - 1)), 0.0, np.zeros(rows_out, dtype=np.int64)
    for block in parts:
        gram += block.gram
        base_square += block.base_sq_norm
        changed += block.changed
    return GramBlock(gram, base_square, changed)


_scratch = threading.local()  # one float64 block buffer per thread, reused from block to block


def _block_product(rows: torch.Tensor, first: int, stop: int, new) -> GramBlock:
    """The GramBlock of columns [first, stop): converted to float64, θ_0 subtracted."""
    count, width = rows.shape[0], stop - first
    scratch = getattr(_scratch, "buffer", None)
    if scratch is None or scratch.numel() < count * width:
        scratch = _scratch.buffer = torch.empty(count * width, dtype=torch.float64)
    block = scratch[:count * width].view(count, width)
    block.copy_(rows[:, first:stop])
    block[1:] -= block[0]
    base_square = float(block[0].dot(block[0]))
    deltas = block[1:].numpy()
    chosen = deltas if new is None else deltas[new]
    return GramBlock(chosen @ deltas.T, base_square, np.count_nonzero(chosen, axis=1).astype(np.int64))


# ---------------------------------------------------------------- the local engine


def resolve_device(device: str) -> str:
    """'cuda' when asked for and present; otherwise 'cpu' (the fallback is said on stderr)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("relex: CUDA is not available, using the CPU", file=sys.stderr)
        return "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise RelexError(f"unknown device '{device}' (use cpu or cuda)")
    return device


class GramSums(NamedTuple):
    """The blocks of a layout's work items summed per tensor (layout.names order): gram (n_tensors, K, N),
    base_sq_norm (n_tensors,), changed (n_tensors, K), for K = N checkpoints, or K new ones."""
    gram: np.ndarray
    base_sq_norm: np.ndarray
    changed: np.ndarray


@dataclass
class LocalEngine:
    """Runs a layout's work items in this process: one reading thread ahead of `workers` product threads.

    device: 'cpu' or 'cuda' for the products; prefetch: read the next chunk while this one is
    multiplied; workers: threads for the CPU products (default `threads.cores()`).
    Every engine (this one, `relex_core.engines.ray`) offers `gram_sums` with the same meaning.
    """
    device: str = "cpu"
    prefetch: bool = True
    workers: int | None = None

    def gram_sums(self, layout: RunLayout, new=None, *, chunk_mb: float = 256, progress=True) -> GramSums:
        """Sum `item_gram` over `pass_items(layout, chunk_mb)` per tensor; new: as for `item_gram`.

        progress: True (tqdm bar on stderr), False, or a callable(fraction, message) told the bytes read.
        """
        threads.configure()
        device = resolve_device(self.device)
        items = pass_items(layout, chunk_mb)
        workers = self.workers or threads.cores()
        products = ThreadPoolExecutor(workers, thread_name_prefix="relex-gram") \
            if device == "cpu" and workers > 1 else nullcontext()

        def read(item, buffer):
            return read_rows(layout, item, out=buffer)

        with products as pool, ByteProgress(pass_bytes(layout, items), "relex gram pass", progress) as bar, \
                ReadAhead(items, read, chunk_bytes(layout, items), self.prefetch) as chunks:
            def blocks():
                for item, rows in chunks:
                    block = gram_block(rows, new, device=device, pool=pool)
                    bar.advance(stored_bytes(layout, item))
                    yield block
            return sum_blocks(layout, items, new, blocks())


def sum_blocks(layout: RunLayout, items, new, blocks) -> GramSums:
    """Add the items' `GramBlock`s, given in item order, per tensor; each tensor is checked for NaN/Inf
    once its last block is in. Every engine adds this way, so their sums are equal, not merely close."""
    position = {name: index for index, name in enumerate(layout.names)}
    count = len(layout.readers)
    rows_out = count if new is None else len(np.arange(count)[new])
    gram = np.zeros((len(layout.names), rows_out, count))
    base_sq_norm = np.zeros(len(layout.names))
    changed = np.zeros((len(layout.names), rows_out), dtype=np.int64)
    for number, (item, block) in enumerate(zip(items, blocks)):
        index = position[item.tensor]
        gram[index] += block.gram
        base_sq_norm[index] += block.base_sq_norm
        changed[index] += block.changed
        last_chunk_of_tensor = number + 1 == len(items) or items[number + 1].tensor != item.tensor
        if last_chunk_of_tensor:
            check_finite(layout, item.tensor, gram[index], base_sq_norm[index])
    return GramSums(gram, base_sq_norm, changed)


def pass_bytes(layout: RunLayout, items) -> int:
    """Bytes the items read from the files, as stored: what a pass's progress counts."""
    return sum(stored_bytes(layout, item) for item in items)


def check_finite(layout: RunLayout, tensor: str, gram: np.ndarray, base_sq_norm: float) -> None:
    """A tensor's summed blocks must be finite; else name the file that holds the NaN/Inf."""
    if not (np.isfinite(gram).all() and np.isfinite(base_sq_norm)):
        raise locate_non_finite(layout, tensor)


def run_gram_pass(layout: RunLayout, *, chunk_mb: float = 256, device: str = "cpu", progress=True,
                  prefetch: bool = True, workers: int | None = None, engine=None) -> RunGram:
    """The streaming pass itself (no cache): every chunk read once, Gram blocks summed per tensor.

    engine: anything with `gram_sums` (default: a `LocalEngine` of device, prefetch and workers).
    """
    engine = engine or LocalEngine(device=device, prefetch=prefetch, workers=workers)
    return RunGram.from_sums(layout, *engine.gram_sums(layout, chunk_mb=chunk_mb, progress=progress))


def grow_gram(previous: RunGram, layout: RunLayout, *, engine=None, chunk_mb: float = 256,
              progress=True) -> RunGram:
    """The RunGram of `layout` from `previous`, the Gram of its first N checkpoints: only the K new
    checkpoints' rows G[new, all] are computed (`engine.gram_sums(layout, new=...)`, one pass that
    reads every checkpoint once: <Δ_new, Δ_i> needs Δ_i), and the old N × N block is kept as it is.

    Equal to a one-shot pass over the same checkpoints to float64 rounding (the sums run in a
    different order). engine: anything with `gram_sums` (default `LocalEngine()`).
    """
    steps = np.array([layout.run.steps[position] for position in layout.positions], dtype=np.int64)
    count = len(previous.steps)
    if previous.names != list(layout.names) or steps[:count].tolist() != previous.steps.tolist():
        raise ValueError("grow_gram: the layout does not start with the previous Gram's checkpoints and tensors")
    if count == len(steps):
        return previous
    engine = engine or LocalEngine()
    sums = engine.gram_sums(layout, new=slice(count, len(steps)), chunk_mb=chunk_mb, progress=progress)
    return RunGram.from_sums(layout, _grown(previous.gram, sums.gram), previous.base_sq_norm.copy(),
                             _grown_changed(previous.changed, sums.changed))


def _grown(old: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(n, N+K, N+K) from the old (n, N, N) block and the new rows (n, K, N+K), symmetric as a pass's."""
    count = old.shape[1]
    gram = np.empty((old.shape[0], rows.shape[2], rows.shape[2]))
    gram[:, :count, :count] = old
    gram[:, count:, :] = rows
    gram[:, :count, count:] = rows[:, :, :count].transpose(0, 2, 1)
    new_block = rows[:, :, count:]
    gram[:, count:, count:] = 0.5 * (new_block + new_block.transpose(0, 2, 1))  # a product's rounding, made symmetric
    return gram


def _grown_changed(old, new: np.ndarray) -> np.ndarray | None:
    return None if old is None else np.concatenate([old, new], axis=1)


def compute_gram(run: Run, *, cache_dir=None, use_cache: bool = True, chunk_mb: float = 256,
                 device: str = "cpu", progress=True, engine=None) -> RunGram:
    """The Gram of a run: from the cache when the inputs are unchanged; grown from the cached Gram of
    its earlier checkpoints when only new ones were added since (`grow_gram`); else one streaming pass.

    Args:
        run: from `open_run`.
        cache_dir: cache folder (default ~/.cache/relex or $RELEX_CACHE_DIR); never the run folder.
        use_cache: False forces a fresh pass (the result is still written to the cache).
        chunk_mb: working set per chunk (deltas of all checkpoints together).
        device: 'cpu' or 'cuda' for the Gram products.
        progress: True for a tqdm bar on stderr, False, or a callable(fraction, message).
        engine: where the work items run (default: this process, `LocalEngine(device)`).
    """
    from . import cache  # local import: the cache is an optional layer over the pass

    cache_dir = cache.default_cache_dir() if cache_dir is None else cache_dir
    with open_layout(run) as layout:
        key = cache.fingerprint(layout)
        cached = cache.load(layout, key, cache_dir) if use_cache else None
        if cached is not None:
            result = _cached_run_gram(run, cached)
            result.fingerprint = key
            return result
        prefix = cache.load_prefix(layout, cache_dir) if use_cache else None
        if prefix is not None:  # the run grew since a pass over its first checkpoints: add the new rows
            engine = engine or LocalEngine(device=device)
            result = grow_gram(_cached_run_gram(run, prefix[1]), layout, engine=engine, chunk_mb=chunk_mb,
                               progress=progress)
        else:
            result = run_gram_pass(layout, chunk_mb=chunk_mb, device=device, progress=progress, engine=engine)
    result.fingerprint = key
    cache.save_or_say(result, cache_dir)
    return result


def _cached_run_gram(run: Run, cached: dict) -> RunGram:
    """The RunGram of a cache entry (`cache.load`): the run's checkpoints, or its first ones."""
    header = cached["header"]
    return RunGram(run=run, steps=cached["steps"], names=header["names"],
                   shapes=[tuple(shape) for shape in header["shapes"]], dtypes=header["dtypes"],
                   gram=cached["gram"], base_sq_norm=cached["base_sq_norm"], tied=header["tied"],
                   notes=header["notes"], fingerprint=header["fingerprint"], from_cache=True,
                   changed=cached["changed"], checkpoint_dtypes=header["checkpoint_dtypes"])
