"""Score folders one after the other, appending each one's rows to scores.csv as soon as it is done.

    outcomes = score(["runs/grpo", "exports/grpo"], SampleScorer(), out="scores.csv",
                     progress=lambda fraction, message: ..., cancel=threading.Event())

A folder that fails (an error naming it) is reported and the others are still scored; a folder
already in scores.csv with the same scorer and fingerprint is skipped unless force. Setting
`cancel` stops before the next folder (a running command is ended at once; an lm-eval run
finishes its folder first). Rows written before a cancel, a Ctrl-C or a kill stay in the file.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import RelexError
from .folders import Folder, describe_folder, expand_paths
from .scorer import Cancelled
from .scores import ScoresFile, fingerprint, score_rows


@dataclass(frozen=True)
class Outcome:
    """What happened to one folder (path: absolute). status: 'scored', 'skipped' (already scored,
    unchanged) or 'failed' (error: the one-line message, naming the folder)."""
    path: Path
    status: str
    rows: tuple = ()
    error: str | None = None
    folder: Folder | None = None


def score(paths, scorer, *, out=None, force: bool = False, progress=None, cancel=None) -> list[Outcome]:
    """Scores every folder of `paths` (see `expand_paths`) with `scorer`; returns one Outcome each.

    out: scores.csv to append to (None: nothing written, nothing skipped). progress:
    callable(fraction, message) or None. cancel: threading.Event or None; when it is set, the
    folders not yet scored get no Outcome.
    """
    folders = expand_paths(paths)
    outcomes = []
    pending = score_folders(folders, scorer, out=out, force=force, cancel=cancel)
    for number, path in enumerate(folders):
        if progress is not None:  # before the folder: one lm-eval run can take hours
            progress(number / len(folders), f"scoring {path}")
        outcome = next(pending, None)
        if outcome is None:  # cancelled
            break
        outcomes.append(outcome)
    if progress is not None:
        progress(1.0, "cancelled" if cancel is not None and cancel.is_set() else "done")
    return outcomes


def score_folders(folders, scorer, *, out=None, force: bool = False, cancel=None):
    """Yields an Outcome per folder as it is scored (the CLI draws its progress bar from this)."""
    scorer.check()
    table = ScoresFile(out) if out is not None else None
    for path in folders:
        if cancel is not None and cancel.is_set():
            return
        try:
            folder = describe_folder(path)
            folder_fingerprint = fingerprint(folder.path)
            if table is not None and not force and table.is_scored(folder.path, scorer.name, folder_fingerprint):
                yield Outcome(folder.path, "skipped", folder=folder)
                continue
            start = time.perf_counter()
            metrics = scorer.score(folder.path, cancel=cancel)
            if not metrics:
                raise RelexError(f"{scorer.name} gave no metric for this folder", path=folder.path)
            rows = score_rows(folder, scorer.name, metrics, time.perf_counter() - start, folder_fingerprint)
            if table is not None:
                table.append(rows)
        except Cancelled:
            return
        except RelexError as error:
            if table is not None and error.path == table.path:
                raise  # the scores file itself is unwritable: no later folder would fare better
            yield Outcome(Path(path).absolute(), "failed", error=str(error))
            continue
        yield Outcome(folder.path, "scored", rows=tuple(rows), folder=folder)
