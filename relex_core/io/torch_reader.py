"""torch state dicts: `pytorch_model.bin` (single or sharded with an index) and `*.pt` files.

A file is unpickled once, with torch's weights-only unpickler and every storage on the meta
device: that reads only the pickle and tells where each storage's bytes sit in the zip archive
(torch.save stores them uncompressed), so the values are then read with pread like safetensors
and a large file is never loaded into memory. A pickle that would run code is refused, never run.
"""

import logging
import pickle
import re
import struct
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import RelexError
from .reader import CheckpointReader, check_readable, chunk_of_whole, indexed_files
from .stored import StoredArray

FORMAT = "torch"
INDEX_NAME = "pytorch_model.bin.index.json"
# Pickles that trainers leave beside the weights and that hold no weights: never opened.
NOT_WEIGHTS = re.compile(r"^(training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth|data\.pt"
                         r"|(optim|extra_state)_world_size_\d+_rank_\d+\.pt)$")


def weight_files(location: Path) -> tuple[list[Path], dict]:
    files = [file for pattern in ("*.bin", "*.pt") for file in sorted(location.glob(pattern))] \
        if location.is_dir() else []
    return indexed_files(location, INDEX_NAME, [file for file in files if not NOT_WEIGHTS.match(file.name)])


def holds(folder: Path) -> bool:
    return (folder / INDEX_NAME).exists() or bool(weight_files(folder)[0])


class TorchReader(CheckpointReader):
    format = FORMAT

    def __init__(self, location):
        super().__init__(location)
        self.description = "torch state dicts"
        self.files, listed = weight_files(self.location)
        if not self.files:
            raise RelexError("no model weights found", path=self.location)
        for file in self.files:
            for name, tensor in load_state_dict(file).items():
                if not type(tensor) is torch.Tensor:
                    raise RelexError(f"holds a {type(tensor).__name__}, not a plain tensor (an FSDP shard? "
                                     "point relex at the run folder)", path=file, tensor=name)
                self._add(name, tensor.shape, tensor.dtype, chunk_of_whole(stored_array(file, tensor)), path=file)
        self._check_index(listed)


def load_state_dict(file: Path) -> dict:
    """{name: tensor} of a torch.save file, every tensor on the meta device with its bytes located.

    Legacy (pre-zip) pickles, big-endian files and torch versions that do not say where a
    storage lies are loaded whole instead (weights-only all the same).
    """
    check_readable(file)
    with _quiet_torch():
        try:
            if _locatable(file):
                state = torch.load(file, map_location="meta", weights_only=True)
            else:
                state = torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise RelexError(f"refused to unpickle: weights_only=True rejected it ({_unpickler_reason(error)})",
                             path=file) from None
        except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, struct.error,
                zipfile.BadZipFile) as error:  # torch's errors for damaged or foreign files
            raise RelexError(f"not a readable torch file ({_first_line(error)}): truncated or not a "
                             "torch.save file?", path=file) from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()) \
            or not all(isinstance(key, str) for key in state):
        raise RelexError("expected a flat dict of tensor name → tensor", path=file)
    return state


def stored_array(file: Path, tensor: torch.Tensor):
    """Where a loaded tensor's values sit: a StoredArray in `file`, or the tensor itself when it was loaded whole."""
    if tensor.device.type != "meta":
        return tensor
    storage = tensor.untyped_storage()
    offset = storage._checkpoint_offset + tensor.storage_offset() * tensor.element_size()
    array = StoredArray(file, offset, tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
    if tensor.numel() and array.end > file.stat().st_size:
        raise RelexError("file is shorter than its records say: truncated or partly copied?", path=file)
    return array


def _locatable(file: Path) -> bool:
    """True for a little-endian zip-format file, whose storages a meta load locates."""
    if not _meta_offsets_supported():
        return False
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
            order = [name for name in names if name.endswith("/byteorder")]
            return not order or archive.read(order[0]).strip() == b"little"
    except (zipfile.BadZipFile, OSError, ValueError):
        return False  # a legacy pickle, or damage: torch.load says which


def _meta_offsets_supported() -> bool:
    """torch ≥ 2.5 records `_checkpoint_offset` on storages loaded to the meta device."""
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 5)


@contextmanager
def _quiet_torch():
    """torch warns about pickle protocols, and DeviceMesh about unpickling without process groups:
    on stderr, around a load whose outcome relex reports itself."""
    mesh_logger = logging.getLogger("torch.distributed.device_mesh")
    level = mesh_logger.level
    mesh_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        mesh_logger.setLevel(level)


def _unpickler_reason(error: Exception) -> str:
    """torch's message opens with a paragraph about its defaults; the useful line names the global."""
    for line in str(error).splitlines():
        if "WeightsUnpickler error:" in line or "GLOBAL" in line:
            return line.split("WeightsUnpickler error:")[-1].strip()[:200]
    return _first_line(error)


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]
