"""torch.distributed.checkpoint (DCP) folders: `.metadata` plus `__R_I.distcp` files.

Used by torchtitan (`step-N/`), NeMo-RL (`step_N/policy/weights/`) and accelerate/TRL's FSDP
sharded saves (`checkpoint-N/pytorch_model_fsdp_0/`). `.metadata` is written last, so its
presence marks a finished save. It lists every tensor's chunks (offsets and sizes in the whole
tensor) and, per chunk, a byte range (file, offset, length) holding that chunk as a small
`torch.save` archive. relex reads only the model's tensors, chunk by chunk: a row range of a
tensor touches only the chunks that hold those rows.

Which entries are the model's (the key rule): when the saved state dict was nested and has a
top-level `"model"` entry (`{"model": ..., "optimizer": ...}`, as accelerate and NeMo-RL save),
the model's tensors are the tensors under it, named without the `model.` step; everything else
(optimizer, scheduler, train state) is ignored. Otherwise the state dict was the model's own,
flat (`dcp.save(model.state_dict())`, or torchtitan's flattened model entries), and the model's
tensors are the top-level tensor entries; entries nested under any other key are ignored.
Wrapper components (`_orig_mod.`, `_fsdp_wrapped_module.`) are removed from names.
"""

import enum
import io
import os
import pickle
from pathlib import Path

import torch

from ..errors import RelexError
from .names import strip_wrappers
from .reader import CheckpointReader
from .stored import Chunk, StoredArray, check_tiling
from .torch_reader import _first_line, _quiet_torch, _unpickler_reason

FORMAT = "dcp"
METADATA = ".metadata"
# Top-level keys that hold training state, not weights (used only when a checkpoint has no planner data).
NOT_MODEL = ("optimizer", "optim", "lr_scheduler", "scheduler", "dataloader", "train_state", "rng", "extra_state")


def holds(folder: Path) -> bool:
    """A DCP folder, finished (`.metadata`) or still being written (only `.distcp` files so far)."""
    return os.path.lexists(folder / METADATA) or any(folder.glob("*.distcp"))


def is_complete(folder: Path) -> bool:
    return (folder / METADATA).is_file()


class _MetadataUnpickler(pickle.Unpickler):
    """`.metadata` is a plain pickle (DCP's own reader uses pickle.load, which would run any code in
    it): this unpickler builds DCP's metadata classes, torch sizes, dtypes and layouts, and nothing else."""

    _ALLOWED = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
                ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"),
                ("pathlib", "PureWindowsPath"), ("torch.distributed.checkpoint.filesystem", "_StorageInfo")}
    _METADATA_MODULE = "torch.distributed.checkpoint.metadata"

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED or (module == self._METADATA_MODULE and not name.startswith("__")):
            return super().find_class(module, name)
        if (module, name) == ("builtins", "getattr"):  # how Python 3.12 (and some 3.11) pickles an enum member
            return self._enum_member
        if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.memory_format)):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of DCP metadata")

    @classmethod
    def _enum_member(cls, owner, name):
        """getattr restricted to what an enum pickled by name needs: a member of an enum of DCP's metadata."""
        if isinstance(owner, type) and issubclass(owner, enum.Enum) and owner.__module__ == cls._METADATA_MODULE \
                and isinstance(name, str) and name in owner.__members__:
            return owner[name]
        raise pickle.UnpicklingError(f"getattr({getattr(owner, '__name__', type(owner).__name__)}, {name!r}) "
                                     "is not part of DCP metadata")


def read_metadata(folder: Path):
    """The checkpoint's Metadata, unpickled safely."""
    import torch.distributed.checkpoint.filesystem  # noqa: F401  (the classes the pickle names)
    import torch.distributed.checkpoint.metadata as metadata_module

    path = folder / METADATA
    try:
        with open(path, "rb") as file:
            metadata = _MetadataUnpickler(file).load()
    except OSError as error:
        raise RelexError(f"cannot open ({error.strerror or error})", path=path) from None
    except pickle.UnpicklingError as error:
        raise RelexError(f"refused to unpickle: {error}", path=path) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise RelexError(f"not a readable DCP metadata file ({_first_line(error)}): truncated?", path=path) from None
    if not isinstance(metadata, metadata_module.Metadata) or not isinstance(metadata.state_dict_metadata, dict) \
            or not isinstance(metadata.storage_data, dict):
        raise RelexError("not a DCP metadata file (no state dict or storage index)", path=path)
    return metadata


def model_entries(metadata) -> dict:
    """{tensor name: DCP key} of the model's tensors, by the key rule in this module's docstring."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    tensors = [key for key, entry in metadata.state_dict_metadata.items() if isinstance(entry, TensorStorageMetadata)]
    planner_data = metadata.planner_data if isinstance(metadata.planner_data, dict) else {}

    def path(key):
        return tuple(planner_data.get(key) or (key,))

    if any(len(path(key)) > 1 and path(key)[0] == "model" for key in tensors):
        chosen = {".".join(map(str, path(key)[1:])): key for key in tensors
                  if len(path(key)) > 1 and path(key)[0] == "model"}
    elif planner_data:
        chosen = {key: key for key in tensors if len(path(key)) == 1}
    else:
        chosen = {key: key for key in tensors if key.split(".")[0] not in NOT_MODEL}
    return {strip_wrappers(name): key for name, key in chosen.items()}


def weight_files(folder: Path) -> tuple[list[Path], dict]:
    metadata = read_metadata(folder)
    return [folder / METADATA, *_model_files(folder, metadata)], {}


def _model_files(folder: Path, metadata) -> list[Path]:
    keys = set(model_entries(metadata).values())
    return sorted({folder / info.relative_path for index, info in metadata.storage_data.items() if index.fqn in keys})


class _Item:
    """A chunk's byte range in a .distcp file, located inside its torch.save archive on first read."""

    def __init__(self, file: Path, offset: int, length: int, shape: tuple, dtype: torch.dtype):
        self.file, self.offset, self.length, self.shape, self.dtype = file, offset, length, shape, dtype


class DcpReader(CheckpointReader):
    format = FORMAT

    def __init__(self, location):
        super().__init__(location)
        from torch.distributed.checkpoint.metadata import MetadataIndex

        if not is_complete(self.location):
            raise RelexError("DCP folder has no .metadata: the save has not finished", path=self.location)
        metadata = read_metadata(self.location)
        entries = model_entries(metadata)
        if not entries:
            raise RelexError("DCP checkpoint holds no model tensors (see the key rule in relex_core/io/dcp.py)",
                             path=self.location / METADATA)
        self.files = [self.location / METADATA, *_model_files(self.location, metadata)]
        sizes = {}
        for file in self.files[1:]:
            try:
                sizes[file] = file.stat().st_size
            except OSError as error:
                raise RelexError(f"named in .metadata but {'missing' if not os.path.lexists(file) else 'unreadable'}"
                                 f" ({error.strerror or error})", path=file) from None
        self.description = f"DCP shards ({len(self.files) - 1} .distcp file{'s' if len(self.files) > 2 else ''})"
        for name, key in entries.items():
            entry = metadata.state_dict_metadata[key]
            shape, dtype = tuple(entry.size), entry.properties.dtype
            chunks = []
            for chunk in entry.chunks:
                info = metadata.storage_data.get(MetadataIndex(key, chunk.offsets))
                if info is None:
                    raise RelexError("chunk has no entry in the storage index", path=self.location / METADATA,
                                     tensor=name)
                file = self.location / info.relative_path
                if getattr(info, "transform_descriptors", None):
                    raise RelexError(f"chunk is stored through DCP transforms {list(info.transform_descriptors)} "
                                     "(compression?), which relex does not read", path=file, tensor=name)
                if info.offset + info.length > sizes[file]:
                    raise RelexError(f"chunk ends at byte {info.offset + info.length} but the file has "
                                     f"{sizes[file]}: truncated or partly copied?", path=file, tensor=name)
                chunks.append(Chunk(tuple(chunk.offsets), _Item(file, info.offset, info.length,
                                                                tuple(chunk.sizes), dtype)))
            check_tiling(chunks, shape, path=chunks[0].file if chunks else self.location, tensor=name)
            self._add(name, shape, dtype, chunks, path=self.location / METADATA)
        # accelerate keeps config.json in checkpoint-N/, beside pytorch_model_fsdp_0/
        self._drop_tied_copy(self.location, self.location.parent)

    def read(self, name, start=0, stop=None, out=None):
        chunks = self._chunks[name]
        if any(isinstance(chunk.array, _Item) for chunk in chunks):
            self._chunks[name] = tuple(Chunk(chunk.offsets, self._locate(chunk.array, name)) for chunk in chunks)
        return super().read(name, start, stop, out)

    def _locate(self, item: _Item, name: str) -> StoredArray:
        """Unpickle the chunk's small archive (weights only, storages on meta) to find where its values start."""
        view = _FileView(self._open_files.descriptor(item.file), item.offset, item.length)
        with _quiet_torch():
            try:
                tensor = torch.load(view, map_location="meta", weights_only=True)
            except pickle.UnpicklingError as error:
                raise RelexError(f"refused to unpickle a chunk: weights_only=True rejected it "
                                 f"({_unpickler_reason(error)})", path=item.file, tensor=name) from None
            except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError) as error:
                raise RelexError(f"chunk at byte {item.offset} is not a readable torch.save archive "
                                 f"({_first_line(error)})", path=item.file, tensor=name) from None
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != item.shape or tensor.dtype != item.dtype:
            raise RelexError(f"chunk at byte {item.offset} holds {getattr(tensor, 'shape', type(tensor).__name__)}, "
                             f"not the {list(item.shape)} {item.dtype} chunk .metadata lists", path=item.file,
                             tensor=name)
        start = item.offset + tensor.untyped_storage()._checkpoint_offset + tensor.storage_offset() * tensor.element_size()
        array = StoredArray(item.file, start, tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
        if array.end > item.offset + item.length:
            raise RelexError(f"chunk at byte {item.offset} reaches past its {item.length} bytes", path=item.file,
                             tensor=name)
        return array


class _FileView(io.RawIOBase):
    """Bytes [start, start + length) of an open file, as a seekable file of their own (for torch.load)."""

    def __init__(self, descriptor: int, start: int, length: int):
        super().__init__()
        self._descriptor, self._start, self._length, self._position = descriptor, start, length, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._position

    def seek(self, position, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, base + position)
        return self._position

    def readinto(self, buffer):
        count = max(0, min(len(buffer), self._length - self._position))
        data = os.pread(self._descriptor, count, self._start + self._position)
        buffer[:len(data)] = data
        self._position += len(data)
        return len(data)
