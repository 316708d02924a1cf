"""DataFrames the dashboard pages draw, built on RunGram and WindowFit (no maths of their own).

Everything here is a small reshaping of what relex_core already computes: a pivot, a
median, a concatenation over windows, or one of DESIGN.md's Gram identities read off the
diagonal. The pages only turn these frames into charts.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from relex_core.analysis import WindowFit
from relex_core.errors import RelexError
from relex_core.gram import RunGram
from relex_core.io.discover import Run
from relex_core.io.reader import weight_files
from relex_core.options import fit_name

# --------------------------------------------------------------------------- windows


def default_window(steps) -> tuple[int, int]:
    """First half of the checkpoints (at least two), so the rest are held out for backtests."""
    steps = [int(step) for step in steps]
    end = max(2, math.ceil(len(steps) / 2))
    return steps[0], steps[min(end, len(steps)) - 1]


def clamp_window(window, steps) -> tuple[int, int]:
    """A (first, last) window snapped to the run's checkpoints; the default if it no longer fits."""
    steps = [int(step) for step in steps]
    if window is None:
        return default_window(steps)
    first = min((step for step in steps if step >= window[0]), default=None)
    last = max((step for step in steps if step <= window[1]), default=None)
    if first is None or last is None or sum(first <= step <= last for step in steps) < 2:
        return default_window(steps)
    return first, last



# --------------------------------------------------------------------------- overview


def weights_on_disk(run: Run) -> int:
    """Bytes of the weight files of the base and every checkpoint."""
    total = 0
    for checkpoint in (run.base, *run.checkpoints):
        _, files, _ = weight_files(checkpoint.path)
        total += sum(file.stat().st_size for file in files)
    return total


def run_summary(run_gram: RunGram) -> dict:
    """Headline facts of a run: parameters, tensors, dtypes, checkpoints, steps, bytes on disk."""
    run = run_gram.run
    return {"source": str(run.source), "base": str(run.base.path), "parameters": int(run_gram.numels.sum()),
            "tensors": len(run_gram.names), "dtypes": ", ".join(sorted(set(run_gram.dtypes))),
            "checkpoints": len(run_gram.steps), "first_step": int(run_gram.steps[0]),
            "last_step": int(run_gram.steps[-1]), "disk_bytes": weights_on_disk(run),
            "tied": dict(run_gram.tied), "notes": list(run_gram.notes)}


def trainer_state_path(run: Run) -> Path | None:
    """trainer_state.json of the last checkpoint (beside its weights or up to two folders above)."""
    folder = run.checkpoints[-1].path
    folder = folder if folder.is_dir() else folder.parent
    for candidate in (folder, *list(folder.parents)[:2]):
        if (candidate / "trainer_state.json").is_file():
            return candidate / "trainer_state.json"
    return None


def trainer_metrics(run: Run) -> pd.DataFrame:
    """The last checkpoint's log_history as a long table. Columns: step, metric, value.

    Empty when there is no trainer_state.json or it logs nothing; every numeric entry with
    a step is kept (rewards, losses, learning rate, ...), booleans and text are not.
    """
    columns = ["step", "metric", "value"]
    path = trainer_state_path(run)
    if path is None:
        return pd.DataFrame(columns=columns)
    try:
        history = json.loads(path.read_text()).get("log_history") or []
    except (OSError, ValueError, AttributeError) as error:
        raise RelexError(f"unreadable trainer_state.json ({error})", path=path) from None
    records = [(int(entry["step"]), key, float(value)) for entry in history
               if isinstance(entry, dict) and isinstance(entry.get("step"), (int, float))
               for key, value in entry.items()
               if key not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool)]
    return pd.DataFrame.from_records(records, columns=columns)


def reward_names(metrics: pd.DataFrame) -> list[str]:
    """The logged metrics that are rewards, held-out ones first (the verifier scores held-out problems)."""
    names = [name for name in dict.fromkeys(metrics["metric"]) if "reward" in name]
    return sorted(names, key=lambda name: not any(word in name for word in ("heldout", "held_out", "eval")))


def update_norm_frame(run_gram: RunGram) -> pd.DataFrame:
    """Whole-model distance from the base per checkpoint: ‖θ_t − θ_0‖ = sqrt(Σ_tensors G[t, t]).

    Columns: step (the base's 0 first), update_norm, relative_update (÷ ‖θ_0‖ of the analysed tensors).
    """
    squares = np.einsum("ntt->t", run_gram.gram)
    norm = np.concatenate([[0.0], np.sqrt(squares)])
    return pd.DataFrame({"step": np.concatenate([[0], run_gram.steps]).astype(np.int64), "update_norm": norm,
                         "relative_update": norm / np.sqrt(run_gram.base_sq_norm.sum())})


# --------------------------------------------------------------------------- spectra and grids


def module_spectrum_frame(spectrum: pd.DataFrame, relative: bool = False) -> pd.DataFrame:
    """Median trajectory singular value per module type and index, from `spectrum_frame(fit)`.

    relative: divide each tensor's σ_k by its σ_1 first, so module types of different sizes
    compare by shape. Columns: module, index, sigma (the median), tensors (how many).
    """
    frame = spectrum.copy()
    if relative:
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["sigma"] = frame["sigma"] / frame.groupby("tensor", sort=False)["sigma"].transform("max")
    grouped = frame.groupby(["module", "index"], sort=False)["sigma"]
    result = pd.DataFrame({"sigma": grouped.median(), "tensors": grouped.size()}).reset_index()
    order = {module: index for index, module in enumerate(module_order(result["module"]))}
    return result.sort_values(["module", "index"], key=lambda column: column.map(order) if column.name == "module"
                              else column, kind="stable", ignore_index=True)


# Module types in the order a transformer block runs them; others follow in file order.
MODULE_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "c_attn", "attn_c_proj", "q_norm", "k_norm",
                "gate_proj", "up_proj", "down_proj", "c_fc", "mlp_c_proj", "input_layernorm",
                "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm", "ln_1",
                "ln_2", "embed_tokens", "position_embed", "final_norm", "lm_head")


def module_order(modules) -> list:
    """Distinct module types, block order first (MODULE_ORDER), then the rest as they come."""
    distinct = list(dict.fromkeys(modules))
    rank = {module: index for index, module in enumerate(MODULE_ORDER)}
    return sorted(distinct, key=lambda module: (rank.get(module, len(rank)), distinct.index(module)))


@dataclass(frozen=True)
class Grid:
    """A layer × module table of one per-tensor figure, with the tensor behind each cell (for hover)."""
    values: pd.DataFrame
    tensors: pd.DataFrame


def layer_module_grid(tensors: pd.DataFrame, column: str) -> Grid:
    """Pivot a per-tensor column of `fit.tensors_frame()` to layers × module types.

    One cell is the module's *weight* tensor (biases live in the per-tensor views); columns follow
    the block's order (q, k, v, o, gate, up, down, norms). Where two weight tensors of a layer
    share a module type ('other'), their names inside the layer tell them apart.
    """
    rows = tensors[tensors["layer"].notna() & tensors["tensor"].str.endswith(".weight")].copy()
    rows["layer"] = rows["layer"].astype(int)
    column_label = rows["module"].astype(str)
    clash = rows.duplicated(["layer", "module"], keep=False)
    local_names = [name.split(f".{layer}.", 1)[-1].removesuffix(".weight")
                   for name, layer in zip(rows["tensor"], rows["layer"])]
    rows["column"] = np.where(clash, local_names, column_label)
    order = module_order(rows["column"])
    values = rows.pivot(index="layer", columns="column", values=column).reindex(columns=order)
    names = rows.pivot(index="layer", columns="column", values="tensor").reindex(columns=order)
    return Grid(values=values, tensors=names)


# --------------------------------------------------------------------------- trajectory


def trend_frame(fit: WindowFit, tensor: str, target_step: int, component: int = 1, points: int = 60) -> pd.DataFrame:
    """The fitted coefficient curve of one tensor: over the window, then extrapolated to target_step.

    Columns: step, fitted (c_k on the fitted line or parabola), part ('window' or 'extrapolation';
    the window's last step is in both, so the two pieces join).
    """
    row = fit.run_gram.names.index(tensor)
    first, last = float(fit.window_steps[0]), float(fit.window_steps[-1])
    pieces = [("window", np.linspace(first, last, points))]
    if target_step > last:
        pieces.append(("extrapolation", np.linspace(last, float(target_step), points)))
    frames = [pd.DataFrame({"step": grid, "fitted": fit.trend.predict(grid)[row, component - 1], "part": part})
              for part, grid in pieces]
    return pd.concat(frames, ignore_index=True)


def predicted_coefficient(fit: WindowFit, tensor: str, target_step: int, component: int = 1) -> float:
    """p_k(target_step): the coefficient the fit predicts (0 for a tensor that never moved)."""
    return float(fit.projections([target_step])[fit.run_gram.names.index(tensor), component - 1, 0])


# --------------------------------------------------------------------------- export



def default_export_name(run_gram: RunGram, window, rank: int, degree: int) -> str:
    """A folder name that says what was exported: <run>-w<A>-<B>-r<k>[-<fit> unless linear]."""
    name = Path(run_gram.run.source).name or "run"
    return f"{name}-w{window[0]}-{window[1]}-r{rank}" + (f"-{fit_name(degree)}" if degree != 1 else "")


def export_results_frame(results) -> pd.DataFrame:
    """One row per exported folder (export.ExportResult). Columns: folder, target_step, method, files,
    size_mib, rounding_loss (share of ‖δ̂‖ erased by rounding to the output dtype)."""
    return pd.DataFrame({"folder": [str(result.path) for result in results],
                         "target_step": [int(result.target_step) for result in results],
                         "method": [result.provenance.get("method", "") for result in results],
                         "files": [len(result.files) for result in results],
                         "size_mib": [result.total_bytes / 2**20 for result in results],
                         "rounding_loss": [float(result.rounding_loss) for result in results]})
