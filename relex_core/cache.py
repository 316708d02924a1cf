"""The on-disk Gram cache: keyed by a fingerprint of the inputs, written atomically.

A second analysis of an unchanged run loads in milliseconds. The key covers every weight
file's path, size and mtime plus the tensor list, so a changed checkpoint misses the cache.
A run that has grown since its last pass finds the Gram of its earlier checkpoints under the
key that prefix had (`load_prefix`), and only the new checkpoints' rows are computed.
Files are written to a temporary name and renamed, and checked on load, so a killed pass or
two concurrent passes never leave a cache that is trusted later.
"""

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CACHE_FORMAT = 2  # 2: per-checkpoint counts of changed elements
STALE_SECONDS = 3600  # a temporary cache file this old belongs to a writer that was killed


def default_cache_dir() -> Path:
    return Path(os.environ.get("RELEX_CACHE_DIR", Path.home() / ".cache" / "relex"))


def fingerprint(layout, count: int | None = None) -> str:
    """A hash of everything the Gram depends on: files (path, size, mtime) and tensors.

    count: the key of the layout's first `count` checkpoints only, as a one-shot pass of the run
    had when it held just those (the key `load_prefix` looks for); default all of them.
    """
    return prefix_fingerprints(layout, [len(layout.readers) if count is None else count])[0]


def prefix_fingerprints(layout, counts) -> list[str]:
    """`fingerprint(layout, count)` for each count, every file stat'ed once."""
    base_files = _file_records(layout.base)
    checkpoint_files = [_file_records(reader) for reader in layout.readers]
    steps = [int(step) for step in _layout_steps(layout)]
    tensors = [[name, list(layout.base.tensors[name].shape)] for name in layout.names]
    keys = []
    for count in counts:
        description = {
            "format": CACHE_FORMAT,
            "steps": steps[:count],
            "files": base_files + [record for records in checkpoint_files[:count] for record in records],
            "tensors": tensors,
            "tied": layout.tied,
        }
        keys.append(hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32])
    return keys


def _file_records(reader) -> list:
    records = []
    for file in reader.files:
        stat = file.stat()
        records.append([str(file.resolve()), stat.st_size, stat.st_mtime_ns])
    return records


def _layout_steps(layout) -> list:
    """The steps of the layout's checkpoints (all of the run's, unless it was opened on a subset)."""
    steps = list(layout.run.steps)
    return [steps[position] for position in layout.positions] if layout.positions else steps


def cache_path(cache_dir, key: str) -> Path:
    return Path(cache_dir) / f"gram-{key}.npz"


def save(run_gram, cache_dir) -> Path:
    """Write the Gram atomically (temporary file in the same folder, then rename)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    header = {"format": CACHE_FORMAT, "fingerprint": run_gram.fingerprint, "names": run_gram.names,
              "shapes": [list(shape) for shape in run_gram.shapes], "dtypes": run_gram.dtypes,
              "tied": run_gram.tied, "notes": run_gram.notes, "checkpoint_dtypes": run_gram.checkpoint_dtypes}
    target = cache_path(cache_dir, run_gram.fingerprint)
    _remove_stale_temporaries(cache_dir)
    handle, temporary = tempfile.mkstemp(prefix=".gram-", suffix=".tmp", dir=cache_dir)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                     steps=run_gram.steps, gram=run_gram.gram, base_sq_norm=run_gram.base_sq_norm,
                     changed=run_gram.changed)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def save_or_say(run_gram, cache_dir) -> None:
    """`save`, and on an OSError (a full or read-only cache) one line on stderr: a cache that cannot be
    written must not lose the analysis it would have kept."""
    try:
        save(run_gram, cache_dir)
    except OSError as error:
        print(f"relex: could not write the cache in {cache_dir} ({error.strerror or error})", file=sys.stderr)


def _remove_stale_temporaries(cache_dir: Path) -> None:
    """A writer killed between write and rename leaves its temporary file behind. Such files are
    never trusted (only `gram-<key>.npz` is read), but would pile up; a live writer's is seconds
    old, so anything older than STALE_SECONDS is removed."""
    cutoff = time.time() - STALE_SECONDS
    for temporary in cache_dir.glob(".gram-*.tmp"):
        try:
            if temporary.stat().st_mtime < cutoff:
                temporary.unlink()
        except OSError:  # another process removed it first, or it is not ours to remove
            pass


def load(layout, key: str, cache_dir, count: int | None = None) -> dict | None:
    """The cached fields for this fingerprint, or None if absent or not valid.

    count: the entry holds the layout's first `count` checkpoints only (a prefix; default all)."""
    path = cache_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            steps, gram, base_sq_norm, changed = data["steps"], data["gram"], data["base_sq_norm"], data["changed"]
        valid = _is_valid(layout, key, header, steps, gram, base_sq_norm, changed, count)
    except Exception:  # a foreign or damaged file is a cache miss, never an error
        return None
    if not valid:
        return None
    return {"header": header, "steps": steps, "gram": gram, "base_sq_norm": base_sq_norm, "changed": changed}


def load_prefix(layout, cache_dir) -> tuple[int, dict] | None:
    """(count, cached fields) of the longest strictly shorter prefix of the layout's checkpoints that
    is in the cache: the Gram a pass wrote while the run was still being trained. Only the files'
    stat is read, so a miss costs milliseconds. None when no prefix of two or more is cached."""
    counts = list(range(len(layout.readers) - 1, 1, -1))
    for count, key in zip(counts, prefix_fingerprints(layout, counts)):
        cached = load(layout, key, cache_dir, count)
        if cached is not None:
            return count, cached
    return None


def _is_valid(layout, key: str, header, steps, gram, base_sq_norm, changed, count: int | None = None) -> bool:
    n_tensors = len(layout.names)
    n_checkpoints = len(layout.readers) if count is None else count
    expected_steps = [int(step) for step in _layout_steps(layout)][:n_checkpoints]
    return (isinstance(header, dict) and header.get("format") == CACHE_FORMAT and header.get("fingerprint") == key
            and header.get("names") == layout.names
            and all(field in header for field in ("dtypes", "tied", "notes", "checkpoint_dtypes"))
            and len(header["checkpoint_dtypes"]) == n_tensors
            and len(header.get("shapes", ())) == n_tensors
            and steps.shape == (n_checkpoints,) and steps.tolist() == expected_steps
            and gram.dtype == np.float64 and gram.shape == (n_tensors, n_checkpoints, n_checkpoints)
            and base_sq_norm.shape == (n_tensors,)
            and changed.dtype == np.int64 and changed.shape == (n_tensors, n_checkpoints) and bool((changed >= 0).all())
            and bool(np.isfinite(gram).all()) and bool(np.isfinite(base_sq_norm).all()))
