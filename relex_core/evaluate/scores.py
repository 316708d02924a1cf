"""scores.csv: one row per (folder, metric), appended as each folder is scored.

Each folder's rows go to the file in one `write` on a descriptor opened with O_APPEND, so a run
that is killed leaves whole lines only, and the folders scored before it stay in the table.
Every row carries the folder's fingerprint (name, size and mtime of its weight files): a folder
already scored by the same scorer and unchanged since is not scored again.

    table = ScoresFile("scores.csv")
    table.is_scored(folder_path, "sample", fingerprint(folder_path))
    read_scores("scores.csv")      # the latest row of each (path, scorer, metric) as a DataFrame
"""

import csv
import hashlib
import io
import math
import os
from pathlib import Path

from ..errors import RelexError
from .folders import Folder, weight_files

# The columns, then the fingerprint that makes "already scored and unchanged" checkable.
COLUMNS = ("path", "step", "kind", "window", "target_step", "scorer", "metric", "value", "stderr", "seconds",
           "fingerprint")

try:  # serialises the header check and each append between relex processes sharing a file
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: appends are still single writes
    fcntl = None


def fingerprint(folder) -> str:
    """16 hex digits from the name, size and mtime (ns) of each weight file of the folder."""
    digest = hashlib.sha256()
    for path in weight_files(Path(folder)):
        info = path.stat()
        digest.update(f"{path.name}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def score_rows(folder: Folder, scorer_name: str, metrics, seconds: float, folder_fingerprint: str) -> list[dict]:
    """The rows of one scored folder: metrics is a list of (metric, value, stderr or None)."""
    return [{"path": str(folder.path), "step": folder.step, "kind": folder.kind, "window": folder.window,
             "target_step": folder.target_step, "scorer": scorer_name, "metric": metric, "value": float(value),
             "stderr": None if stderr is None else float(stderr), "seconds": round(seconds, 3),
             "fingerprint": folder_fingerprint} for metric, value, stderr in metrics]


class ScoresFile:
    """An append-only scores.csv. Opening checks an existing file's header and its last line."""

    def __init__(self, path):
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise RelexError("scores file is a folder", path=self.path)
        self._scored = {(row["path"], row["scorer"], row["fingerprint"]) for row in self.rows()}

    def is_scored(self, path, scorer_name: str, folder_fingerprint: str) -> bool:
        return (str(path), scorer_name, folder_fingerprint) in self._scored

    def append(self, rows: list[dict]) -> None:
        """Adds the rows (one folder's) in one write, with the header first if the file is new or empty."""
        body = _format(rows)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise RelexError(f"cannot write ({error.strerror or error})", path=self.path) from None
        try:
            if fcntl is not None:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            data = (_format(None) if os.fstat(descriptor).st_size == 0 else "") + body
            _write_all(descriptor, data.encode())
        except OSError as error:
            raise RelexError(f"cannot write ({error.strerror or error})", path=self.path) from None
        finally:
            os.close(descriptor)  # also releases the lock
        self._scored.update((row["path"], row["scorer"], row["fingerprint"]) for row in rows)

    def rows(self) -> list[dict]:
        """Every row of the file as a dict of strings, in order ([] if the file is new)."""
        if not self.path.exists():
            return []
        try:
            text = self.path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise RelexError(f"unreadable scores file ({error})", path=self.path) from None
        if not text:
            return []
        if not text.endswith("\n"):
            raise RelexError("the last line of the scores file is cut short (a write did not finish); "
                             "remove that line and run again", path=self.path)
        reader = csv.DictReader(io.StringIO(text))
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise RelexError(f"not a relex scores file: columns {reader.fieldnames}, expected {list(COLUMNS)}",
                             path=self.path)
        return list(reader)


def read_scores(path, latest: bool = True):
    """scores.csv as a DataFrame; latest keeps only the last row of each (path, scorer, metric)."""
    import pandas as pd

    table = ScoresFile(path)  # the same checks as before an append
    frame = pd.DataFrame(table.rows(), columns=list(COLUMNS))
    for column in ("step", "target_step"):
        frame[column] = pd.to_numeric(frame[column]).astype("Int64")
    for column in ("value", "stderr", "seconds"):
        frame[column] = pd.to_numeric(frame[column]).astype(float)
    if latest:
        frame = frame.drop_duplicates(["path", "scorer", "metric"], keep="last").reset_index(drop=True)
    return frame


def _format(rows) -> str:
    """CSV text of the header (rows None) or of rows; empty fields for None and NaN, floats in full."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if rows is None:
        writer.writerow(COLUMNS)
    for row in rows or ():
        writer.writerow(["" if _missing(row[column]) else repr(row[column]) if isinstance(row[column], float)
                         else row[column] for column in COLUMNS])
    return buffer.getvalue()


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _write_all(descriptor: int, data: bytes) -> None:
    while data:
        written = os.write(descriptor, data)
        data = data[written:]
