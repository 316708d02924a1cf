"""Export extrapolated (or reconstructed) checkpoints as HF folders.

The export is the weighted sum of docs/design.md, tensor by tensor and chunk by chunk:

    θ̂(s) = θ_0 + δ̂(s),   δ̂(s) = Σ_{t∈W} w_t (θ_t − θ_0)

with the weights w from the Gram alone (`WindowFit.weights` / `reconstruction_weights`). Each
window checkpoint with a weight is read once, in row chunks (relex_core.stream), and every
target step is computed from the same chunk, so memory stays at a few chunks whatever the
model size or the number of targets. The sum is done in float64 and rounded once, correctly
(relex_core.rounding), to the output dtype when it is written. That last rounding can erase
part of a small update; how much is measured on the way (`rounding_loss`).

    fit = WindowFit(compute_gram(open_run("runs/grpo")), window="0:400", rank=1)
    extrapolate(fit, [600, 800], "exports/grpo")   # exports/grpo/step-600, exports/grpo/step-800
"""

import functools
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from . import __version__, threads
from .analysis import WindowFit
from .errors import RelexError
from .io.dtypes import FLOAT_DTYPES, SAFETENSORS_CODES, dtype_name
from .io.reader import CheckpointReader
from .io.writer import ShardedWriter, TensorSpec, atomic_folder
from .options import parse_target_steps
from .rounding import round_to
from .stream import (ByteProgress, ReadAhead, RunLayout, WorkItem, budget_bytes, chunk_bytes, float64_blocks,
                     locate_non_finite, open_layout, plan_chunks, read_rows, stored_bytes)

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
          "fp32": torch.float32, "float32": torch.float32}
DEFAULT_SHARD_SIZE = 5 * 10**9
# Copied beside the weights, from the last window checkpoint (else the base), so the folder loads as is;
# for a native checkpoint (verl FSDP shards, DCP) from the HF folder beside it (verl's actor/huggingface).
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer*.json", "vocab*", "merges.txt",
              "special_tokens_map.json", "added_tokens.json", "chat_template*", "*.model")
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


@dataclass(frozen=True)
class ExportResult:
    """One exported checkpoint folder.

    files: every file in the folder; total_bytes: their size; rounding_loss: share of ‖δ̂‖ erased
    by rounding to the output dtype (NaN if nothing moved); provenance: the content of relex.json.
    """
    path: Path
    target_step: int
    files: list
    total_bytes: int
    rounding_loss: float
    provenance: dict


def parse_size(text) -> int | None:
    """Bytes from '5GB', '500MB', '2GiB' or a plain number (HF's units: GB = 10⁹, GiB = 2³⁰); None: one file."""
    if text is None:
        return None
    if isinstance(text, (int, np.integer)):
        size = int(text)
    else:
        cleaned = str(text).strip().upper().replace(" ", "")
        number = cleaned.rstrip("KMGTIB")
        unit = cleaned[len(number):]
        try:
            size = int(float(number) * _SIZE_UNITS[unit])
        except (KeyError, ValueError):
            raise RelexError(f"shard size '{text}' must look like 5GB, 500MB or 2GiB") from None
    if size <= 0:
        raise RelexError(f"shard size '{text}' must be positive")
    return size


def parse_dtype(dtype) -> torch.dtype | None:
    """None (keep each tensor's base dtype), a torch float dtype, or bf16 / fp16 / fp32."""
    if dtype is None or dtype in (torch.bfloat16, torch.float16, torch.float32):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise RelexError(f"output dtype '{dtype}' must be bf16, fp16 or fp32")


@dataclass(frozen=True)
class ExportOptions:
    """How an export is written, checked once: see `extrapolate` for each field."""
    dtype: torch.dtype | None = None
    shard_size: int | None = DEFAULT_SHARD_SIZE
    force: bool = False
    progress: object = True
    chunk_mb: float = 256

    @classmethod
    def parse(cls, *, dtype=None, shard_size=DEFAULT_SHARD_SIZE, force: bool = False, progress=True,
              chunk_mb: float = 256) -> "ExportOptions":
        """From the user's words: dtype 'bf16' / 'fp16' / 'fp32', shard_size '5GB', ..."""
        return cls(parse_dtype(dtype), parse_size(shard_size), bool(force), progress, float(chunk_mb))


@dataclass(frozen=True)
class _Targets:
    """What to write: weights (n_tensors, window, T) of the window checkpoints, per target step."""
    weights: np.ndarray
    steps: list
    labels: list      # the method and step of each target, for relex.json
    subfolders: list  # "" for a single target written to the destination itself


def extrapolate(fit: WindowFit, target_steps, out, *, method: str = "relex", dtype=None,
                shard_size=DEFAULT_SHARD_SIZE, force: bool = False, progress=True,
                chunk_mb: float = 256, engine=None) -> list[ExportResult]:
    """Write θ̂(s) for each target step s as an HF checkpoint folder.

    Args:
        fit: the window fit (rank, the trend, fit_last and refit_every come from it).
        target_steps: one step or several (`options.parse_target_steps`); several give one sub-folder
            `step-S` each inside `out`, in ascending order.
        out: destination folder; refused if it exists (unless force) or lies inside the run.
        method: 'relex' (the fitted trend) or 'linear' (θ_0 + (s / s_L)(θ_L − θ_0)).
        dtype: output dtype of floating tensors (None keeps each tensor's base dtype).
        shard_size: bytes per safetensors shard (int or '5GB').
        progress: True (tqdm bar on stderr), False, or a callable(fraction, message) told the bytes read.
        chunk_mb: planned float64 working set of one chunk (peak memory is a small multiple of it).
        engine: where the work items run: None (this process) or an engine with `export_items`
            (`relex_core.engines.RayEngine`); the folder is the same, byte for byte.
    """
    options = ExportOptions.parse(dtype=dtype, shard_size=shard_size, force=force, progress=progress,
                                  chunk_mb=chunk_mb)
    steps = parse_target_steps(target_steps)
    targets = _Targets(weights=fit.weights(steps, method), steps=steps,
                       labels=[{"method": method, "target_step": step} for step in steps],
                       subfolders=[""] if len(steps) == 1 else [f"step-{step}" for step in steps])
    return _export(fit, targets, out, options, engine)


def reconstruct(fit: WindowFit, step: int, out, *, dtype=None, shard_size=DEFAULT_SHARD_SIZE,
                force: bool = False, progress=True, chunk_mb: float = 256, engine=None) -> ExportResult:
    """Write the rank-k projection of an observed checkpoint onto the window's subspace:
    θ_0 + Σ_k c_k(step) v_k. Comparing it with the real checkpoint shows what rank k leaves out."""
    options = ExportOptions.parse(dtype=dtype, shard_size=shard_size, force=force, progress=progress,
                                  chunk_mb=chunk_mb)
    targets = _Targets(weights=fit.reconstruction_weights(int(step))[:, :, None], steps=[int(step)],
                       labels=[{"method": "reconstruct", "target_step": int(step)}], subfolders=[""])
    return _export(fit, targets, out, options, engine)[0]


# ---------------------------------------------------------------- the pass


@dataclass(frozen=True)
class _Plan:
    """How one output tensor is made: a weighted sum (row of the weights, tensor whose data is read) or a copy."""
    name: str
    spec: TensorSpec
    weight_row: int | None  # None: a copy of θ_0
    source: str             # the tensor read: itself, or the embedding for a tied lm_head


def _plan_tensors(fit: WindowFit, base: CheckpointReader, dtype: torch.dtype | None) -> list[_Plan]:
    """Every tensor of the base, in its order: analysed ones get weights, the others are copied."""
    run_gram = fit.run_gram
    rows = {name: row for row, name in enumerate(run_gram.names)}
    plans = []
    for name, info in base.tensors.items():
        stored = info.dtype if info.dtype is not None else base.read(name, 0, min(1, info.rows)).dtype
        if stored not in SAFETENSORS_CODES:
            raise RelexError(f"cannot write dtype {dtype_name(stored)} to safetensors", path=info.file, tensor=name)
        source = run_gram.tied.get(name, name)
        floating = stored in FLOAT_DTYPES
        if floating and source not in rows:
            raise RelexError("tensor is not in the run's Gram (stale cache? rerun with --no-cache)",
                             path=info.file, tensor=name)
        output = (dtype or stored) if floating else stored
        plans.append(_Plan(name, TensorSpec(name, tuple(info.shape), output),
                           rows[source] if floating else None, source))
    return plans


def _export(fit: WindowFit, targets: _Targets, out, options: ExportOptions, engine=None) -> list[ExportResult]:
    run = fit.run_gram.run
    options = _native_default_dtype(run, options)
    destination = Path(out).expanduser().absolute()
    run.refuse_inside(destination, "output folder")
    for root in run.roots():
        if destination.resolve() in root.parents:  # replacing it (--force) would delete the run
            raise RelexError(f"output folder holds the run's checkpoints ({root})", path=destination)
    # Only the window checkpoints with a weight are read ('linear' needs the last one alone).
    used = np.flatnonzero(np.abs(targets.weights).sum(axis=(0, 2)) > 0)
    with open_layout(run, checkpoints=[fit.window_positions[index] for index in used]) as layout, \
            atomic_folder(destination, force=options.force) as temporary:
        folders = [temporary / sub if sub else temporary for sub in targets.subfolders]
        for folder in folders:
            folder.mkdir(exist_ok=True)
        provenance = _provenance(fit, targets, options.dtype)
        losses = _write_weights(fit, layout, targets.weights[:, used, :], folders, provenance, options, engine)
        results = []
        for folder, sub, step, record, loss in zip(folders, targets.subfolders, targets.steps, provenance, losses):
            record["rounding_loss"] = float(loss) if np.isfinite(loss) else None
            _copy_side_files(fit, folder, options.dtype)
            (folder / "relex.json").write_text(json.dumps(record, indent=2) + "\n")
            final = destination / sub if sub else destination
            files = sorted(path.relative_to(folder) for path in folder.iterdir() if path.is_file())
            total = sum((folder / name).stat().st_size for name in files)
            results.append(ExportResult(final, step, [final / name for name in files], total, loss, record))
    return results


@dataclass(frozen=True)
class ExportJob:
    """Everything an export work item needs besides the layout; small and picklable (a Ray task gets it).

    plans: every output tensor, in base order; weights: (n_tensors, S, T) for the S checkpoints of
    the layout and T targets; writers: one `ShardedWriter` per target, its shards already laid out.
    """
    plans: tuple
    weights: np.ndarray
    writers: tuple

    @functools.cached_property
    def by_name(self) -> dict:
        return {plan.name: plan for plan in self.plans}

    @property
    def n_targets(self) -> int:
        return self.weights.shape[2]


class ItemLoss(NamedTuple):
    """What one export work item adds to the rounding loss, per target: Σ erased², Σ δ̂²."""
    erased_sq: np.ndarray
    update_sq: np.ndarray


def export_items(job: ExportJob, layout: RunLayout, chunk_mb: float) -> list[WorkItem]:
    """Row ranges of every output tensor in base order, sized so that θ_0 and S deltas in float64 for
    two chunks plus about 3 rows per target would fit chunk_mb. What is held is less: two read buffers
    as stored (bf16: 2 bytes an element), one output buffer per target in the output dtype, a
    cache-sized float64 block per core, and δ̂ in float64 for each target with its rounding
    temporaries (the "3 rows per target")."""
    return plan_chunks(layout, budget_bytes(chunk_mb), 8 * (2 * (len(layout.readers) + 1) + 3 * job.n_targets),
                       names=[plan.name for plan in job.plans])


def item_read_bytes(job: ExportJob, layout: RunLayout, item: WorkItem) -> int:
    """Bytes an item reads: a copy reads θ_0 alone (in a dtype relex may not analyse), a sum every checkpoint."""
    plan = job.by_name[item.tensor]
    if plan.weight_row is None:
        return (item.stop - item.start) * layout.base.tensors[plan.name].row_numel * plan.spec.dtype.itemsize
    return stored_bytes(layout, WorkItem(plan.source, item.start, item.stop))


def read_item(job: ExportJob, layout: RunLayout, item: WorkItem, buffer: torch.Tensor | None = None) -> torch.Tensor:
    """θ_0's rows for a copy; θ_0 and every checkpoint's rows (`read_rows`) for a sum."""
    plan = job.by_name[item.tensor]
    if plan.weight_row is None:
        return layout.base.read(plan.source, item.start, item.stop)
    return read_rows(layout, WorkItem(plan.source, item.start, item.stop), out=buffer)


def write_item(job: ExportJob, layout: RunLayout, item: WorkItem, rows: torch.Tensor, *, outputs=None,
               pool: ThreadPoolExecutor | None = None) -> ItemLoss:
    """Compute one item's rows of every target from its `read_item` rows and write them in place.

    The unit of work of the export, wherever it runs: writing the same rows twice gives the same
    files, so a retried item is harmless. outputs: reusable uint8 buffers, one per target.
    """
    plan = job.by_name[item.tensor]
    if plan.weight_row is None:
        return _write_copy(plan, item, rows, job.writers)
    numel = rows.shape[1]
    if outputs is None:
        outputs = [torch.empty(numel * plan.spec.dtype.itemsize, dtype=torch.uint8) for _ in job.writers]
    loss = _write_sum(plan, item, rows, job.weights[plan.weight_row], outputs, job.writers, pool)
    _check_finite(layout, plan, loss)
    return loss


def export_item(job: ExportJob, layout: RunLayout, item: WorkItem, pool: ThreadPoolExecutor | None = None) -> ItemLoss:
    """`read_item` then `write_item`: an item on its own, as another process runs it."""
    return write_item(job, layout, item, read_item(job, layout, item), pool=pool)


def add_losses(losses, n_targets: int) -> ItemLoss:
    """The items' losses added in item order, so that the sum does not depend on who computed which."""
    erased_sq, update_sq = np.zeros(n_targets), np.zeros(n_targets)
    for loss in losses:
        erased_sq += loss.erased_sq
        update_sq += loss.update_sq
    return ItemLoss(erased_sq, update_sq)


def local_export(job: ExportJob, layout: RunLayout, items, progress) -> list[ItemLoss]:
    """Every item in this process: one reading thread ahead of `threads.cores()` summing threads."""
    summed = [WorkItem(job.by_name[name].source, start, stop) for name, start, stop in items
              if job.by_name[name].weight_row is not None]
    output_bytes = max(((stop - start) * layout.base.tensors[name].row_numel * job.by_name[name].spec.dtype.itemsize
                        for name, start, stop in items if job.by_name[name].weight_row is not None), default=0)
    outputs = [torch.empty(output_bytes, dtype=torch.uint8) for _ in range(job.n_targets)]
    losses = []
    with ThreadPoolExecutor(threads.cores(), thread_name_prefix="relex-export") as pool, \
            ByteProgress(sum(item_read_bytes(job, layout, item) for item in items), "relex export", progress) as bar, \
            ReadAhead(items, lambda item, buffer: read_item(job, layout, item, buffer),
                      chunk_bytes(layout, summed)) as chunks:
        for item, rows in chunks:
            losses.append(write_item(job, layout, item, rows, outputs=outputs, pool=pool))
            bar.advance(item_read_bytes(job, layout, item))
    return losses


def _write_weights(fit, layout: RunLayout, weights: np.ndarray, folders, provenance, options: ExportOptions,
                   engine=None) -> np.ndarray:
    """Lay out one ShardedWriter per target, then run every item (here, or on `engine`); returns the
    rounding loss per target. weights: (n_tensors, S, T) for the S checkpoints of the layout and T targets.
    """
    threads.configure()
    plans = _plan_tensors(fit, layout.base, options.dtype)
    writers = [ShardedWriter(folder, [plan.spec for plan in plans], shard_size=options.shard_size,
                             metadata=_header_metadata(record)) for folder, record in zip(folders, provenance)]
    job = ExportJob(tuple(plans), weights, tuple(writers))
    items = export_items(job, layout, options.chunk_mb)
    run_items = getattr(engine, "export_items", None) or local_export
    erased_sq, update_sq = add_losses(run_items(job, layout, items, options.progress), job.n_targets)
    for writer in writers:
        writer.finish()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(erased_sq / update_sq)


# Columns of one part of `_write_sum`: a fixed size, not a share per core, so an item's loss sums
# the same way on any machine (a Ray export's relex.json equals the local one's).
PART_COLUMNS = 1 << 17


def _write_sum(plan: _Plan, item: WorkItem, rows: torch.Tensor, weights: np.ndarray, outputs, writers,
               pool: ThreadPoolExecutor | None) -> ItemLoss:
    """θ̂ = θ_0 + Σ_t w_t Δ_t for every target, rounded once, written to every target's shards.

    rows: θ_0 then the window checkpoints, as stored (`read_rows`); weights: (S, T) for this tensor.
    The columns are split into parts of PART_COLUMNS, summed on the pool's threads: torch and numpy
    release the GIL, so the parts are summed side by side while the reading thread fills the other buffer.
    """
    numel = rows.shape[1]
    targets = [output[:numel * plan.spec.dtype.itemsize].view(plan.spec.dtype) for output in outputs]
    # δ̂ = Σ w_t θ_t − (Σw) θ_0 is one product with the stored values, without forming each Δ_t
    # (that subtraction cost as much as the product). Its float64 error grows by ‖θ‖/‖δ̂‖ (~10³ for
    # RL updates: ~1e-13 relative), far below what rounding to the output dtype takes (bf16: ~1e-3).
    weights = torch.from_numpy(weights.T)  # (S, T)
    combined = torch.cat([-weights.sum(dim=1, keepdim=True), weights], dim=1)  # (S, T + 1)
    bounds = [(start, min(numel, start + PART_COLUMNS)) for start in range(0, numel, PART_COLUMNS)]
    arguments = [(rows[:, start:stop], combined, [target[start:stop] for target in targets]) for start, stop in bounds]
    parts = ([pool.submit(_sum_columns, *part) for part in arguments] if pool is not None and len(arguments) > 1
             else None)
    erased_sq, update_sq = np.zeros(len(targets)), np.zeros(len(targets))
    for number, part in enumerate(arguments):  # in column order, so the sums of squares do not depend on timing
        erased, update = parts[number].result() if parts is not None else _sum_columns(*part)
        erased_sq += erased
        update_sq += update
    for output, writer in zip(targets, writers):
        writer.write_rows(plan.name, item.start, output)
    return ItemLoss(erased_sq, update_sq)


def _sum_columns(rows: torch.Tensor, combined: torch.Tensor, targets) -> tuple[np.ndarray, np.ndarray]:
    """One column range of `_write_sum`; returns Σ erased² and Σ δ̂² per target.

    combined: (S, T + 1), the weights of θ_0 and of each θ_t in δ̂. The product runs on
    cache-sized float64 blocks; θ_0 is added and the result rounded over the whole range at once
    (a dozen element-wise operations per small block would cost more in dispatch than in work).
    """
    numel, count = rows.shape[1], len(targets)
    updates = torch.empty((count, numel), dtype=torch.float64)
    for first, block in float64_blocks(rows):
        updates[:, first:first + block.shape[1]] = combined @ block
    base = rows[0].to(torch.float64)
    erased_sq, update_sq = np.zeros(count), np.zeros(count)
    for target, (update, output) in enumerate(zip(updates, targets)):
        update_sq[target] = float(torch.dot(update, update))
        exact = update.add_(base)  # θ̂ in float64
        rounded = round_to(exact, output.dtype)
        output.copy_(rounded)
        erased = rounded.to(torch.float64).sub_(exact)  # what rounding took from δ̂
        erased_sq[target] = float(torch.dot(erased, erased))
    return erased_sq, update_sq


def _check_finite(layout: RunLayout, plan: _Plan, loss: ItemLoss) -> None:
    if not np.isfinite(loss.update_sq).all():
        raise locate_non_finite(layout, plan.source)
    if not np.isfinite(loss.erased_sq).all():
        raise RelexError(f"values overflow the output dtype {dtype_name(plan.spec.dtype)}",
                         path=layout.base.tensors[plan.source].file, tensor=plan.name)


def _write_copy(plan: _Plan, item: WorkItem, base_rows: torch.Tensor, writers) -> ItemLoss:
    """A tensor without direction is θ_0; a change of float dtype still counts in the rounding loss."""
    rounded = round_to(base_rows, plan.spec.dtype) if base_rows.is_floating_point() else base_rows
    erased_sq = np.zeros(len(writers))
    for target, writer in enumerate(writers):
        writer.write_rows(plan.name, item.start, rounded)
        if plan.spec.dtype.is_floating_point and plan.spec.dtype != base_rows.dtype:
            erased_sq[target] = float((rounded.to(torch.float64) - base_rows.to(torch.float64)).square().sum())
    return ItemLoss(erased_sq, np.zeros(len(writers)))


# ---------------------------------------------------------------- beside the weights


def _provenance(fit: WindowFit, targets: _Targets, dtype) -> list[dict]:
    """relex.json for each target: where it comes from, how it was fitted, and the whole-model backtest."""
    run_gram, weights = fit.run_gram, targets.weights
    backtest = fit.backtest_frame().to_dict(orient="records") if len(fit.target_positions) else []
    backtest = [{key: _plain(value) for key, value in row.items()} for row in backtest]
    numel = run_gram.numels.astype(np.float64)
    records = []
    for target, label in enumerate(targets.labels):
        # numel-weighted mean over tensors of w_t: how much each observed checkpoint counts
        model_weights = numel @ weights[:, :, target] / numel.sum()
        records.append({
            "relex_version": __version__, "run": str(run_gram.run.source.absolute()),
            "base": str(run_gram.run.base.path.absolute()), "window_steps": [int(step) for step in fit.window_steps],
            **label, "rank": fit.rank, "fit": fit.fit_name, "fit_last": fit.fit_last,
            "refit_every": fit.refit_every,
            "dtype": dtype_name(dtype) if dtype is not None else "base",
            "checkpoint_weights": {str(int(step)): float(weight) for step, weight in zip(fit.window_steps,
                                                                                          model_weights)},
            "backtest": backtest, "gram_fingerprint": run_gram.fingerprint or None})
    return records


def _plain(value):
    """JSON-safe scalar: numpy types to Python, NaN to null."""
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _header_metadata(record: dict) -> dict:
    """Key facts in every shard's safetensors header (strings only; `format` is what transformers checks)."""
    window = record["window_steps"]
    return {"format": "pt", "relex_version": record["relex_version"], "relex_method": record["method"],
            "relex_target_step": record["target_step"], "relex_window": f"{window[0]}:{window[-1]}",
            "relex_rank": record["rank"], "relex_fit": record["fit"], "relex_base": record["base"],
            "relex_run": record["run"]}


def _native_default_dtype(run, options: ExportOptions) -> ExportOptions:
    """With no --dtype, a base read from native shards (fp32 master weights) is written in the dtype
    its HF config names, as the model is published and loaded; an HF base keeps its stored dtypes."""
    if options.dtype is not None or not run.base.native:
        return options
    named = run.config().get("torch_dtype") or run.config().get("dtype")
    return replace(options, dtype=DTYPES[named]) if named in DTYPES else options


def _copy_side_files(fit: WindowFit, folder: Path, dtype) -> None:
    """config, generation config and tokenizer from the last window checkpoint, else from the base
    (each one's HF config folder first: verl keeps them in actor/huggingface beside the rank files)."""
    run = fit.run_gram.run
    sources = []
    for checkpoint in (run.checkpoints[fit.last_position], run.base):
        sources += [source for source in (checkpoint.config_dir, checkpoint.path)
                    if source is not None and source.is_dir() and source not in sources]
    copied = {}
    for pattern in SIDE_FILES:
        for source in sources:
            found = sorted(path for path in source.glob(pattern) if path.is_file())
            if found:
                for path in found:
                    shutil.copyfile(path, folder / path.name)
                    copied[path.name] = path
                break
    if dtype is not None and "config.json" in copied:  # say the new dtype, as save_pretrained would
        try:
            config = json.loads(copied["config.json"].read_text())
        except ValueError as error:
            raise RelexError(f"unreadable config.json ({error})", path=copied["config.json"]) from None
        name = dtype_name(dtype)
        config["torch_dtype"] = name
        if "dtype" in config:
            config["dtype"] = name
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
