"""Tensors as stored pieces of files, read by rows with pread: the one read path of every format.

Every format relex reads comes down to the same thing: a tensor is one or more *chunks*
(a safetensors entry, a torch storage, an FSDP rank's shard, a DCP chunk), each a block of
the whole tensor whose elements sit at a known byte offset in a file. Rows [start, stop) of the
tensor are then read by pread from the chunks they overlap, straight into the caller's buffer
when a chunk holds whole rows. Nothing is memory-mapped and nothing outside the asked rows is
read, however large the rank file or the checkpoint.
"""

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import RelexError
from .dtypes import element_count


@dataclass(frozen=True)
class StoredArray:
    """A dense array in a file: element [0, ..., 0] at byte `offset`, `strides` in elements
    (None: row-major contiguous)."""
    file: Path
    offset: int
    dtype: torch.dtype
    shape: tuple
    strides: tuple | None = None

    @property
    def contiguous(self) -> bool:
        return self.strides is None or self.strides == contiguous_strides(self.shape, self.strides)

    @property
    def end(self) -> int:
        """One past the last byte this array occupies."""
        if not element_count(self.shape):
            return self.offset
        strides = self.strides or contiguous_strides(self.shape)
        last = sum((size - 1) * stride for size, stride in zip(self.shape, strides))
        return self.offset + (last + 1) * self.dtype.itemsize


def contiguous_strides(shape, like=None) -> tuple:
    """Row-major strides of `shape`; dimensions of size 1 take `like`'s stride (any stride is contiguous there)."""
    strides, step = [], 1
    for position in range(len(shape) - 1, -1, -1):
        strides.append(like[position] if like is not None and shape[position] == 1 else step)
        step *= shape[position]
    return tuple(reversed(strides))


@dataclass(frozen=True)
class Chunk:
    """One stored block of a tensor: its position in the whole tensor and where its values are.

    `array` is a StoredArray, or an in-memory tensor for the rare files whose layout torch
    does not expose (legacy pickles), which are then loaded whole.
    """
    offsets: tuple
    array: object

    @property
    def shape(self) -> tuple:
        return tuple(self.array.shape)

    @property
    def file(self):
        return getattr(self.array, "file", None)


def check_tiling(chunks, shape, *, path, tensor) -> None:
    """Chunks must cover the tensor exactly, as the cells of a grid (what FSDP, TP and DCP write).

    Empty chunks (a rank whose shard of a short tensor has no rows) hold nothing and are left out.
    """
    ndim = len(shape)
    if not element_count(shape):
        return
    chunks = [chunk for chunk in chunks if element_count(chunk.shape)]
    cuts = []
    for dim in range(ndim):
        spans = sorted({(chunk.offsets[dim], chunk.shape[dim]) for chunk in chunks})
        position = 0
        for offset, size in spans:
            if offset != position:
                raise RelexError(f"the stored pieces of this tensor {'overlap' if offset < position else 'leave a gap'} "
                                 f"along dimension {dim} at {min(offset, position)} (shape {list(shape)})",
                                 path=path, tensor=tensor)
            position += size
        if position != shape[dim]:
            raise RelexError(f"the stored pieces of this tensor cover {position} of {shape[dim]} along dimension "
                             f"{dim}", path=path, tensor=tensor)
        cuts.append(len(spans))
    cells = {tuple(chunk.offsets) for chunk in chunks}
    expected = 1
    for count in cuts:
        expected *= count
    if len(chunks) != expected or len(cells) != expected:
        raise RelexError(f"the {len(chunks)} stored pieces of this tensor do not form a grid", path=path, tensor=tensor)


class OpenFiles:
    """File descriptors opened on first use and shared by reads (the pass reads on a prefetch thread)."""

    def __init__(self):
        self._descriptors = {}
        self._lock = threading.Lock()

    def descriptor(self, file: Path) -> int:
        with self._lock:
            if file not in self._descriptors:
                try:
                    self._descriptors[file] = os.open(file, os.O_RDONLY)
                except OSError as error:
                    raise RelexError(f"cannot open ({error.strerror or error})", path=file) from None
            return self._descriptors[file]

    def close(self) -> None:
        with self._lock:
            for descriptor in self._descriptors.values():
                os.close(descriptor)
            self._descriptors.clear()


def pread_into(descriptor: int, buffer, position: int) -> None:
    """Fill `buffer` (anything writable with the buffer protocol) from `position`; EOFError when the file ends first."""
    view = memoryview(buffer).cast("B")
    done = 0
    while done < view.nbytes:  # one pread returns at most ~2 GB
        count = os.preadv(descriptor, [view[done:]], position + done)
        if count == 0:
            raise EOFError
        done += count


def read_rows(chunks, shape, dtype: torch.dtype, start: int, stop: int, files: OpenFiles, out=None, *,
              tensor: str) -> torch.Tensor:
    """Rows [start, stop) of a tensor made of `chunks` (already checked to tile it), as stored.

    out: optional uint8 tensor to read into; the result is then a view of it. Chunks that hold
    whole rows are read straight into it; others (split along a later dimension) through a
    small piece each, copied into place.
    """
    shape = tuple(shape) if shape else (1,)
    row_numel = element_count(shape[1:])
    nbytes = (stop - start) * row_numel * dtype.itemsize
    if out is None:
        out = torch.empty(nbytes, dtype=torch.uint8)
    elif out.dtype != torch.uint8 or out.numel() < nbytes:
        raise ValueError(f"out must be a uint8 tensor of at least {nbytes} bytes")
    result = out[:nbytes].view(dtype).view(stop - start, *shape[1:])
    for chunk in chunks:
        offsets = tuple(chunk.offsets) or (0,)
        local_shape = chunk.shape or (1,)
        first, last = max(start, offsets[0]), min(stop, offsets[0] + local_shape[0])
        if first >= last:
            continue
        target = result[first - start:last - start]
        whole_rows = tuple(local_shape[1:]) == shape[1:]
        if not whole_rows:
            target = target[(slice(None), *(slice(offset, offset + size)
                                            for offset, size in zip(offsets[1:], local_shape[1:])))]
        piece_rows = (first - offsets[0], last - offsets[0])
        if not isinstance(chunk.array, StoredArray):
            target.copy_(chunk.array.reshape(local_shape)[piece_rows[0]:piece_rows[1]])
        elif whole_rows and chunk.array.contiguous:
            _pread_rows(chunk.array, *piece_rows, files, tensor, into=target)
        else:
            target.copy_(_pread_rows(chunk.array, *piece_rows, files, tensor))
    return result


def _pread_rows(array: StoredArray, first: int, last: int, files: OpenFiles, tensor: str, into=None) -> torch.Tensor:
    """Local rows [first, last) of a stored array, read into `into` (contiguous) or a fresh tensor."""
    shape = tuple(array.shape) or (1,)
    itemsize = array.dtype.itemsize
    if array.contiguous:
        row_bytes = element_count(shape[1:]) * itemsize
        position, span = array.offset + first * row_bytes, (last - first) * row_bytes
        element_offset = 0
    else:  # strided on disk (rare: a transposed tensor saved as is): read the span its rows touch
        strides = array.strides
        low = first * strides[0]
        high = (last - 1) * strides[0] + sum((size - 1) * stride for size, stride in zip(shape[1:], strides[1:]))
        position, span, element_offset = array.offset + low * itemsize, (high - low + 1) * itemsize, 0
    if into is not None:
        raw = into.view(torch.uint8).view(-1)
    else:
        raw = torch.empty(span, dtype=torch.uint8)
    try:
        pread_into(files.descriptor(array.file), raw.numpy(), position)
    except EOFError:
        raise RelexError("file is shorter than its header or index says: truncated or partly copied?",
                         path=array.file, tensor=tensor) from None
    except OSError as error:
        raise RelexError(f"cannot read tensor data ({error.strerror or error})", path=array.file,
                         tensor=tensor) from None
    if into is not None:
        return into
    values = raw.view(array.dtype)
    if array.contiguous:
        return values.view(last - first, *shape[1:])
    return values.as_strided((last - first, *shape[1:]), array.strides, element_offset)
