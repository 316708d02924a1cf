"""Write checkpoints the way HF does, streaming, and atomically.

`ShardedWriter` knows every tensor's name, shape and dtype up front, so it can write each
safetensors header first and then append tensor data chunk by chunk: memory stays at one
chunk however large the model. Shards follow HF's naming (`model-00001-of-00003.safetensors`
plus `model.safetensors.index.json`), or a single `model.safetensors` when it all fits.
`atomic_folder` builds the output in a temporary folder beside the destination and renames
it at the end, so a failure or Ctrl-C leaves no partial checkpoint; what a killed process
(SIGKILL, OOM killer) could not remove is swept by the next export to the same place.
"""

import glob
import json
import os
import re
import shutil
import socket
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import RelexError
from .dtypes import SAFETENSORS_CODES, element_count



@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return element_count(self.shape) * self.dtype.itemsize


def plan_shards(specs, shard_size: int | None) -> list[list[TensorSpec]]:
    """Split tensors, in order, into shards of at most shard_size bytes (a bigger tensor gets its own)."""
    shards, current, current_bytes = [], [], 0
    for spec in specs:
        if current and shard_size is not None and current_bytes + spec.nbytes > shard_size:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(spec)
        current_bytes += spec.nbytes
    return shards + [current] if current else shards


def _header(specs, metadata: dict | None) -> bytes:
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = {str(key): str(value) for key, value in metadata.items()}
    for spec in specs:
        header[spec.name] = {"dtype": SAFETENSORS_CODES[spec.dtype], "shape": list(spec.shape),
                             "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format aligns tensor data to 8 bytes
    return struct.pack("<Q", len(encoded)) + encoded


class ShardedWriter:
    """Stream tensors into HF-style safetensors shards: `write(name, rows)` in declaration order."""

    def __init__(self, folder, specs, shard_size: int | None = None, metadata: dict | None = None):
        self.folder = Path(folder)
        self.shards = plan_shards(list(specs), shard_size)
        count = len(self.shards)
        self.filenames = (["model.safetensors"] if count == 1 else
                          [f"model-{index:05d}-of-{count:05d}.safetensors" for index in range(1, count + 1)])
        self.metadata = metadata
        self._queue = [(shard_index, spec) for shard_index, shard in enumerate(self.shards) for spec in shard]
        self._position, self._written, self._shard_index, self._file = 0, 0, -1, None

    def write(self, name: str, data: torch.Tensor) -> None:
        """Append the next rows of tensor `name` (converted to its declared dtype)."""
        self._skip_empty_before(name)
        if self._position == len(self._queue):
            raise ValueError(f"every tensor is already written, got more data for {name}")
        shard_index, spec = self._queue[self._position]
        if name != spec.name:
            raise ValueError(f"expected data for {spec.name}, got {name}")
        if shard_index != self._shard_index:
            self._open_shard(shard_index)
        raw = data.detach().to("cpu", spec.dtype).contiguous().reshape(-1).view(torch.uint8)
        self._file.write(raw.numpy().data)
        self._written += raw.numel()
        if self._written > spec.nbytes:
            raise ValueError(f"too much data written for {spec.name}")
        if self._written == spec.nbytes:
            self._position, self._written = self._position + 1, 0

    def _skip_empty_before(self, name: str) -> None:
        """Tensors with no elements get no write call: step over them, opening their shard for the header."""
        while (self._position < len(self._queue) and self._written == 0
               and self._queue[self._position][1].nbytes == 0 and self._queue[self._position][1].name != name):
            shard_index = self._queue[self._position][0]
            if shard_index != self._shard_index:
                self._open_shard(shard_index)
            self._position += 1

    def _open_shard(self, shard_index: int) -> None:
        self._close_file()
        self._shard_index = shard_index
        self._file = open(self.folder / self.filenames[shard_index], "wb")
        self._file.write(_header(self.shards[shard_index], self.metadata))

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def close(self) -> list[Path]:
        """Finish the last shard and write the index when sharded; returns the files written."""
        self._skip_empty_before(None)
        if self._position != len(self._queue):
            raise ValueError(f"tensor {self._queue[self._position][1].name} was not fully written")
        self._close_file()
        files = [self.folder / filename for filename in self.filenames]
        if len(self.shards) > 1:
            weight_map = {spec.name: filename for filename, shard in zip(self.filenames, self.shards) for spec in shard}
            index = {"metadata": {"total_size": sum(spec.nbytes for shard in self.shards for spec in shard)},
                     "weight_map": weight_map}
            index_path = self.folder / "model.safetensors.index.json"
            index_path.write_text(json.dumps(index, indent=2))
            files.append(index_path)
        return files

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@contextmanager
def finished_together(writers):
    """Close every writer when the block succeeds; on any exception, abort them all (open files closed)."""
    try:
        yield writers
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise


def save_state_dict(state: dict, folder, shard_size: int | None = None, metadata: dict | None = None) -> None:
    """Write a whole in-memory state dict as HF safetensors (single file or shards)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardedWriter(folder, [TensorSpec(name, tuple(tensor.shape), tensor.dtype) for name, tensor in state.items()],
                           shard_size=shard_size, metadata={"format": "pt", **(metadata or {})})
    with finished_together([writer]):
        for name, tensor in state.items():
            writer.write(name, tensor)


@contextmanager
def atomic_folder(destination, *, force: bool = False):
    """Yield a temporary folder beside `destination`; rename it into place only on success.

    An existing destination is refused unless force (then it is replaced only once the new
    folder is complete). On any exception, Ctrl-C included, the temporary folder is removed.
    """
    destination = Path(destination).expanduser().absolute()
    if destination.exists() and not force:
        kind = "folder" if destination.is_dir() else "file"
        raise RelexError(f"destination {kind} already exists (use --force to replace it)", path=destination)
    if destination.exists() and not destination.is_dir():
        raise RelexError("destination is an existing file, not a folder", path=destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        _sweep_abandoned(destination)
        temporary = Path(tempfile.mkdtemp(prefix=_temporary_prefix(destination), dir=destination.parent))
        # mkdtemp makes a private (0700) folder; the result should get the usual permissions, like mkdir.
        umask = os.umask(0)
        os.umask(umask)
        temporary.chmod(0o777 & ~umask)
    except OSError as error:
        raise RelexError(f"cannot create the output folder ({error.strerror or error})", path=destination) from None
    try:
        yield temporary
        _replace_folder(temporary, destination)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(error, OSError):  # a full disk, a quota, a file size limit: the user's to fix, one line
            named = Path(os.fsdecode(error.filename)) if error.filename else None
            if named is None or temporary in named.parents:  # the temporary name would mean nothing to the user
                named = destination
            raise RelexError(f"cannot write the export ({error.strerror or error})", path=named) from None
        raise


def _temporary_prefix(destination: Path) -> str:
    """`.NAME.relex-HOST-PID-`: who made a temporary folder, so that an abandoned one can be told apart."""
    return f"{_this_host_prefix(destination)}{os.getpid()}-"


def _this_host_prefix(destination: Path) -> str:
    return f".{destination.name}.relex-{socket.gethostname()}-"


def _sweep_abandoned(destination: Path) -> None:
    """Remove temporary folders beside `destination` whose relex process, on this host, has ended.

    Only a process that was killed outright leaves one. Folders of live processes, of other
    hosts (a shared file system) and the set-aside old destination of `_replace_folder` are kept.
    """
    owner = re.compile(re.escape(_this_host_prefix(destination)) + r"(\d+)-")
    for path in destination.parent.glob(f".{glob.escape(destination.name)}.relex-*"):
        match = owner.match(path.name)
        if match and path.is_dir() and not _process_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _replace_folder(new: Path, destination: Path) -> None:
    """Move `new` to `destination`; an old destination is set aside first and removed only after the move."""
    if not destination.exists():
        os.replace(new, destination)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.relex-old-", dir=destination.parent))
    os.replace(destination, old / destination.name)
    try:
        os.replace(new, destination)
    except BaseException:
        os.replace(old / destination.name, destination)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
