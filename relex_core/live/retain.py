"""`--retain`: keep each analysed checkpoint's files in relex's cache, so rotation cannot take them.

Trainers delete old checkpoints (TRL save_total_limit, OpenRLHF --ckpt.max_num, verl
max_actor_ckpt_to_keep). A hard link is a second name for the same file: when the trainer
removes its name, the data stays under ours, at no cost in disk space until then. Where the
cache is on another filesystem a link is impossible and the file is copied. The run itself is
never modified.
"""

import hashlib
import os
import shutil
from dataclasses import replace
from pathlib import Path

from ..errors import RelexError
from ..io.discover import Checkpoint, Run


def retain_root(cache_dir, run: Run) -> Path:
    """`<cache>/retained/<hash of the run's folder>`: one folder of retained checkpoints per run."""
    source = str(Path(run.source).expanduser().resolve())
    return Path(cache_dir) / "retained" / hashlib.sha256(source.encode()).hexdigest()[:16]


def retain(checkpoint: Checkpoint, run: Run, root: Path) -> Checkpoint:
    """Link (or copy) the checkpoint's folder into `root`; returns the same checkpoint read from there."""
    top, inside = _top_folder(checkpoint, run)
    target = root / f"step-{checkpoint.step}" / top.name
    try:
        _link_tree(top, target)
    except OSError as error:
        raise RelexError(f"cannot retain the checkpoint in the cache ({error.strerror or error})",
                         path=error.filename or top) from None
    config_dir = checkpoint.config_dir
    if config_dir is not None and (config_dir == top or top in config_dir.parents):
        config_dir = target / config_dir.relative_to(top)
    return replace(checkpoint, path=target / inside, config_dir=config_dir)


def _top_folder(checkpoint: Checkpoint, run: Run) -> tuple[Path, Path]:
    """(the folder the trainer created for this checkpoint, the weights' path inside it)."""
    path = checkpoint.path
    for source in run.sources or (run.source,):
        source = Path(source)
        if source.is_dir() and source in path.parents:
            relative = path.relative_to(source)
            return source / relative.parts[0], Path(*relative.parts[1:])
    if not path.is_dir():
        raise RelexError("--retain keeps checkpoint folders; this checkpoint is a single file", path=path)
    return path, Path()


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link every file under `source` to the same place under `target` (copy across filesystems).
    A file already retained (same inode, or same size) is left alone, so a second call is cheap."""
    for folder, _, files in os.walk(source):
        destination = target / Path(folder).relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for name in files:
            original, copy = Path(folder) / name, destination / name
            if copy.exists() and (os.path.samefile(original, copy) or copy.stat().st_size == original.stat().st_size):
                continue
            copy.unlink(missing_ok=True)
            try:
                os.link(original, copy)
            except OSError:  # another filesystem, or links not allowed there: a copy keeps the data too
                shutil.copy2(original, copy)
