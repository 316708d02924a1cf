"""Write checkpoints the way HF does, streaming, and atomically.

`ShardedWriter` knows every tensor's name, shape and dtype up front, so it writes each
safetensors header first, and then tensor data chunk by chunk at its place in the file: memory
stays at one chunk however large the model, and chunks may come from several processes. Shards follow HF's naming (`model-00001-of-00003.safetensors`
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

    @property
    def row_nbytes(self) -> int:
        """Bytes of one row along dim 0 (all of it for a scalar or an empty tensor)."""
        return self.nbytes // max(1, self.shape[0]) if self.shape else self.nbytes


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
    """HF-style safetensors shards, laid out in full before any value is known.

    The constructor writes every shard's header and sizes the file, so each tensor's bytes have a
    fixed place. `write_rows(name, first_row, rows)` puts rows there with `os.pwrite`: any process
    that sees the folder may write any tensor's rows, in any order (the export's Ray tasks do),
    and writing the same rows twice is harmless. `write(name, rows)` appends rows tensor after
    tensor, in declaration order, for a caller that has them in order.
    The writer holds no open file between calls, so it pickles (a task gets a copy).
    """

    def __init__(self, folder, specs, shard_size: int | None = None, metadata: dict | None = None):
        self.folder = Path(folder)
        self.shards = plan_shards(list(specs), shard_size)
        count = len(self.shards)
        self.filenames = (["model.safetensors"] if count == 1 else
                          [f"model-{index:05d}-of-{count:05d}.safetensors" for index in range(1, count + 1)])
        self.places = {}  # tensor name -> (file name, byte offset of its data, spec)
        for filename, shard in zip(self.filenames, self.shards):
            header = _header(shard, metadata)
            offset = len(header)
            for spec in shard:
                self.places[spec.name] = (filename, offset, spec)
                offset += spec.nbytes
            with open(self.folder / filename, "wb") as file:
                file.write(header)
                file.truncate(offset)  # unwritten data reads as zeros until its rows arrive
        self._queue = [spec for shard in self.shards for spec in shard]
        self._position, self._written = 0, 0

    def write_rows(self, name: str, first_row: int, rows: torch.Tensor) -> None:
        """Write rows [first_row, first_row + len(rows)) of tensor `name` (converted to its dtype) in place."""
        filename, offset, spec = self.places[name]
        raw = rows.detach().to("cpu", spec.dtype).contiguous().reshape(-1).view(torch.uint8).numpy()
        start = first_row * spec.row_nbytes
        if start + raw.nbytes > spec.nbytes:
            raise ValueError(f"too much data written for {spec.name}")
        descriptor = os.open(self.folder / filename, os.O_WRONLY)  # never O_CREAT: a removed folder stays removed
        try:
            view, position = memoryview(raw), offset + start
            while view.nbytes:
                written = os.pwrite(descriptor, view, position)
                view, position = view[written:], position + written
        finally:
            os.close(descriptor)

    def write(self, name: str, data: torch.Tensor) -> None:
        """Append the next rows of tensor `name`: tensors in declaration order, rows in order."""
        while (self._position < len(self._queue) and self._written == 0
               and self._queue[self._position].nbytes == 0 and self._queue[self._position].name != name):
            self._position += 1  # tensors with no elements get no write call
        if self._position == len(self._queue):
            raise ValueError(f"every tensor is already written, got more data for {name}")
        spec = self._queue[self._position]
        if name != spec.name:
            raise ValueError(f"expected data for {spec.name}, got {name}")
        nbytes = element_count(data.shape) * spec.dtype.itemsize
        if self._written + nbytes > spec.nbytes:
            raise ValueError(f"too much data written for {spec.name}")
        self.write_rows(name, self._written // max(1, spec.row_nbytes), data)
        self._written += nbytes
        if self._written == spec.nbytes:
            self._position, self._written = self._position + 1, 0

    def close(self) -> list[Path]:
        """End of sequential `write`s: every tensor must be complete; then `finish`."""
        while self._position < len(self._queue) and self._written == 0 and self._queue[self._position].nbytes == 0:
            self._position += 1
        if self._position != len(self._queue):
            raise ValueError(f"tensor {self._queue[self._position].name} was not fully written")
        return self.finish()

    def finish(self) -> list[Path]:
        """Flush the shards to disk and write the index when sharded; returns the files written.

        The caller vouches that every row was written (`write_rows` from other processes cannot be counted here).
        """
        files = [self.folder / filename for filename in self.filenames]
        for file in files:
            descriptor = os.open(file, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        if len(self.shards) > 1:
            weight_map = {spec.name: filename for filename, shard in zip(self.filenames, self.shards) for spec in shard}
            index = {"metadata": {"total_size": sum(spec.nbytes for shard in self.shards for spec in shard)},
                     "weight_map": weight_map}
            index_path = self.folder / "model.safetensors.index.json"
            index_path.write_text(json.dumps(index, indent=2))
            files.append(index_path)
        return files


@contextmanager
def finished_together(writers):
    """Close every writer (each checks its sequential `write`s are complete) once the block succeeds. On an
    exception nothing is closed: a writer holds no open file, and `atomic_folder` removes the folder."""
    yield writers
    for writer in writers:
        writer.close()


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
