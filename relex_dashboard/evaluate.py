"""What the Evaluate page scores, where it keeps the scores, and the tables it shows from them.

The scoring itself is relex_core.evaluate (scorers, scores.csv, fingerprints); this module plans
the folders of one request and reads the stored table back for the page:

    folder = scores_folder(run)                  # <export root>/<run name>-<hash of run and base>
    items = plan(fit, folder, checkpoint_steps=[720, 1440], target_steps=[1440], linear=True)
    # scoring.start(...) writes the exports the items need, then scores every item's path
    scores, changed = stored_scores(folder / SCORES_FILE)

Exports go beside scores.csv, named as the Export page names them, and are reused while their
relex.json says they come from the same Gram, window, rank, fit and target: an export written
again would get a new fingerprint, and its stored score would no longer count.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from relex_core.analysis import WindowFit
from relex_core.errors import RelexError
from relex_core.evaluate import fingerprint, read_scores

from . import files, frames, runs

SCORES_FILE = "scores.csv"
EXPORT_KINDS = ("relex", "linear")


def scores_folder(run) -> Path:
    """Where one run's evaluation exports and scores.csv live: named after the run, plus a hash of its
    folder and base, so two runs called `grpo` never share a table (new checkpoints keep the folder)."""
    key = f"{Path(run.source).resolve()}|{Path(run.base.path).resolve()}"
    return files.export_root() / f"{Path(run.source).name or 'run'}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class Item:
    """One folder to score: a run checkpoint (path known), or an export to write first (kind relex|linear)."""
    kind: str
    step: int
    path: Path

    @property
    def is_export(self) -> bool:
        return self.kind in EXPORT_KINDS


def every_kth(steps, k: int) -> list[int]:
    """Every k-th checkpoint step, counted from the first: the k-th, 2k-th, ... (so k=1 is all of them)."""
    return [int(step) for step in list(steps)[max(1, int(k)) - 1::max(1, int(k))]]


def default_k(steps, count: int = 5) -> int:
    """The k that gives about `count` checkpoints."""
    return max(1, math.ceil(len(steps) / count))


def default_evaluation_steps(steps, window, count: int = 4) -> list[int]:
    """Up to `count` checkpoints after the window, evenly spread and always including the last one."""
    later = [int(step) for step in steps if step > window[1]]
    if len(later) <= count:
        return later
    return sorted({later[round(index * (len(later) - 1) / (count - 1))] for index in range(count)})


def plan(fit: WindowFit, folder, checkpoint_steps=(), target_steps=(), *, last: bool = False,
         linear: bool = False, real_at_targets: bool = False) -> list[Item]:
    """The folders to score: the picked checkpoints (plus the window's last one for the `last` baseline,
    plus the real checkpoints at the target steps), then the relex export at every target step, then
    the `linear` export at every target step. Checkpoints by step, each folder once."""
    run = fit.run_gram.run
    paths = {int(checkpoint.step): Path(checkpoint.path) for checkpoint in (run.base, *run.checkpoints)}
    targets = [int(step) for step in target_steps]
    wanted = {int(step) for step in checkpoint_steps}
    if last:
        wanted.add(int(fit.window_steps[-1]))
    if real_at_targets:
        wanted.update(step for step in targets if step in paths)
    items = [Item("checkpoint", step, paths[step]) for step in sorted(wanted) if step in paths]
    window = (int(fit.window_steps[0]), int(fit.window_steps[-1]))
    setting = runs.fit_setting(fit.fit_name, fit.fit_last or 0, fit.refit_every or 0)  # as the Export page names
    for kind in ("relex", *(("linear",) if linear else ())):
        for step in targets:
            name = frames.default_export_name(fit.run_gram, window, fit.rank, setting, [step],
                                              "" if kind == "relex" else kind)
            items.append(Item(kind, step, Path(folder) / name))
    return items


def given_folders(paths) -> list[Item]:
    """Folders given by path (an export from the Export page) as items: scored as they are, never rewritten."""
    return [Item("folder", 0, Path(path)) for path in paths]


def export_is_current(fit: WindowFit, item: Item) -> bool:
    """True when item.path holds a finished export of exactly this fit, kind and target (its relex.json,
    written last into a folder that appears whole, says so)."""
    try:
        record = json.loads((item.path / "relex.json").read_text())
    except (OSError, ValueError):
        return False
    expected = {"gram_fingerprint": fit.run_gram.fingerprint or None, "method": item.kind, "target_step": item.step,
                "window_steps": [int(step) for step in fit.window_steps], "rank": fit.rank, "fit": fit.fit_name,
                "fit_last": fit.fit_last, "refit_every": fit.refit_every, "dtype": "base"}
    return all(record.get(key) == value for key, value in expected.items())


# --------------------------------------------------------------------------- the stored table


def stored_scores(path) -> tuple[pd.DataFrame, int]:
    """The latest score of each (folder, scorer, metric) in scores.csv whose folder is unchanged since it
    was scored (same fingerprint), and how many rows were left out because their folder changed or went."""
    scores = read_scores(path)  # a file not written yet is an empty table
    current = {folder: fingerprint(folder) for folder in scores["path"].unique()}
    kept = scores["fingerprint"] == scores["path"].map(current)
    return scores[kept].reset_index(drop=True), int((~kept).sum())


def measures(scores: pd.DataFrame) -> list[tuple[str, str]]:
    """The (scorer, metric) pairs of the table, the most recently scored first."""
    pairs = list(dict.fromkeys(zip(scores["scorer"], scores["metric"])))
    return pairs[::-1]


def of_measure(scores: pd.DataFrame, scorer: str, metric: str) -> pd.DataFrame:
    """The rows of one scorer and metric that have a step (a checkpoint whose step is unknown cannot be
    drawn), with `folder` (the name hover text and tables show) and `setting` (an export's rank and fit
    where they are not rank 1, linear: exports of one window with two settings are two series)."""
    rows = scores[(scores["scorer"] == scorer) & (scores["metric"] == metric) & scores["step"].notna()]
    settings = [export_setting(path) if kind != "checkpoint" else "" for path, kind in zip(rows["path"], rows["kind"])]
    return rows.assign(folder=rows["path"].map(folder_label), setting=settings).reset_index(drop=True)


def export_setting(path) -> str:
    """'' for an export of rank 1 with the plain linear fit, else e.g. 'rank 2, poly2-last4' (its relex.json)."""
    try:
        record = json.loads((Path(path) / "relex.json").read_text())
        setting = runs.fit_setting(record["fit"], record.get("fit_last") or 0, record.get("refit_every") or 0)
        rank = int(record["rank"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # the scores row still says what it is; only the series name loses the detail
    return "" if (rank, setting) == (1, "linear") else f"rank {rank}, {setting}"


def window_end(window: str) -> int:
    return int(str(window).split(":")[1])


def comparison_frame(scores: pd.DataFrame) -> pd.DataFrame:
    """Each export's score (one scorer and metric) against the run's checkpoint at the same step and
    against `last`, the window's last checkpoint; each difference with its standard error
    sqrt(se_a² + se_b²) (independent problems' scores; NaN where a stderr is unknown).

    Columns: window, setting (of_measure's), kind, step, value, stderr, vs_checkpoint,
    vs_checkpoint_stderr, vs_last, vs_last_stderr, folder.
    """
    checkpoints = scores[scores["kind"] == "checkpoint"].drop_duplicates("step", keep="last").set_index("step")
    rows = []
    exports = scores[scores["kind"] != "checkpoint"].sort_values(["window", "kind", "step"], kind="stable")
    for row in exports.itertuples():
        record = {"window": row.window, "setting": getattr(row, "setting", ""), "kind": row.kind,
                  "step": int(row.step), "value": row.value, "stderr": row.stderr}
        for name, step in (("vs_checkpoint", int(row.step)), ("vs_last", window_end(row.window))):
            known = step in checkpoints.index
            record[name] = row.value - checkpoints.at[step, "value"] if known else math.nan
            record[f"{name}_stderr"] = math.hypot(row.stderr, checkpoints.at[step, "stderr"]) if known else math.nan
        rows.append({**record, "folder": folder_label(row.path)})
    return pd.DataFrame(rows, columns=["window", "setting", "kind", "step", "value", "stderr", "vs_checkpoint",
                                       "vs_checkpoint_stderr", "vs_last", "vs_last_stderr", "folder"])


def folder_label(path) -> str:
    """A folder as hover text names it: its name, with the parent's for an export's step-S sub-folder."""
    path = Path(str(path))
    return f"{path.parent.name}/{path.name}" if path.name.startswith("step-") else path.name


# --------------------------------------------------------------------------- what the server may run


def include_folder(text: str, roots) -> str | None:
    """The lm-eval task folder as typed (None for none). A task folder can hold Python (`!function`)
    that the server runs, so where run folders are restricted (roots) it must lie inside them too."""
    if not text.strip():
        return None
    path = files.user_path(text, roots)
    if roots is not None and not files._inside(path, roots):  # the one containment check
        raise RelexError(f"task folder '{text.strip()}' is outside the folders this server may open "
                         f"(RELEX_RUN_ROOTS: {', '.join(map(str, roots))})")
    return str(path)
