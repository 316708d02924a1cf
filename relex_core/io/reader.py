"""A lazy, per-tensor reader for one checkpoint (mergekit-style: open files, read on demand).

Safetensors headers are checked through `safe_open`; rows are then copied straight from the
file with `pread`, so nothing stays memory-mapped and resident memory holds only what was asked
for (pages of a mapping count in the process's RSS and would grow with the run).
`.bin`/`.pt` state dicts are loaded with `weights_only=True` (and mmap when the file allows),
so a pickle that would run code is refused, never executed.
"""

import json
import os
import pickle
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import RelexError
from .dtypes import DTYPES_BY_CODE, FLOAT_DTYPES, element_count



@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives and what it looks like, without reading it."""
    shape: tuple
    dtype: torch.dtype
    file: Path

    @property
    def numel(self) -> int:
        return element_count(self.shape)

    @property
    def row_numel(self) -> int:
        """Elements per slice along dim 0: the unit in which tensors are chunked."""
        return self.numel // self.shape[0] if self.shape and self.shape[0] else 1

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1


def _load_index(index_path: Path) -> dict:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RelexError(f"unreadable shard index ({error})", path=index_path) from None
    return {name: index_path.parent / shard for name, shard in weight_map.items()}


def weight_files(location: Path) -> tuple[str, list[Path], dict]:
    """(format, files, tensor→file map from an index or {}) for a checkpoint folder or file."""
    if location.is_file():
        return ("safetensors" if location.suffix == ".safetensors" else "torch"), [location], {}
    for index_name, fmt in (("model.safetensors.index.json", "safetensors"),
                            ("pytorch_model.bin.index.json", "torch")):
        index_path = location / index_name
        if index_path.is_file():
            listed = _load_index(index_path)
            for name, shard in listed.items():
                if not shard.is_file():
                    raise RelexError(f"shard listed in {index_name} for tensor '{name}' is missing", path=shard)
            return fmt, sorted(set(listed.values())), listed
    for pattern, fmt in (("*.safetensors", "safetensors"), ("*.bin", "torch"), ("*.pt", "torch")):
        files = sorted(location.glob(pattern))
        if files:
            return fmt, files, {}
    raise RelexError("no model weights found", path=location)


class CheckpointReader:
    """Read tensors of one checkpoint by name, whole or as a range of rows (dim 0)."""

    def __init__(self, location):
        self.location = Path(location)
        self.format, self.files, listed = weight_files(self.location)
        self._handles = {}
        self._raw = {}  # safetensors file → (descriptor, {tensor: absolute data offset}), opened on first read
        self.tensors: dict[str, TensorInfo] = {}
        for file in self.files:
            self._open(file)
        for name, shard in listed.items():
            if name not in self.tensors or self.tensors[name].file != shard:
                raise RelexError("shard lacks a tensor listed in the index", path=shard, tensor=name)

    def _open(self, file: Path) -> None:
        _check_readable(file)
        if self.format == "safetensors":
            try:
                handle = safe_open(str(file), framework="pt")
                names = list(handle.keys())
                infos = {}
                for name in names:
                    view = handle.get_slice(name)
                    dtype = DTYPES_BY_CODE.get(view.get_dtype())
                    dtype = dtype if dtype in FLOAT_DTYPES else None  # other tensors are read whole, never analysed
                    infos[name] = TensorInfo(tuple(view.get_shape()), dtype, file)
            except Exception as error:  # safetensors raises its own error types for bad files
                raise RelexError(f"not a readable safetensors file ({_safetensors_reason(error, file)})",
                                 path=file) from None
        else:
            handle = _load_state_dict(file)
            infos = {name: TensorInfo(tuple(tensor.shape), tensor.dtype, file) for name, tensor in handle.items()}
        for name, info in infos.items():
            if name in self.tensors:
                raise RelexError(f"tensor appears in two files (also in {self.tensors[name].file.name})",
                                 path=file, tensor=name)
            self.tensors[name] = info
        self._handles[file] = handle

    def read(self, name: str, start: int = 0, stop: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows [start, stop) of a tensor along dim 0 (a 0-d tensor reads as one element).

        out: optional uint8 tensor, large enough, to read safetensors data into (the result is
        then a view of it); reusing one buffer spares the page faults of a fresh allocation.
        """
        info = self.tensors[name]
        handle = self._handles[info.file]
        try:
            if self.format == "safetensors":
                if info.dtype is not None:
                    return self._read_rows(name, info, start, stop, out)
                if not info.shape:
                    return handle.get_tensor(name).reshape(1)
                return handle.get_slice(name)[start:stop]
            tensor = handle[name]
            return tensor.reshape(1) if not info.shape else tensor[start:stop]
        except Exception as error:
            raise RelexError(f"cannot read tensor data ({_first_line(error)})", path=info.file,
                             tensor=name) from None

    def _read_rows(self, name: str, info: TensorInfo, start: int, stop: int | None, out) -> torch.Tensor:
        """Rows [start, stop) of a safetensors tensor, read with pread into `out` or a fresh tensor."""
        descriptor, offsets = self._raw.get(info.file) or self._open_raw(info.file)
        start, stop, _ = slice(start, stop).indices(info.rows)
        shape = (max(0, stop - start), *info.shape[1:]) if info.shape else (1,)
        nbytes = int(torch.Size(shape).numel()) * info.dtype.itemsize
        if out is None:
            out = torch.empty(nbytes, dtype=torch.uint8)
        elif out.dtype != torch.uint8 or out.numel() < nbytes:
            raise ValueError(f"out must be a uint8 tensor of at least {nbytes} bytes")
        buffer = out[:nbytes].numpy()
        position = offsets[name] + start * info.row_numel * info.dtype.itemsize
        done = 0
        while done < buffer.nbytes:  # one pread returns at most ~2 GB
            count = os.preadv(descriptor, [buffer[done:]], position + done)
            if count == 0:
                raise EOFError("file is shorter than its header says")  # read() names file and tensor
            done += count
        return out[:nbytes].view(info.dtype).view(shape)

    def _open_raw(self, file: Path) -> tuple:
        descriptor = os.open(file, os.O_RDONLY)
        header_size = struct.unpack("<Q", os.pread(descriptor, 8, 0))[0]
        header = json.loads(os.pread(descriptor, header_size, 8))
        offsets = {name: 8 + header_size + entry["data_offsets"][0] for name, entry in header.items()
                   if name != "__metadata__"}
        self._raw[file] = (descriptor, offsets)
        return self._raw[file]

    def close(self) -> None:
        self._handles.clear()
        for descriptor, _ in self._raw.values():
            os.close(descriptor)
        self._raw.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _check_readable(file: Path) -> None:
    """Open the file once ourselves: safetensors reports a permission error or a folder as
    'No such file or directory', which would send the user looking in the wrong place."""
    try:
        with open(file, "rb"):
            pass
    except OSError as error:
        raise RelexError(f"cannot open ({error.strerror or error})", path=file) from None


def _load_state_dict(file: Path) -> dict:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr; the error says enough
            warnings.simplefilter("ignore")
            try:
                state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):  # legacy (non-zip) files cannot be memory-mapped
                    raise
                state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise RelexError(f"refused to unpickle: weights_only=True rejected it ({_unpickler_reason(error)})",
                         path=file) from None
    except Exception as error:
        raise RelexError(f"not a readable torch state dict ({_first_line(error)})", path=file) from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise RelexError("expected a flat dict of tensor name → tensor", path=file)
    return state


def _safetensors_reason(error: Exception, file: Path) -> str:
    """safetensors' own words, plus a plain hint for the commonest cases: a crashed save or a cut-off copy."""
    reason = _first_line(error)
    if file.stat().st_size == 0:
        return "the file is empty: a crashed save or an unfinished copy?"
    if "not fully covered" in reason:
        reason += "; the file is shorter than its header says: truncated or partly copied?"
    return reason


def _unpickler_reason(error: Exception) -> str:
    """torch's message opens with a paragraph about its defaults; the useful line names the global."""
    for line in str(error).splitlines():
        if "WeightsUnpickler error:" in line or "GLOBAL" in line:
            return line.split("WeightsUnpickler error:")[-1].strip()[:200]
    return _first_line(error)


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]
