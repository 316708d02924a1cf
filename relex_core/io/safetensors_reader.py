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
from .reader import CheckpointReader, check_readable, chunk_of_whole, indexed_files
from .stored import StoredArray

FORMAT = "safetensors"
# Stored dtypes beyond the shared table (dtypes.py): read and carried through, never analysed.
_OTHER_CODES = {code: getattr(torch, name) for code, name in (
    ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("U16", "uint16"), ("U32", "uint32"),
    ("U64", "uint64")) if hasattr(torch, name)}
INDEX_NAME = "model.safetensors.index.json"


def holds(folder: Path) -> bool:
    return os.path.lexists(folder / INDEX_NAME) or any(folder.glob("*.safetensors"))


def weight_files(location: Path) -> tuple[list[Path], dict]:
    return indexed_files(location, INDEX_NAME, sorted(location.glob("*.safetensors")) if location.is_dir() else [])


def read_header(file: Path) -> tuple[int, dict]:
    """(header size, header) of a safetensors file, parsed as the format defines it (8-byte length, JSON)."""
    with open(file, "rb") as handle:
        header_size = struct.unpack("<Q", handle.read(8))[0]
        if header_size > 100_000_000:  # safetensors' own limit; a larger one is damage, not a header
            raise ValueError(f"header of {header_size} bytes")
        return header_size, json.loads(handle.read(header_size))


def declared_size(file: Path) -> int | None:
    """The file size its header implies (8 + header + data), or None when the header is unreadable."""
    try:
        header_size, header = read_header(file)
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
        self._check_index(listed)

    def _open(self, file: Path) -> None:
        check_readable(file)
        try:
            with safe_open(str(file), framework="pt"):  # safetensors checks the header against the file
                pass
        except SafetensorError as error:
            raise RelexError(f"not a readable safetensors file ({_safetensors_reason(error, file)})",
                             path=file) from None
        header_size, header = read_header(file)  # safe_open accepted it
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
