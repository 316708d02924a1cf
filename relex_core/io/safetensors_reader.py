"""HF safetensors checkpoints: one `model.safetensors`, or shards with `model.safetensors.index.json`.

The header is checked by safetensors itself (`safe_open`); the values are then read by
relex's own pread path from the byte offsets the header gives.
"""

import json
import os
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import RelexError
from .dtypes import DTYPES_BY_CODE
from .reader import CheckpointReader, chunk_of_whole
from .stored import StoredArray

FORMAT = "safetensors"
# Stored dtypes beyond the shared table (dtypes.py): read and carried through, never analysed.
_OTHER_CODES = {code: getattr(torch, name) for code, name in (
    ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("U16", "uint16"), ("U32", "uint32"),
    ("U64", "uint64")) if hasattr(torch, name)}
INDEX_NAME = "model.safetensors.index.json"


def holds(folder: Path) -> bool:
    return os.path.lexists(folder / INDEX_NAME) or any(folder.glob("*.safetensors"))


def load_index(index_path: Path) -> dict:
    """{tensor name: shard path} from an HF index file (safetensors or pytorch_model.bin)."""
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RelexError(f"unreadable shard index ({error})", path=index_path) from None
    listed = {name: index_path.parent / shard for name, shard in weight_map.items()}
    for name, shard in listed.items():
        if not shard.is_file():
            raise RelexError(f"shard listed in {index_path.name} for tensor '{name}' is missing", path=shard)
    return listed


def weight_files(location: Path) -> tuple[list[Path], dict]:
    if location.is_file():
        return [location], {}
    if (location / INDEX_NAME).is_file():
        listed = load_index(location / INDEX_NAME)
        return sorted(set(listed.values())), listed
    return sorted(location.glob("*.safetensors")), {}


def check_readable(file: Path) -> None:
    """Open the file once ourselves: safetensors reports a permission error or a folder as
    'No such file or directory', which would send the user looking in the wrong place."""
    try:
        with open(file, "rb"):
            pass
    except OSError as error:
        raise RelexError(f"cannot open ({error.strerror or error})", path=file) from None


def declared_size(file: Path) -> int | None:
    """The file size its header implies (8 + header + data), or None when the header is unreadable."""
    try:
        with open(file, "rb") as handle:
            header_size = struct.unpack("<Q", handle.read(8))[0]
            if header_size > 100_000_000:  # safetensors' own limit; a larger one is damage, not a header
                return None
            header = json.loads(handle.read(header_size))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error):
        return None
    return 8 + header_size + max(ends, default=0)


class SafetensorsReader(CheckpointReader):
    format = FORMAT

    def __init__(self, location):
        super().__init__(location)
        self.files, listed = weight_files(self.location)
        if not self.files:
            raise RelexError("no model weights found", path=self.location)
        for file in self.files:
            self._open(file)
        for name, shard in listed.items():
            if name not in self.tensors or self.tensors[name].file != shard:
                raise RelexError("shard lacks a tensor listed in the index", path=shard, tensor=name)

    def _open(self, file: Path) -> None:
        check_readable(file)
        try:
            with safe_open(str(file), framework="pt"):  # safetensors checks the header against the file
                pass
        except SafetensorError as error:
            raise RelexError(f"not a readable safetensors file ({_safetensors_reason(error, file)})",
                             path=file) from None
        with open(file, "rb") as raw:
            header_size = struct.unpack("<Q", raw.read(8))[0]
            header = json.loads(raw.read(header_size))
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            code, shape = entry["dtype"], tuple(entry["shape"])
            dtype = DTYPES_BY_CODE.get(code) or _OTHER_CODES.get(code)
            if dtype is None:
                raise RelexError(f"stored dtype {code} is not one relex reads", path=file, tensor=name)
            start = 8 + header_size + entry["data_offsets"][0]
            self._add(name, shape, dtype, chunk_of_whole(StoredArray(file, start, dtype, shape)), path=file)


def _safetensors_reason(error: Exception, file: Path) -> str:
    """safetensors' own words, plus a plain hint for the commonest cases: a crashed save or a cut-off copy."""
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    if file.stat().st_size == 0:
        return "the file is empty: a crashed save or an unfinished copy?"
    if "not fully covered" in reason:
        reason += "; the file is shorter than its header says: truncated or partly copied?"
    return reason
