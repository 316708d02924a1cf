"""Reading a run's checkpoints, the one way the Gram pass, the export and the per-matrix spectra do.

    layout = open_layout(run)                          # every reader, checked against the base
    items = plan_chunks(layout, budget_bytes(256), 8 * (len(layout.readers) + 1))
    rows = read_rows(layout, items[0])                 # θ_0 and every checkpoint, rows as stored
    for first, block in delta_blocks(rows): ...        # float64, cache-sized: θ_0, then Δ_t

A `WorkItem` (tensor, first row, stop row) is the unit of work: `read_rows` of an item needs
only the layout, so items can be handed out to threads or to other machines and their results
summed. `ReadAhead` is the engine side: it reads the next item on a background thread, into
one of two reused buffers, while the caller works on this one. `ByteProgress` reports bytes read.
"""

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from tqdm import tqdm

from .errors import RelexError
from .io.discover import Run
from .io.dtypes import dtype_name
from .io.names import tied_lm_head
from .io.reader import CheckpointReader

# Bytes of one float64 block: (N + 1) × columns, converted, differenced and multiplied while it
# stays in the L2/L3 cache instead of streaming through memory three times.
BLOCK_BYTES = 4 << 20


class WorkItem(NamedTuple):
    """Rows [start, stop) along dim 0 of one tensor, in every checkpoint of a layout."""
    tensor: str
    start: int
    stop: int


@dataclass
class RunLayout:
    """Open readers for a run plus the tensors to analyse, checked for consistency.

    readers: one per opened checkpoint, in run order; positions: their indices in run.checkpoints.
    names: floating tensors of the base, a tied lm_head left out (it is the embedding again).
    """
    run: Run
    base: CheckpointReader
    readers: list
    names: list
    tied: dict
    notes: list
    positions: list = field(default_factory=list)

    @property
    def sources(self) -> tuple:
        """θ_0's reader, then every checkpoint's: the order of the rows `read_rows` returns."""
        return (self.base, *self.readers)

    def close(self) -> None:
        for reader in self.sources:
            reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def open_layout(run: Run, checkpoints=None) -> RunLayout:
    """Open the base and the checkpoints (positions in run.checkpoints; None: all) lazily, and
    check that they hold the same tensors and shapes. Every checkpoint reader relex uses is made here."""
    positions = list(range(len(run.checkpoints))) if checkpoints is None else [int(index) for index in checkpoints]
    base = CheckpointReader(run.base.path)
    readers = []
    try:
        readers.extend(CheckpointReader(run.checkpoints[position].path) for position in positions)
        return _checked_layout(run, base, readers, positions)
    except BaseException:
        for reader in (base, *readers):
            reader.close()
        raise


def _checked_layout(run: Run, base: CheckpointReader, readers: list, positions: list) -> RunLayout:
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
    dtypes = {dtype_name(reader.tensors[name].dtype) for reader in (base, *readers) for name in names}
    if len(dtypes) > 1:
        notes.append(f"checkpoints mix dtypes ({', '.join(sorted(dtypes))}); deltas are computed in float64")
    return RunLayout(run, base, readers, names, tied, notes, positions)


# ---------------------------------------------------------------- planning


def budget_bytes(chunk_mb: float) -> int:
    """The memory budget of one chunk, from the user's --chunk-mb (MiB)."""
    return int(chunk_mb * 2**20)


def plan_chunks(layout: RunLayout, budget: int, bytes_per_element: int, names=None) -> list[WorkItem]:
    """Work items, tensor by tensor (layout.names, or `names` of the base), in row ranges whose
    elements times `bytes_per_element` (what the caller holds per element of a row) fit `budget`.

    At least one row per item, however large a row is.
    """
    items = []
    for name in layout.names if names is None else names:
        info = layout.base.tensors[name]
        rows_per_chunk = max(1, budget // (bytes_per_element * max(1, info.row_numel)))
        items.extend(WorkItem(name, start, min(info.rows, start + rows_per_chunk))
                     for start in range(0, info.rows, rows_per_chunk))
    return items


def rows_dtype(dtypes) -> torch.dtype:
    """The dtype a chunk is held in: the stored one, or float64 when checkpoints disagree."""
    dtypes = set(dtypes)
    return dtypes.pop() if len(dtypes) == 1 else torch.float64


def _rows_shape(layout: RunLayout, item: WorkItem) -> tuple[torch.dtype, int, int]:
    dtype = rows_dtype(reader.tensors[item.tensor].dtype for reader in layout.sources)
    numel = (item.stop - item.start) * layout.base.tensors[item.tensor].row_numel
    return dtype, len(layout.sources), numel


def chunk_bytes(layout: RunLayout, items) -> int:
    """Bytes `read_rows` needs for the largest of these items: the size of a reusable buffer."""
    largest = 0
    for item in items:
        dtype, count, numel = _rows_shape(layout, item)
        largest = max(largest, count * numel * dtype.itemsize)
    return largest


def stored_bytes(layout: RunLayout, item: WorkItem) -> int:
    """Bytes that `read_rows(layout, item)` reads from the files, as stored."""
    rows = item.stop - item.start
    return sum(rows * reader.tensors[item.tensor].row_numel * reader.tensors[item.tensor].dtype.itemsize
               for reader in layout.sources)


# ---------------------------------------------------------------- reading


def read_rows(layout: RunLayout, item: WorkItem, out: torch.Tensor | None = None) -> torch.Tensor:
    """(N + 1, chunk) rows of one item: θ_0 first, then every checkpoint of the layout, as stored.

    Nothing is converted (bf16 stays 2 bytes an element) unless checkpoints store the tensor in
    different dtypes; then rows are float64, which holds every one of them exactly.
    `out`: a uint8 buffer of at least `chunk_bytes` to read into, reused from chunk to chunk
    (a fresh allocation of hundreds of MB page-faults on first touch, which costs more than
    the copy itself); the result is then a view of it.
    """
    dtype, count, numel = _rows_shape(layout, item)
    nbytes = count * numel * dtype.itemsize
    storage = torch.empty(nbytes, dtype=torch.uint8) if out is None else out[:nbytes]
    rows = storage.view(dtype).view(count, numel)
    for row, reader in enumerate(layout.sources):
        same = reader.tensors[item.tensor].dtype == dtype
        data = reader.read(item.tensor, item.start, item.stop,
                           out=rows[row].view(torch.uint8) if same else None).reshape(-1)
        if data.data_ptr() != rows[row].data_ptr():  # read elsewhere (.bin/.pt, or another dtype)
            rows[row].copy_(data)
    return rows


def block_columns(count: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Columns of a float64 block of `count` rows: BLOCK_BYTES, but at least 1024 columns."""
    return max(1024, block_bytes // (8 * count))


def float64_blocks(rows: torch.Tensor, scratch: torch.Tensor | None = None):
    """(first column, float64 block) over a chunk of `read_rows`, BLOCK_BYTES at a time.

    The block is (N + 1, width), the stored values converted exactly. It lives in one reused
    scratch buffer (`scratch`, float64, or a new one): use it before asking for the next block.
    """
    count, numel = rows.shape
    columns = block_columns(count)
    if scratch is None:
        scratch = torch.empty(count * min(columns, numel), dtype=torch.float64)
    for first in range(0, numel, columns):
        width = min(columns, numel - first)
        block = scratch[:count * width].view(count, width)
        block.copy_(rows[:, first:first + width])
        yield first, block


def delta_blocks(rows: torch.Tensor, scratch: torch.Tensor | None = None):
    """`float64_blocks` with θ_0 in row 0 and Δ_t = θ_t − θ_0 below (exact for bf16/fp16/fp32)."""
    for first, block in float64_blocks(rows, scratch):
        block[1:] -= block[0]
        yield first, block


def locate_non_finite(layout: RunLayout, name: str) -> RelexError:
    """Only on the error path: find which file holds the NaN/Inf, to name it."""
    for reader in layout.sources:
        info = reader.tensors[name]
        rows_per_read = max(1, 2**22 // info.row_numel)
        for start in range(0, info.rows, rows_per_read):
            if not torch.isfinite(reader.read(name, start, start + rows_per_read)).all():
                return RelexError("tensor holds NaN or Inf values", path=info.file, tensor=name)
    return RelexError("Gram of this tensor overflowed float64", path=layout.run.source, tensor=name)


# ---------------------------------------------------------------- the engine's reading side


class ReadAhead:
    """Items with their rows, in order; the next item is read on a background thread meanwhile.

        with ReadAhead(items, read, buffer_bytes) as chunks:
            for item, rows in chunks: ...

    `read(item, buffer)` reads one item into a uint8 buffer of buffer_bytes (or elsewhere).
    There are two buffers: item k + 1 is read into one while item k, in the other, is worked
    on, and item k + 2 goes into k's buffer only once the caller asks for k + 1. So the caller
    must be done with an item's rows before it takes the next. With prefetch=False items are
    read in the caller's thread, into one buffer. Leaving the block waits for a read under way.
    """

    def __init__(self, items, read, buffer_bytes: int, prefetch: bool = True):
        self.items, self.read = list(items), read
        self.buffers = [torch.empty(buffer_bytes, dtype=torch.uint8) for _ in range(2 if prefetch else 1)]
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relex-read") if prefetch else None
        self.pending = None

    def _load(self, number: int):
        return self.read(self.items[number], self.buffers[number % len(self.buffers)])

    def __iter__(self):
        if self.pool is None:
            for number, item in enumerate(self.items):
                yield item, self._load(number)
            return
        self.pending = self.pool.submit(self._load, 0) if self.items else None
        for number, item in enumerate(self.items):
            rows = self.pending.result()
            self.pending = self.pool.submit(self._load, number + 1) if number + 1 < len(self.items) else None
            yield item, rows

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.pool is not None:
            if self.pending is not None:
                self.pending.cancel()
            self.pool.shutdown(wait=True)  # a read under way must not outlive the layout's open files


class ByteProgress:
    """Progress in bytes read: a tqdm bar on stderr (progress=True), nothing (False), or a
    callable(fraction, message) told e.g. "1.21 / 2.37 GB read, 0.42 GB/s" after each chunk."""

    def __init__(self, total_bytes: int, description: str, progress=True):
        self.total, self.done, self.progress = int(total_bytes), 0, progress
        self.started = time.perf_counter()
        self.bar = tqdm(total=self.total, unit="B", unit_scale=True, desc=description, file=sys.stderr,
                        disable=None if progress is True else True, leave=False)  # None: no bar off a terminal

    def advance(self, nbytes: int) -> None:
        self.done += int(nbytes)
        self.bar.update(int(nbytes))
        if callable(self.progress):
            self.progress(self.done / max(self.total, 1), self.message())

    def message(self) -> str:
        unit, scale = ("GB", 1e9) if self.total >= 1e9 else ("MB", 1e6)
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        return f"{self.done / scale:.2f} / {self.total / scale:.2f} {unit} read, {rate / 1e9:.2f} GB/s"

    def close(self) -> None:
        self.bar.close()  # the bar is cleared before any error message shows

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
