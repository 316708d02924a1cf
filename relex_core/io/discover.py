"""Find the checkpoints of a run: HF/TRL, verl, OpenRLHF, torchtitan, NeMo-RL and accelerate folders, or a manifest.

A run is a base checkpoint (step 0, or `base=`) plus checkpoints at increasing steps. The step
comes from the folder name and is cross-checked with `trainer_state.json` when there is one.
A job resumed into a new output folder is one run of several folders (`open_run([first, second])`),
whose steps must follow on without overlap.

Only finished checkpoints are read: each format's own marker says when a save is done (see
`incomplete_reason`). An unfinished newest checkpoint is left out with a note (a trainer may be
writing it right now); an unfinished one before a finished one is an error that names it.
"""

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RelexError

# The format modules (and torch with them) are imported where they are used: `relex --help` and
# a mistyped run folder answer at once.

NATIVE_FORMATS = ("verl", "dcp")  # what the trainer itself wrote, in fp32; the others are HF copies
PREFER = ("native", "hf")
TRAINER_STATE = "trainer_state.json"
VERL_TRACKER = "latest_checkpointed_iteration.txt"

# (pattern for a folder name, where the weights may live inside it); the first that holds weights
# of the preferred kind wins (native: FSDP shards or DCP; hf: safetensors or .bin).
_LAYOUTS = (
    (re.compile(r"^checkpoint-(.+)$"), ("", "pytorch_model_fsdp_0")),           # HF Trainer / TRL, accelerate FSDP
    (re.compile(r"^global_step_(.+)$"), ("actor", "actor/huggingface", "")),    # verl
    (re.compile(r"^global_step(\d+)_hf$"), ("",)),                              # OpenRLHF
    (re.compile(r"^step[_-](.+)$"), ("", "policy/weights")),                    # torchtitan, NeMo-RL, others
)


@dataclass(frozen=True)
class Checkpoint:
    """One saved model: its training step and the folder (or file) holding its weights.

    format: what `open_reader(path)` reads there ("safetensors", "torch", "verl", "dcp").
    config_dir: the folder with its HF config and tokenizer (verl: `actor/huggingface`), if any.
    """
    step: int
    path: Path
    format: str = ""
    config_dir: Path | None = None

    @property
    def native(self) -> bool:
        return self.format in NATIVE_FORMATS


@dataclass(frozen=True)
class Run:
    """A base checkpoint plus the checkpoints after it, sorted by step (base excluded).

    sources: every folder (or manifest) the run was found in, in order; `source` is the first.
    notes: remarks for the user (which source and dtype were read, skipped unfinished checkpoints).
    """
    source: Path
    base: Checkpoint
    checkpoints: tuple
    sources: tuple = ()
    notes: list = field(default_factory=list, compare=False, hash=False)  # remarks, not identity

    @property
    def steps(self) -> list[int]:
        return [checkpoint.step for checkpoint in self.checkpoints]

    def config(self) -> dict:
        """The model's config.json from the last checkpoint, falling back to the base; {} if none."""
        for checkpoint in (*reversed(self.checkpoints), self.base):
            folder = checkpoint.config_dir or (checkpoint.path if checkpoint.path.is_dir() else None)
            config_path = folder / "config.json" if folder is not None else None
            if config_path is not None and config_path.is_file():
                try:
                    return json.loads(config_path.read_text())
                except (OSError, ValueError) as error:
                    raise RelexError(f"unreadable config.json ({error})", path=config_path) from None
        return {}

    def roots(self) -> set:
        """Every run folder (or manifest's folder) and every checkpoint's weights location, resolved."""
        roots = set()
        for source in self.sources or (self.source,):
            source = Path(source).resolve()
            roots.add(source if source.is_dir() else source.parent)
        return roots | {checkpoint.path.resolve() for checkpoint in (self.base, *self.checkpoints)}

    def refuse_inside(self, path, what: str) -> None:
        """Nothing is ever written inside the run's folder or its checkpoints: raise if `path` is there."""
        refuse_inside(path, self.roots(), what)


def refuse_inside(path, roots, what: str) -> None:
    """Raise if `path` is one of the folders `roots` or lies below one (a run's folders: nothing of relex's
    is ever written there); also for a run that cannot be opened yet (`relex watch` of a starting run)."""
    if path is None:
        return
    target = Path(path).expanduser().resolve()
    for root in roots:
        root = Path(root).expanduser().resolve()
        if target == root or root in target.parents:
            raise RelexError(f"{what} must not be inside the run's checkpoints ({root})", path=target)


# ------------------------------------------------------------------ one checkpoint folder

def _format_of(folder: Path) -> str | None:
    from .reader import detect_format

    if not folder.is_dir():
        return None
    try:
        return detect_format(folder)
    except RelexError:
        return None


def _candidates(folder: Path, subfolders) -> list[tuple[str, Path]]:
    """(format, weights folder) for every place in a checkpoint folder that holds weights."""
    found = []
    for sub in subfolders:
        candidate = folder / sub if sub else folder
        fmt = _format_of(candidate)
        if fmt is not None:
            found.append((fmt, candidate))
    return found


def _choose(folder: Path, subfolders, prefer: str, step: int = 0) -> tuple[Checkpoint, bool]:
    """(the checkpoint at `folder`, and whether it held both kinds of weights: shards and HF copies)."""
    found = _candidates(folder, subfolders)
    if not found:
        raise RelexError("checkpoint folder holds no model weights (*.safetensors, *.bin, *.pt, FSDP rank files or "
                         "a DCP checkpoint)", path=folder)
    native = [candidate for candidate in found if candidate[0] in NATIVE_FORMATS]
    copies = [candidate for candidate in found if candidate[0] not in NATIVE_FORMATS]
    ordered = (native + copies) if prefer == "native" else (copies + native)
    fmt, path = ordered[0]
    return Checkpoint(step, path, fmt, _config_dir(folder, fmt, path)), bool(native and copies)


def _config_dir(folder: Path, fmt: str, path: Path) -> Path | None:
    from . import verl

    for candidate in ((verl.hf_folder(path),) if fmt == "verl" else ()) + (path, folder):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def incomplete_reason(folder, *, run_folder=None, prefer: str = "native", uses_trainer_state: bool | None = None):
    """Why the checkpoint folder `folder` is not a finished save, or None when it is.

    The markers, per format:
    - verl (`global_step_N`): N ≤ the run folder's `latest_checkpointed_iteration.txt`; a run
      without that file (async saves) needs every rank file of `fsdp_config.json`, each whole;
    - DCP: `.metadata` present (it is written last);
    - HF/TRL: `trainer_state.json` present when the run uses one (it is written after the
      weights; a damaged file under it is then an error, not a save in progress); in a run
      without it, every safetensors file exactly as long as its header declares.
    `run_folder` defaults to the folder's parent; `uses_trainer_state` to whether any checkpoint there has one.
    """
    from . import dcp
    from .safetensors_reader import declared_size

    folder = Path(folder)
    run_folder = folder.parent if run_folder is None else Path(run_folder)
    for pattern, subfolders in _LAYOUTS:
        match = pattern.match(folder.name)
        if match:
            break
    else:
        subfolders, match = ("",), None
    found = _candidates(folder, subfolders)
    if not found:
        return "holds no model weights yet"
    if match is not None and folder.name.startswith("global_step_") and match.group(1).isdigit():
        tracker = run_folder / VERL_TRACKER
        if tracker.is_file():
            try:
                latest = int(tracker.read_text().strip())
            except (OSError, ValueError) as error:
                raise RelexError(f"unreadable verl checkpoint tracker ({error})", path=tracker) from None
            step = int(match.group(1))
            return None if step <= latest else f"step {step} is after {VERL_TRACKER} ({latest}): still being saved"
    checkpoint, _ = _choose(folder, subfolders, prefer)
    if checkpoint.format == "dcp":
        return None if dcp.is_complete(checkpoint.path) else "DCP folder has no .metadata yet: still being saved"
    if checkpoint.format == "verl":
        return _verl_rank_files_reason(checkpoint.path)
    if uses_trainer_state is None:
        uses_trainer_state = _uses_trainer_state(run_folder)
    if uses_trainer_state:
        return None if (folder / TRAINER_STATE).is_file() else f"no {TRAINER_STATE} yet: still being saved"
    for file in sorted(checkpoint.path.glob("*.safetensors")):
        expected = declared_size(file)
        if expected is not None and _size(file) != expected:
            return f"{file.name} has {_size(file)} of the {expected} bytes its header declares: still being written?"
    for file in sorted(checkpoint.path.glob("*.bin")) + sorted(checkpoint.path.glob("*.pt")):
        if _starts_with(file, b"PK") and not _zip_is_whole(file):
            return f"{file.name} is not whole yet: still being written?"
    return None


def checkpoint_is_complete(folder, **options) -> bool:
    """True when `folder` is a finished save by its format's marker (see `incomplete_reason`)."""
    return incomplete_reason(folder, **options) is None


def _verl_rank_files_reason(actor: Path) -> str | None:
    from . import verl

    try:
        files = verl.rank_files(actor)
    except RelexError as error:
        return str(error)
    for file in files:
        if not _zip_is_whole(file):
            return f"{file.name} is not whole yet: still being written?"
    return None


def _zip_is_whole(file: Path) -> bool:
    """A torch.save archive ends with its zip directory: a file still being written has none yet."""
    try:
        with open(file, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65_557))  # the end record, with a comment of at most 64 kB
            return b"PK\x05\x06" in handle.read()
    except OSError:
        return False


def _starts_with(file: Path, magic: bytes) -> bool:
    try:
        with open(file, "rb") as handle:
            return handle.read(len(magic)) == magic
    except OSError:
        return False


def _size(file: Path) -> int:
    try:
        return file.stat().st_size
    except OSError:
        return -1


def _uses_trainer_state(run_folder: Path) -> bool:
    try:
        return any((Path(entry.path) / TRAINER_STATE).is_file() for entry in os.scandir(run_folder)
                   if entry.is_dir())
    except OSError:
        return False


def _check_trainer_state(folder: Path, step: int) -> None:
    state_path = folder / TRAINER_STATE
    if not state_path.is_file():
        return
    try:
        recorded = json.loads(state_path.read_text()).get("global_step")
    except (OSError, ValueError, AttributeError) as error:
        raise RelexError(f"unreadable trainer_state.json ({error})", path=state_path) from None
    if recorded is not None and int(recorded) != step:
        raise RelexError(f"folder name says step {step} but trainer_state.json says global_step {recorded}",
                         path=state_path)


# ------------------------------------------------------------------ one run folder

def _scan_folder(root: Path, prefer: str, notes: list) -> list[Checkpoint]:
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError as error:
        raise RelexError(f"cannot list folder ({error.strerror or error})", path=root) from None
    found = []  # (step, folder, subfolders)
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
            found.append((int(match.group(1)), Path(entry.path), subfolders))
            break
    _reject_duplicates([Checkpoint(step, folder) for step, folder, _ in found])
    found.sort(key=lambda item: item[0])
    uses_trainer_state = any((folder / TRAINER_STATE).is_file() for _, folder, _ in found)
    reasons = [incomplete_reason(folder, run_folder=root, prefer=prefer, uses_trainer_state=uses_trainer_state)
               for _, folder, _ in found]
    finished = [index for index, reason in enumerate(reasons) if reason is None]
    last_finished = finished[-1] if finished else -1
    checkpoints, both = [], []
    for index, ((step, folder, subfolders), reason) in enumerate(zip(found, reasons)):
        if reason is not None:
            if index < last_finished:
                raise RelexError(f"unfinished checkpoint before finished ones ({reason})", path=folder)
            notes.append(f"skipped {folder.name}: {reason}")
            continue
        _check_trainer_state(folder, step)
        checkpoint, has_both = _choose(folder, subfolders, prefer, step)
        checkpoints.append(checkpoint)
        if has_both:
            both.append(step)
    if both:
        other = "HF copies (--prefer native reads the FSDP/DCP shards)" if prefer == "hf" else \
            "FSDP/DCP shards, not the HF copies beside them (--prefer hf reads those)"
        notes.append(f"{len(both)} checkpoint(s) hold both; reading the {other}")
    return checkpoints


def _read_manifest(manifest: Path, prefer: str) -> list[Checkpoint]:
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
        checkpoints.append(_at(step, location, prefer))
    return checkpoints


def _at(step: int, location: Path, prefer: str) -> Checkpoint:
    """The checkpoint at an explicit path (a manifest entry, the base): a weights file or folder."""
    from .reader import detect_format

    if not location.is_dir():
        return Checkpoint(step, location, detect_format(location))
    return _choose(location, ("", "actor", "actor/huggingface", "pytorch_model_fsdp_0", "policy/weights"), prefer,
                   step)[0]


def _reject_duplicates(checkpoints: list[Checkpoint]) -> None:
    seen = {}
    for checkpoint in checkpoints:
        if checkpoint.step in seen:
            raise RelexError(f"duplicate step {checkpoint.step}, also at {seen[checkpoint.step]}",
                             path=checkpoint.path)
        seen[checkpoint.step] = checkpoint.path


def _phase(source: Path, prefer: str, notes: list) -> list[Checkpoint]:
    if not source.exists():
        raise RelexError("no such run folder or manifest", path=source)
    checkpoints = _read_manifest(source, prefer) if source.is_file() else _scan_folder(source, prefer, notes)
    if not checkpoints:
        raise RelexError("no checkpoints found (expected checkpoint-N, global_step_N, global_stepN_hf, "
                         "step_N/step-N folders, or a manifest)", path=source)
    _reject_duplicates(checkpoints)
    return sorted(checkpoints, key=lambda checkpoint: checkpoint.step)


# ------------------------------------------------------------------ the run

def open_run(source, base=None, prefer: str = "native") -> Run:
    """Discover a run from a folder of checkpoints or a manifest (.csv/.json of step,path).

    source: one folder or manifest, or a list of them for a job resumed into new output
        folders (phases); steps must follow on across them without overlap.
    base: overrides the base checkpoint; otherwise the step-0 checkpoint of the first folder.
    prefer: "native" reads the trainer's own shards (verl FSDP, DCP) where a checkpoint also
        holds HF weights; "hf" reads the HF copies.
    """
    if prefer not in PREFER:
        raise RelexError(f"unknown --prefer '{prefer}' (use native or hf)")
    sources = [Path(item).expanduser() for item in (source if isinstance(source, (list, tuple)) else [source])]
    if not sources:
        raise RelexError("no run folder given")
    notes, phases = [], []
    for path in sources:
        phases.append((path, _phase(path, prefer, notes)))
    for (earlier, before), (later, after) in zip(phases, phases[1:]):
        if after[0].step <= before[-1].step:
            raise RelexError(f"steps overlap: {earlier} ends at step {before[-1].step} but {later} starts at step "
                             f"{after[0].step}; the phases of a run must follow on", path=later)
    checkpoints = [checkpoint for _, phase in phases for checkpoint in phase]
    _reject_duplicates(checkpoints)
    if base is not None:
        base_path = Path(base).expanduser()
        if not base_path.exists():
            raise RelexError("base checkpoint does not exist", path=base_path)
        base_checkpoint = _at(0, base_path, prefer)
        checkpoints = [checkpoint for checkpoint in checkpoints if checkpoint.step != 0]
    elif checkpoints[0].step == 0:
        base_checkpoint, checkpoints = checkpoints[0], checkpoints[1:]
    else:
        raise RelexError("run has no step-0 checkpoint; pass the base with --base", path=sources[0])
    if len(checkpoints) < 2:  # a trajectory direction and a line need two points at least
        found = f"only one checkpoint (step {checkpoints[0].step})" if checkpoints else "no checkpoint"
        raise RelexError(f"run has {found} after the base; at least two are needed", path=sources[0])
    run = Run(source=sources[0], base=base_checkpoint, checkpoints=tuple(checkpoints), sources=tuple(sources),
              notes=notes)
    notes[:0] = source_notes(run)
    return run


def source_notes(run: Run) -> list[str]:
    """What was read, in which dtype, when that is not plainly HF weights: FSDP shards, DCP, several phases."""
    formats = {checkpoint.format for checkpoint in run.checkpoints}
    notes = []
    if formats & set(NATIVE_FORMATS) or len(formats) > 1:
        described = []
        for fmt in sorted(formats):
            newest = next(checkpoint for checkpoint in reversed(run.checkpoints) if checkpoint.format == fmt)
            steps = [checkpoint.step for checkpoint in run.checkpoints if checkpoint.format == fmt]
            described.append(f"{_what(newest.path)} at {len(steps)} step(s) {steps[0]}–{steps[-1]}")
        notes.append(f"reading {' and '.join(described)}; base {run.base.path}: {_what(run.base.path)}")
    if len(run.sources) > 1:
        notes.append(f"one run over {len(run.sources)} folders: steps {run.steps[0]}–{run.steps[-1]}")
    return notes


def _what(location: Path) -> str:
    """'float32 verl FSDP shards (world size 3)': the stored dtype and the format of one checkpoint."""
    from .reader import open_reader

    with open_reader(location) as reader:
        return f"{'/'.join(reader.source_dtypes) or 'non-floating'} {reader.description}"
