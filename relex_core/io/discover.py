"""Find the checkpoints of a run: HF/TRL, verl and OpenRLHF folder names, or a manifest.

A run is a base checkpoint (step 0) plus checkpoints at increasing steps. The step comes
from the folder name and is cross-checked with `trainer_state.json` when there is one.
"""

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import RelexError

# (pattern for a folder name, where the weights may live inside it, first match wins)
_LAYOUTS = (
    (re.compile(r"^checkpoint-(.+)$"), ("",)),                                  # HF Trainer / TRL
    (re.compile(r"^global_step_(.+)$"), ("", "actor/huggingface", "actor")),    # verl
    (re.compile(r"^global_step(\d+)_hf$"), ("",)),                              # OpenRLHF
    (re.compile(r"^step[_-](.+)$"), ("",)),
)

WEIGHT_MARKERS = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                  "pytorch_model.bin")


@dataclass(frozen=True)
class Checkpoint:
    """One saved model: its training step and the folder (or file) holding its weights."""
    step: int
    path: Path


@dataclass(frozen=True)
class Run:
    """A base checkpoint plus the checkpoints after it, sorted by step (base excluded)."""
    source: Path
    base: Checkpoint
    checkpoints: tuple

    @property
    def steps(self) -> list[int]:
        return [checkpoint.step for checkpoint in self.checkpoints]

    def config(self) -> dict:
        """The model's config.json from the last checkpoint, falling back to the base; {} if none."""
        for checkpoint in (*reversed(self.checkpoints), self.base):
            config_path = checkpoint.path / "config.json" if checkpoint.path.is_dir() else None
            if config_path is not None and config_path.is_file():
                try:
                    return json.loads(config_path.read_text())
                except (OSError, ValueError) as error:
                    raise RelexError(f"unreadable config.json ({error})", path=config_path) from None
        return {}

    def roots(self) -> set:
        """The run folder (or the manifest's folder) and every checkpoint's weights location, resolved."""
        source = self.source.resolve()
        roots = {source if source.is_dir() else source.parent}
        return roots | {checkpoint.path.resolve() for checkpoint in (self.base, *self.checkpoints)}

    def refuse_inside(self, path, what: str) -> None:
        """Nothing is ever written inside the run's folder or its checkpoints: raise if `path` is there."""
        if path is None:
            return
        target = Path(path).expanduser().resolve()
        for root in self.roots():
            if target == root or root in target.parents:
                raise RelexError(f"{what} must not be inside the run's checkpoints ({root})", path=target)


def has_weights(folder: Path) -> bool:
    """True if `folder` directly holds model weights in a format relex reads."""
    # Any entry with a weights name counts, even one that is not a readable file (a folder, a
    # dangling link): the reader then names that file in its error instead of "no weights here".
    try:
        return any(os.path.lexists(folder / marker) for marker in WEIGHT_MARKERS) or any(
            entry.suffix in (".safetensors", ".bin", ".pt") for entry in folder.iterdir())
    except OSError:
        return False


def _weights_folder(folder: Path, subfolders) -> Path:
    for sub in subfolders:
        candidate = folder / sub if sub else folder
        if candidate.is_dir() and has_weights(candidate):
            return candidate
    raise RelexError("checkpoint folder holds no model weights (*.safetensors, *.bin or *.pt)", path=folder)


def _check_trainer_state(folder: Path, step: int) -> None:
    state_path = folder / "trainer_state.json"
    if not state_path.is_file():
        return
    try:
        recorded = json.loads(state_path.read_text()).get("global_step")
    except (OSError, ValueError) as error:
        raise RelexError(f"unreadable trainer_state.json ({error})", path=state_path) from None
    if recorded is not None and int(recorded) != step:
        raise RelexError(f"folder name says step {step} but trainer_state.json says global_step {recorded}",
                         path=state_path)


def _scan_folder(root: Path) -> list[Checkpoint]:
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError as error:
        raise RelexError(f"cannot list folder ({error.strerror or error})", path=root) from None
    found = []
    for entry in entries:
        for pattern, subfolders in _LAYOUTS:
            match = pattern.match(entry.name)
            if not match:
                continue
            try:
                is_dir = entry.is_dir()
                os.stat(entry.path)  # raises on a symlink loop or a dangling link
            except OSError as error:
                raise RelexError(f"cannot open checkpoint folder ({error.strerror or error})",
                                 path=entry.path) from None
            if not is_dir:
                break
            if not match.group(1).isdigit():
                raise RelexError("checkpoint folder name has no numeric step", path=entry.path)
            step = int(match.group(1))
            _check_trainer_state(Path(entry.path), step)
            found.append(Checkpoint(step, _weights_folder(Path(entry.path), subfolders)))
            break
    return found


def _read_manifest(manifest: Path) -> list[Checkpoint]:
    """A manifest lists step,path pairs (CSV with a header, or JSON); paths relative to it."""
    try:
        text = manifest.read_text()
        if manifest.suffix == ".json":
            data = json.loads(text)
            rows = data.items() if isinstance(data, dict) else ((row["step"], row["path"]) for row in data)
        else:
            rows = ((row["step"], row["path"]) for row in csv.DictReader(text.splitlines()))
        pairs = [(int(step), str(path)) for step, path in rows]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RelexError(f"unreadable manifest, expected step,path rows ({error})", path=manifest) from None
    checkpoints = []
    for step, path in pairs:
        location = (manifest.parent / path).resolve()
        if not location.exists():
            raise RelexError(f"manifest entry for step {step} does not exist", path=location)
        if location.is_dir():
            location = _weights_folder(location, ("",))
        checkpoints.append(Checkpoint(step, location))
    return checkpoints


def _reject_duplicates(checkpoints: list[Checkpoint]) -> None:
    seen = {}
    for checkpoint in checkpoints:
        if checkpoint.step in seen:
            raise RelexError(f"duplicate step {checkpoint.step}, also at {seen[checkpoint.step]}",
                             path=checkpoint.path)
        seen[checkpoint.step] = checkpoint.path


def open_run(source, base=None) -> Run:
    """Discover a run from a folder of checkpoints or a manifest (.csv/.json of step,path).

    `base` overrides the base checkpoint; otherwise the step-0 checkpoint of the run is used.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise RelexError("no such run folder or manifest", path=source)
    if source.is_file():
        checkpoints = _read_manifest(source)
    else:
        checkpoints = _scan_folder(source)
    if not checkpoints:
        raise RelexError("no checkpoints found (expected checkpoint-N, global_step_N, global_stepN_hf, "
                         "step_N folders, or a manifest)", path=source)
    _reject_duplicates(checkpoints)
    checkpoints.sort(key=lambda checkpoint: checkpoint.step)
    if base is not None:
        base_path = Path(base).expanduser()
        if not base_path.exists():
            raise RelexError("base checkpoint does not exist", path=base_path)
        base_checkpoint = Checkpoint(0, _weights_folder(base_path, ("",)) if base_path.is_dir() else base_path)
        checkpoints = [checkpoint for checkpoint in checkpoints if checkpoint.step != 0]
    elif checkpoints[0].step == 0:
        base_checkpoint, checkpoints = checkpoints[0], checkpoints[1:]
    else:
        raise RelexError("run has no step-0 checkpoint; pass the base with --base", path=source)
    if len(checkpoints) < 2:  # a trajectory direction and a line need two points at least
        found = f"only one checkpoint (step {checkpoints[0].step})" if checkpoints else "no checkpoint"
        raise RelexError(f"run has {found} after the base; at least two are needed", path=source)
    return Run(source=source, base=base_checkpoint, checkpoints=tuple(checkpoints))
