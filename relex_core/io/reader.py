"""The reader interface: every checkpoint format behind one small API, opened by `open_reader`.

    with open_reader(path) as reader:
        reader.tensors[name]                 # TensorInfo(shape, dtype, file): nothing read yet
        reader.read(name, start, stop, out)  # rows [start, stop) along dim 0, as stored

Formats, one module each: HF safetensors (`safetensors_reader`), torch `.bin`/`.pt` state dicts
(`torch_reader`), verl's FSDP rank shards (`verl`) and torch.distributed.checkpoint folders
(`dcp`). Each one only works out where every tensor's values sit in its files (`stored.Chunk`);
reading is the same for all of them: pread of the asked rows from the files, into the caller's
buffer. Nothing stays memory-mapped, so resident memory holds what was asked for and no more
(pages of a mapping count in the process's RSS and would grow with the run). The exception is
a legacy (pre-zip) torch pickle, which is loaded whole because torch exposes no layout for it.
Pickles are only ever unpickled with torch's weights-only unpickler, or (DCP's `.metadata`) an
unpickler that accepts DCP's own metadata classes alone, so a file that would run code is refused.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import RelexError
from .dtypes import FLOAT_DTYPES, dtype_name, element_count
from .stored import Chunk, OpenFiles, read_rows


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives and what it looks like, without reading it.

    dtype is None for tensors relex does not analyse (integer buffers, masks); they are still
    readable. `file` is the file holding the tensor, or its first piece when it is sharded.
    """
    shape: tuple
    dtype: torch.dtype | None
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


class CheckpointReader:
    """Read tensors of one checkpoint by name, whole or as a range of rows (dim 0).

    Subclasses (one per format) fill `files` (every file whose bytes the tensors come from:
    the Gram cache fingerprints them), `tensors` and, per tensor, its chunks and stored dtype.

    Attributes:
        location: the folder or file this reader was opened on.
        format: "safetensors", "torch", "verl" or "dcp".
        description: what was read, for notes ("verl FSDP shards (world size 8)").
    """
    format = ""

    def __new__(cls, location=None, *args, **kwargs):
        # CheckpointReader(path) opens whichever format is at `path`, like open_reader(path).
        if cls is CheckpointReader:
            cls = reader_class(Path(location))
        return super().__new__(cls)

    def __init__(self, location):
        self.location = Path(location)
        self.files: list[Path] = []
        self.tensors: dict[str, TensorInfo] = {}
        self.description = self.format
        self._chunks: dict[str, tuple] = {}
        self._stored_dtypes: dict[str, torch.dtype] = {}
        self._open_files = OpenFiles()

    def _add(self, name: str, shape, dtype: torch.dtype, chunks, *, path) -> None:
        """Register a tensor found in `path` (named in the error if the name was already taken)."""
        if name in self.tensors:
            raise RelexError(f"tensor appears in two files (also in {self.tensors[name].file.name})", path=path,
                             tensor=name)
        chunks = tuple(chunks)
        first_file = next((chunk.file for chunk in chunks if chunk.file is not None), Path(path))
        self.tensors[name] = TensorInfo(tuple(shape), dtype if dtype in FLOAT_DTYPES else None, first_file)
        self._chunks[name] = chunks
        self._stored_dtypes[name] = dtype

    def _check_index(self, listed: dict) -> None:
        """Every tensor an HF index lists is in the shard it names."""
        for name, shard in listed.items():
            if name not in self.tensors or self.tensors[name].file != shard:
                raise RelexError("shard lacks a tensor listed in the index", path=shard, tensor=name)

    def _drop_tied_copy(self, *config_folders) -> None:
        """Leave out an lm_head that the HF config ties to the embedding, as HF's save_pretrained does.

        FSDP and DCP state dicts list both names; HF folders (the base a run starts from) only the
        embedding. The config is the first config.json in `config_folders`; without one nothing is dropped.
        """
        from .names import tied_lm_head

        config = hf_config(*config_folders)
        pair = tied_lm_head(self.tensors, config) if config else None
        if pair and self.tensors[pair[0]].shape == self.tensors[pair[1]].shape:
            for table in (self.tensors, self._chunks, self._stored_dtypes):
                del table[pair[0]]

    @property
    def source_dtypes(self) -> list[str]:
        """The floating dtypes the analysed tensors are stored in, e.g. ['float32']."""
        return sorted({dtype_name(info.dtype) for info in self.tensors.values() if info.dtype is not None})

    def read(self, name: str, start: int = 0, stop: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows [start, stop) of a tensor along dim 0, in its stored dtype (a 0-d tensor reads as one element).

        out: optional uint8 tensor, large enough, to read into; the result is then a view of it
        (reusing one buffer spares the page faults of a fresh allocation). A result that is not
        a view of `out` must be copied by the caller.
        """
        info = self.tensors[name]
        start, stop, _ = slice(start, stop).indices(info.rows)
        stop = max(start, stop)
        return read_rows(self._chunks[name], info.shape, self._stored_dtypes[name], start, stop, self._open_files,
                         out, tensor=name)

    def close(self) -> None:
        self._open_files.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# ------------------------------------------------------------------ which format is this?

def detect_format(location: Path) -> str:
    """The format of a checkpoint folder or file, from what it holds (no file is parsed)."""
    from . import dcp, safetensors_reader, torch_reader, verl

    location = Path(location)
    if location.is_file():
        return "safetensors" if location.suffix == ".safetensors" else "torch"
    for module in (dcp, verl, safetensors_reader, torch_reader):  # the native formats first: see `holds`
        if module.holds(location):
            return module.FORMAT
    raise RelexError("no model weights found", path=location)


def reader_class(location: Path) -> type:
    """The CheckpointReader subclass for the format at `location`."""
    from . import dcp, safetensors_reader, torch_reader, verl

    readers = {"safetensors": safetensors_reader.SafetensorsReader, "torch": torch_reader.TorchReader,
               "verl": verl.VerlReader, "dcp": dcp.DcpReader}
    return readers[detect_format(location)]


def open_reader(location) -> CheckpointReader:
    """A reader for the checkpoint at `location`, in whichever format it holds (same as CheckpointReader(location))."""
    return CheckpointReader(location)


def weight_files(location) -> tuple[str, list[Path], dict]:
    """(format, the files holding the weights, tensor→file map of an HF index or {}), without opening them."""
    from . import dcp, safetensors_reader, torch_reader, verl

    location = Path(location)
    fmt = detect_format(location)
    module = {"safetensors": safetensors_reader, "torch": torch_reader, "verl": verl, "dcp": dcp}[fmt]
    files, listed = module.weight_files(location)
    return fmt, files, listed


def indexed_files(location: Path, index_name: str, unindexed: list) -> tuple[list[Path], dict]:
    """(weight files, {tensor: file} of an HF index or {}) of a file, or of a folder with or without an index."""
    if location.is_file():
        return [location], {}
    if (location / index_name).is_file():
        listed = load_index(location / index_name)
        return sorted(set(listed.values())), listed
    return unindexed, {}


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


def check_readable(file: Path) -> None:
    """Open the file once ourselves: safetensors reports a permission error or a folder as
    'No such file or directory', which would send the user looking in the wrong place."""
    try:
        with open(file, "rb"):
            pass
    except OSError as error:
        raise RelexError(f"cannot open ({error.strerror or error})", path=file) from None


def hf_config(*folders) -> dict:
    """The first readable config.json in `folders`, or {}."""
    for folder in folders:
        path = Path(folder) / "config.json"
        if path.is_file():
            try:
                config = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                raise RelexError(f"unreadable config.json ({error})", path=path) from None
            return config if isinstance(config, dict) else {}
    return {}


def chunk_of_whole(array) -> tuple:
    """The chunks of a tensor stored in one piece."""
    return (Chunk(tuple(0 for _ in array.shape), array),)
