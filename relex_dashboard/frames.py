"""DataFrames the dashboard pages draw, built on RunGram and WindowFit (no maths of their own).

Everything here is a small reshaping of what relex_core already computes: a pivot, a
median, a concatenation over windows, or one of DESIGN.md's Gram identities read off the
diagonal. The pages only turn these frames into charts.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from relex_core.analysis import WindowFit
from relex_core.errors import RelexError
from relex_core.gram import RunGram
from relex_core.io.discover import Run
from relex_core.io.reader import weight_files

# --------------------------------------------------------------------------- windows and targets

# The paper's regime: fit on the first fifth of the run, predict the rest.
DEFAULT_WINDOW_SHARE = 0.2
# A target farther past the window's end than this many window lengths needs a confirmation.
FAR_FACTOR = 20


def default_window(steps, minimum: int = 2) -> tuple[int, int]:
    """The first ~20% of the checkpoints (at least `minimum`), leaving at least one after it when it can."""
    steps = [int(step) for step in steps]
    size = max(minimum, round(DEFAULT_WINDOW_SHARE * len(steps)))
    size = min(size, max(minimum, len(steps) - 1), len(steps))
    return steps[0], steps[size - 1]


def clamp_window(window, steps, minimum: int = 2) -> tuple[int, int]:
    """A (first, last) window snapped to the run's checkpoints; the default if it no longer fits."""
    steps = [int(step) for step in steps]
    if window is None:
        return default_window(steps, minimum)
    first = min((step for step in steps if step >= window[0]), default=None)
    last = max((step for step in steps if step <= window[1]), default=None)
    if first is None or last is None or sum(first <= step <= last for step in steps) < minimum:
        return default_window(steps, minimum)
    return first, last


def window_size(window, steps) -> int:
    """How many of the run's checkpoints lie in the window (inclusive)."""
    return sum(window[0] <= int(step) <= window[1] for step in steps)


@dataclass(frozen=True)
class TargetCheck:
    """What each target step is for a window: a fitted point, a back-cast, or an extrapolation (far or not)."""
    fitted: list
    before: list
    far: list
    notes: list


def check_targets(target_steps, window) -> TargetCheck:
    """Sort target steps by what the fit does there, with one note per kind worth saying.

    fitted: inside the window (the fit's own points, not extrapolations); before: before the
    window (the trend followed backwards); far: more than FAR_FACTOR window lengths past its end.
    Notes are Markdown, the window in code (a bare "0:100:" would be drawn as an emoji).
    """
    first, last = int(window[0]), int(window[1])
    length = max(1, last - first)
    targets = [int(step) for step in target_steps]
    fitted = [step for step in targets if first <= step <= last]
    before = [step for step in targets if step < first]
    far = [step for step in targets if step - last > FAR_FACTOR * length]
    notes = []
    if fitted:
        notes.append(f"{_steps(fitted)} inside the window `{first}:{last}`: a fitted point, not an extrapolation.")
    if before:
        notes.append(f"{_steps(before)} before the window `{first}:{last}`: the fitted trend followed backwards.")
    if far:
        factor = (max(far) - last) / length
        notes.append(f"{_steps(far)} {factor:,.0f}× the window's length ({length:,} steps) past its end: far beyond "
                     f"anything the window saw (more than {FAR_FACTOR}×). Confirm to use it.")
    return TargetCheck(fitted=fitted, before=before, far=far, notes=notes)


def _steps(steps) -> str:
    return f"Step {steps[0]:,} lies" if len(steps) == 1 else f"Steps {', '.join(f'{step:,}' for step in steps)} lie"


def largest_weight(fit: WindowFit, target_steps, method: str = "relex") -> float:
    """max |w_t| over tensors, window checkpoints and targets: how far the export leans on extrapolation.

    The weights grow with the target's distance past the window; large weights of opposite signs
    amplify whatever noise the checkpoints carry.
    """
    return float(np.abs(fit.weights(list(target_steps), method)).max())


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


HELD_OUT_WORDS = {"heldout", "held", "eval", "test", "val", "validation"}


def is_held_out(name: str) -> bool:
    """Whether a logged metric is measured on held-out problems rather than on training rollouts."""
    return bool(HELD_OUT_WORDS & set(re.split(r"[^a-z]+", name.lower())))


def reward_names(metrics: pd.DataFrame) -> list[str]:
    """The logged metrics that are rewards, held-out ones first (the verifier scores held-out problems)."""
    names = [name for name in dict.fromkeys(metrics["metric"]) if "reward" in name]
    return sorted(names, key=lambda name: not is_held_out(name))


def update_norm_frame(run_gram: RunGram) -> pd.DataFrame:
    """Whole-model distance from the base per checkpoint: ‖θ_t − θ_0‖ = sqrt(Σ_tensors G[t, t]).

    Columns: step (the base's 0 first), update_norm, relative_update (÷ ‖θ_0‖ of the analysed tensors).
    """
    squares = np.einsum("ntt->t", run_gram.gram)
    norm = np.concatenate([[0.0], np.sqrt(squares)])
    return pd.DataFrame({"step": np.concatenate([[0], run_gram.steps]).astype(np.int64), "update_norm": norm,
                         "relative_update": norm / np.sqrt(run_gram.base_sq_norm.sum())})


def _interval_steps(run_gram: RunGram):
    """Each checkpoint's step and the step before it (the base's 0 for the first)."""
    steps = run_gram.steps.astype(np.int64)
    return steps, np.concatenate([[0], steps[:-1]])


def _interval_norms(gram: np.ndarray) -> np.ndarray:
    """‖Δ_t − Δ_{t−1}‖ for each checkpoint t from an (N, N) Gram, the base (Δ = 0) before the first."""
    diagonal = np.diag(gram)
    previous_sq = np.concatenate([[0.0], diagonal[:-1]])
    cross = np.concatenate([[0.0], np.diag(gram, k=-1)])
    return np.sqrt(np.clip(diagonal - 2 * cross + previous_sq, 0.0, None))  # rounding can dip below 0


def speed_frame(run_gram: RunGram) -> pd.DataFrame:
    """Whole-model speed per interval between consecutive checkpoints (base first), from the Gram:
    ‖θ_t − θ_{t−1}‖² = G[t, t] − 2 G[t, t−1] + G[t−1, t−1], summed over tensors (the base's Δ is 0).

    Columns: step (the interval's end), previous_step, step_norm (‖θ_t − θ_{t−1}‖), speed (÷ Δstep).
    """
    step_norm = _interval_norms(run_gram.gram.sum(axis=0))
    steps, previous = _interval_steps(run_gram)
    return pd.DataFrame({"step": steps, "previous_step": previous, "step_norm": step_norm,
                         "speed": step_norm / (steps - previous)})


def tensor_speed_frame(fit: WindowFit, tensor: str, component: int = 1) -> pd.DataFrame:
    """One tensor's speed per interval, in total and along the window's direction v_k.

    Columns: step, previous_step, speed (‖θ_t − θ_{t−1}‖ / Δstep of this tensor), increment
    ((c_k(t) − c_k(t−1)) / Δstep, c_k of the base being 0), in_window (both ends inside it).
    Constant speed along v_k is what makes a straight-line extrapolation valid.
    """
    row = fit.run_gram.names.index(tensor)
    step_norm = _interval_norms(fit.run_gram.gram[row])
    coefficients = np.concatenate([[0.0], fit.coefficients[row, component - 1]])
    steps, previous = _interval_steps(fit.run_gram)
    first, last = int(fit.window_steps[0]), int(fit.window_steps[-1])
    return pd.DataFrame({"step": steps, "previous_step": previous, "speed": step_norm / (steps - previous),
                         "increment": np.diff(coefficients) / (steps - previous),
                         "in_window": (previous >= first) & (steps <= last)})


# --------------------------------------------------------------------------- spectra and grids


DISCARDED_PARTS = {  # column of the chart frame: (squared norm of WindowFit.discarded_energy_frame, legend)
    "discarded": ("discarded_sq", "outside the window's subspace (what relex drops)"),
    "relex_error": ("relex_error_sq", "relex error"),
    "last_error": ("last_error_sq", "last error"),
    "last_error_outside": ("last_error_outside_sq", "last error outside the subspace"),
}


def discarded_frame(fit: WindowFit, module: str | None = None) -> pd.DataFrame:
    """What the rank-k projection discards at each checkpoint beside the errors of relex and `last`, as
    norms relative to ‖Δ_i‖ (relex_error is then the backtest's relative error after the window).

    module: None for the whole model, else one module type's tensors summed.
    Columns: step, part ('before' / 'window' / 'after'), and one column per DISCARDED_PARTS key.
    """
    energies = fit.discarded_energy_frame("model" if module is None else "module")
    if module is not None:
        energies = energies[energies["module"] == module]
    frame = energies[["step", "part"]].reset_index(drop=True)
    update_sq = energies["update_sq"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        for column, (squared, _) in DISCARDED_PARTS.items():
            frame[column] = np.sqrt(energies[squared].to_numpy() / update_sq)
    return frame


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
    frames = [pd.DataFrame({"step": grid, "part": part,
                            "fitted": fit.fitted_coefficients(grid, off_grid="nan")[row, component - 1]})
              for part, grid in pieces]
    return pd.concat(frames, ignore_index=True)


def predicted_coefficient(fit: WindowFit, tensor: str, target_step: int, component: int = 1) -> float:
    """p_k(target_step): the coefficient the fit predicts (0 for a tensor that never moved)."""
    return float(fit.projections([target_step])[fit.run_gram.names.index(tensor), component - 1, 0])


# --------------------------------------------------------------------------- export



def default_export_name(run_gram: RunGram, window, rank: int, fit: str, target_steps=(), kind: str = "") -> str:
    """A folder name that says what was exported: <run>-w<A>-<B>-r<k>[-<fit> unless linear][-<kind>]-s<targets>."""
    name = Path(run_gram.run.source).name or "run"
    parts = [name, f"w{window[0]}-{window[1]}", f"r{rank}"]
    parts += ([fit] if fit != "linear" else []) + ([kind] if kind else [])
    if len(target_steps):
        parts.append("s" + "-".join(str(int(step)) for step in target_steps))
    return "-".join(parts)


def export_results_frame(results) -> pd.DataFrame:
    """One row per exported folder (export.ExportResult). Columns: folder, target_step, method, files,
    size_mib, rounding_loss (share of ‖δ̂‖ erased by rounding to the output dtype)."""
    return pd.DataFrame({"folder": [str(result.path) for result in results],
                         "target_step": [int(result.target_step) for result in results],
                         "method": [result.provenance.get("method", "") for result in results],
                         "files": [len(result.files) for result in results],
                         "size_mib": [result.total_bytes / 2**20 for result in results],
                         "rounding_loss": [float(result.rounding_loss) for result in results]})
