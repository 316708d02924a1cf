"""What a folder to score stands for: a run's own checkpoint or a relex export, and at which step.

    describe_folder("runs/grpo/checkpoint-480")   # kind 'checkpoint', step 480
    describe_folder("exports/grpo/step-2880")     # kind 'relex' (from relex.json), step 2880, window '0:720'
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import RelexError

# The weights of an HF folder (single file, shards, their index) or of a torch save.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
WEIGHT_INDEXES = (".safetensors.index.json", ".bin.index.json")
# The step in a checkpoint folder's name, as relex's run discovery reads it: checkpoint-N (HF/TRL),
# global_step_N (verl), global_stepN_hf (OpenRLHF), step_N / step-N.
_STEP_IN_NAME = re.compile(r"^(?:checkpoint-|global_step_?|step[_-])(\d+)(?:_hf)?$")
# verl keeps the HF weights two levels down: global_step_N/actor/huggingface.
_PARENTS_SEARCHED = 2


@dataclass(frozen=True)
class Folder:
    """One folder to score. kind: 'checkpoint', or an export's method ('relex', 'linear', 'reconstruct').

    step: the training step it stands for (the checkpoint's own, or the export's target step;
    None when a checkpoint's name and trainer_state.json say nothing). window ('A:B') and
    target_step are set for exports only.
    """
    path: Path
    kind: str
    step: int | None
    window: str | None = None
    target_step: int | None = None


def weight_files(folder: Path) -> list[Path]:
    """The files holding the folder's weights, sorted; [] if there are none."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [entry for entry in entries if entry.is_file() and entry.name.endswith(WEIGHT_SUFFIXES + WEIGHT_INDEXES)]


def expand_paths(paths) -> list[Path]:
    """The folders to score, in order: each path that holds weights, or else its sub-folders that do.

    So a run folder stands for its checkpoints (sorted by step) and a multi-target export for its
    step-S folders. A path that is missing, or holds no weights at any of those places, is an error.
    """
    folders = []
    for path in map(lambda text: Path(text).expanduser(), paths):
        if not path.is_dir():
            raise RelexError("no such checkpoint folder" if not path.exists() else "not a folder", path=path)
        if weight_files(path):
            folders.append(path)
            continue
        inner = [sub for sub in path.iterdir() if sub.is_dir() and weight_files(sub)]
        if not inner:
            raise RelexError("folder holds no model weights (*.safetensors, *.bin or *.pt), nor do its "
                             "sub-folders", path=path)
        folders.extend(sorted(inner, key=lambda sub: (_step_in_name(sub.name) is None, _step_in_name(sub.name) or 0,
                                                      sub.name)))
    return folders


def describe_folder(path) -> Folder:
    """Kind, step, window and target step of a folder, from its relex.json, trainer_state.json or name."""
    path = Path(path).expanduser().absolute()
    provenance = _read_json(path / "relex.json")
    if provenance is not None:
        try:
            window = provenance["window_steps"]
            target_step = int(provenance["target_step"])
            return Folder(path, kind=str(provenance["method"]), step=target_step,
                          window=f"{int(window[0])}:{int(window[-1])}", target_step=target_step)
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise RelexError(f"relex.json lacks window_steps, target_step or method ({error!r})",
                             path=path / "relex.json") from None
    return Folder(path, kind="checkpoint", step=checkpoint_step(path))


def checkpoint_step(path: Path) -> int | None:
    """trainer_state.json's global_step, else the step in the folder's (or a parent's) name."""
    state = _read_json(path / "trainer_state.json")
    if isinstance(state, dict) and isinstance(state.get("global_step"), int):
        return state["global_step"]
    for folder in (path, *path.parents[:_PARENTS_SEARCHED]):
        step = _step_in_name(folder.name)
        if step is not None:
            return step
    return None


def _step_in_name(name: str) -> int | None:
    match = _STEP_IN_NAME.match(name)
    return int(match.group(1)) if match else None


def _read_json(path: Path):
    """The parsed file, None if it does not exist; an unreadable file is an error naming it."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RelexError(f"unreadable JSON ({error})", path=path) from None
