"""The scalars a training framework logged (rewards, losses, learning rates), as one long table.

    run_metrics(run)                       # found under the run folder(s)
    run_metrics(run, metrics="logs/")      # or in a file or folder given by --metrics PATH

Columns: step, metric, value, source, where source is "trainer_state" (HF/TRL's
`trainer_state.json` log_history, from the last checkpoint), "jsonl" (verl's file logger,
one `{"step": N, "data": {...}}` object a line) or "tensorboard" (event files, read with the
`tensorboard` package's event reader: the optional `tensorboard` extra). Only numbers with a
step are kept; text, booleans, histograms and images are not.
"""

import json
import os
from pathlib import Path

import pandas as pd

from ..errors import RelexError

COLUMNS = ["step", "metric", "value", "source"]
EVENTS_PREFIX = "events.out.tfevents."


def run_metrics(run, metrics=None) -> pd.DataFrame:
    """Every logged scalar of a run, from trainer_state.json, JSONL logs and TensorBoard events.

    metrics: a JSONL file, an events file or a folder to search instead of the run's folders.
    A missing `tensorboard` package is an error for event files given explicitly, and a note in
    `frame.attrs["notes"]` for ones found by the search.
    """
    frames, notes = [], []
    if metrics is None:
        state = trainer_state_path(run)
        if state is not None:
            frames.append(trainer_state_metrics(state))
        folders = [Path(source) for source in (run.sources or (run.source,))]
        folders = [folder if folder.is_dir() else folder.parent for folder in folders]
        explicit = False
    else:
        folders, explicit = [Path(metrics).expanduser()], True
        if not folders[0].exists():
            raise RelexError("no such metrics file or folder", path=folders[0])
    files = _log_files(folders)
    event_folders = {path.parent for path in files if path.name.startswith(EVENTS_PREFIX)}
    for path in files:
        if path.name.startswith(EVENTS_PREFIX):
            try:
                frames.append(tensorboard_metrics(path, prefix=_scalars_prefix(path, event_folders)))
            except ModuleNotFoundError:
                if explicit:
                    raise RelexError("reading TensorBoard event files needs the tensorboard package "
                                     "(pip install tensorboard)", path=path) from None
                notes.append(f"TensorBoard events in {path.parent} not read: the tensorboard package is not installed")
        elif path.name == "trainer_state.json":
            frames.append(trainer_state_metrics(path))
        else:
            frames.append(jsonl_metrics(path))
    frame = pd.concat([frame for frame in frames if not frame.empty] or [_empty()], ignore_index=True)
    frame = frame.drop_duplicates(ignore_index=True).sort_values(["source", "metric", "step"], kind="stable",
                                                                  ignore_index=True)
    frame.attrs["notes"] = notes
    return frame


def trainer_state_path(run) -> Path | None:
    """trainer_state.json of the last checkpoint (beside its weights or up to two folders above)."""
    folder = run.checkpoints[-1].path
    folder = folder if folder.is_dir() else folder.parent
    for candidate in (folder, *list(folder.parents)[:2]):
        if (candidate / "trainer_state.json").is_file():
            return candidate / "trainer_state.json"
    return None


def trainer_state_metrics(path) -> pd.DataFrame:
    """HF/TRL's log_history: every numeric entry with a step (not the epoch)."""
    path = Path(path)
    try:
        history = json.loads(path.read_text()).get("log_history") or []
    except (OSError, ValueError, AttributeError) as error:
        raise RelexError(f"unreadable trainer_state.json ({error})", path=path) from None
    records = [(int(entry["step"]), key, float(value), "trainer_state") for entry in history
               if isinstance(entry, dict) and _is_number(entry.get("step"))
               for key, value in entry.items() if key not in ("step", "epoch") and _is_number(value)]
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def jsonl_metrics(path) -> pd.DataFrame:
    """verl's file logger: `{"step": N, "data": {"critic/score/mean": ...}}` a line.

    A last line cut short (the trainer is writing it) is skipped; a broken line before it is an error.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise RelexError(f"unreadable metrics log ({error})", path=path) from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            raise RelexError(f"line {number} is not JSON", path=path) from None
        data = entry.get("data") if isinstance(entry, dict) else None
        if not isinstance(data, dict) or not _is_number(entry.get("step")):
            raise RelexError(f'line {number} is not {{"step": N, "data": {{...}}}}', path=path)
        records.extend((int(entry["step"]), key, float(value), "jsonl") for key, value in data.items()
                       if _is_number(value))
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def tensorboard_metrics(path, prefix: str = "") -> pd.DataFrame:
    """Scalars of one TensorBoard event file (old-style simple values and the scalars plugin's tensors).

    prefix: put before every tag. Raises ModuleNotFoundError without the tensorboard package.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    path = Path(path)
    records = []
    try:
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = float(value.simple_value)
                elif value.HasField("tensor") and value.metadata.plugin_data.plugin_name == "scalars":
                    array = tensor_util.make_ndarray(value.tensor)
                    if array.size != 1:
                        continue
                    number = float(array.reshape(-1)[0])
                else:
                    continue
                records.append((int(event.step), prefix + value.tag, number, "tensorboard"))
    except (OSError, ValueError) as error:
        raise RelexError(f"unreadable TensorBoard event file ({error})", path=path) from None
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def _log_files(folders) -> list[Path]:
    """JSONL logs and event files in these folders (a file stands for itself), checkpoint weights skipped."""
    found = []
    for folder in folders:
        if folder.is_file():
            found.append(folder)
            continue
        for directory, subfolders, files in os.walk(folder):
            subfolders.sort()
            for name in sorted(files):
                if name.endswith(".jsonl") or name.startswith(EVENTS_PREFIX):
                    found.append(Path(directory) / name)
    return found


def _scalars_prefix(path: Path, event_folders) -> str:
    """'grp_a/' for logdir/grp_a/events.*, when logdir has events of its own: add_scalars writes
    one subfolder per key, and the tags alone would collide."""
    for ancestor in path.parent.parents:
        if ancestor in event_folders:
            return f"{path.parent.relative_to(ancestor).as_posix()}/"
    return ""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"step": pd.Series(dtype="int64"), "metric": pd.Series(dtype="object"),
                         "value": pd.Series(dtype="float64"), "source": pd.Series(dtype="object")})
