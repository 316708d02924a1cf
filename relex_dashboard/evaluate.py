"""Score checkpoints and relex exports with a verifier, as rows of the scores.csv schema.

The question the Evaluate page answers: does a checkpoint extrapolated from an early window
score like the checkpoint RL actually reached at that step, and better than keeping the last
checkpoint of the window? Exports are written under the export root (the same export code
users run) and kept, so every row's `path` is a folder that can be scored again.

Rows follow scores.csv: path, step, kind (checkpoint | relex | reconstruct | linear), window,
target_step, scorer, metric, value, stderr, seconds. One row per (folder, metric).
"""

import math
from pathlib import Path

import pandas as pd

from relex_core.analysis import WindowFit
from relex_core.errors import RelexError
from relex_core.export import extrapolate, reconstruct

COLUMNS = ["path", "step", "kind", "window", "target_step", "scorer", "metric", "value", "stderr", "seconds"]
KINDS = ("checkpoint", "relex", "reconstruct", "linear")


def binomial_stderr(accuracy: float, n_problems: int) -> float:
    """Standard error of an accuracy over n independent problems: sqrt(p (1 − p) / n)."""
    return math.sqrt(accuracy * (1.0 - accuracy) / n_problems) if n_problems else float("nan")


DTYPES = ["object", "int64", "object", "object", "int64", "object", "object", "float64", "float64", "float64"]


def empty_scores() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in zip(COLUMNS, DTYPES)})


def plan_jobs(fit: WindowFit, target_steps, reconstruct_steps=(), *, last: bool = True, linear: bool = False):
    """What to score, as (kind, step): the run's checkpoints at the targets, relex at every target, the
    window's last checkpoint (the `last` baseline), the line through base and last, reconstructions."""
    checkpoints = {int(checkpoint.step) for checkpoint in fit.run_gram.run.checkpoints}
    targets = [int(step) for step in target_steps]
    window_end = int(fit.window_steps[-1])
    jobs = [("checkpoint", step) for step in targets if step in checkpoints]
    if last and window_end not in targets:
        jobs.insert(0, ("checkpoint", window_end))
    jobs += [("relex", step) for step in targets]
    jobs += [("linear", step) for step in targets] if linear else []
    jobs += [("reconstruct", int(step)) for step in reconstruct_steps]
    return jobs


def score_checkpoints(fit: WindowFit, jobs, evaluate, folder_name, export_folder, *, scorer: str = "sample",
                      progress=None) -> pd.DataFrame:
    """Score each (kind, step) job; exports go to export_folder / folder_name(kind, step) and stay there.

    evaluate: path → {"accuracy", "n_problems", "seconds"} (e.g. the sample verifier).
    progress: callable(fraction, message) or None. Returns rows in the scores.csv schema.
    """
    run = fit.run_gram.run
    checkpoints = {int(checkpoint.step): checkpoint.path for checkpoint in run.checkpoints}
    window = f"{int(fit.window_steps[0])}:{int(fit.window_steps[-1])}"
    records = []
    for number, (kind, step) in enumerate(jobs):
        if progress:
            progress(number / len(jobs), f"scoring {kind} at step {step} ({number + 1} of {len(jobs)})")
        if kind == "checkpoint":
            path = checkpoints[step]
        else:
            out = Path(export_folder) / folder_name(kind, step)
            if kind == "reconstruct":
                path = reconstruct(fit, step, out, force=True, progress=False).path
            else:
                path = extrapolate(fit, [step], out, method=kind, force=True, progress=False)[0].path
        try:
            score = evaluate(path)
        except ValueError as error:  # e.g. a model that is not the verifier's task
            raise RelexError(f"the verifier cannot score this checkpoint ({error})", path=path) from None
        accuracy, n_problems = float(score["accuracy"]), int(score["n_problems"])
        records.append({"path": str(path), "step": step, "kind": kind, "window": "" if kind == "checkpoint" else window,
                        "target_step": step, "scorer": scorer, "metric": "accuracy", "value": accuracy,
                        "stderr": binomial_stderr(accuracy, n_problems), "seconds": float(score.get("seconds", 0.0))})
    if progress:
        progress(1.0, "done")
    return pd.DataFrame.from_records(records, columns=COLUMNS).astype(empty_scores().dtypes.to_dict())


def merge_scores(stored: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Stored rows plus new ones; a folder scored again with the same scorer and metric keeps only its newest row."""
    frames = [frame for frame in (stored, new) if len(frame)]
    if not frames:
        return empty_scores()
    merged = pd.concat(frames, ignore_index=True)
    return merged.drop_duplicates(["path", "scorer", "metric"], keep="last").reset_index(drop=True)


def comparison_frame(scores: pd.DataFrame) -> pd.DataFrame:
    """Each export's score against the RL checkpoint at the same step and against its window's last checkpoint.

    Columns: kind, window, step, value, stderr, vs_checkpoint (value − the checkpoint's at that step,
    where one was scored), vs_last (value − the score of the window's last checkpoint), path.
    """
    checkpoints = scores[scores["kind"] == "checkpoint"].drop_duplicates(["step", "scorer", "metric"], keep="last")
    by_step = {(row.step, row.scorer, row.metric): row.value for row in checkpoints.itertuples()}
    rows = []
    for row in scores[scores["kind"] != "checkpoint"].itertuples():
        window_end = int(str(row.window).split(":")[1])
        same_step = by_step.get((row.step, row.scorer, row.metric))
        last = by_step.get((window_end, row.scorer, row.metric))
        rows.append({"kind": row.kind, "window": row.window, "step": row.step, "value": row.value,
                     "stderr": row.stderr,
                     "vs_checkpoint": float("nan") if same_step is None else row.value - same_step,
                     "vs_last": float("nan") if last is None else row.value - last, "path": row.path})
    return pd.DataFrame(rows, columns=["kind", "window", "step", "value", "stderr", "vs_checkpoint", "vs_last", "path"])


def scores_csv(scores: pd.DataFrame) -> bytes:
    return scores[COLUMNS].to_csv(index=False).encode()


def default_evaluation_steps(steps, window, count: int = 4) -> list[int]:
    """Up to `count` checkpoints after the window, evenly spread and always including the last one."""
    later = [int(step) for step in steps if step > window[1]]
    if len(later) <= count:
        return later
    return sorted({later[round(index * (len(later) - 1) / (count - 1))] for index in range(count)})
