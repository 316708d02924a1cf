"""Score extrapolated and reconstructed checkpoints with a verifier, next to the real ones.

The question the Evaluate page answers: does a checkpoint extrapolated from an early window
score like the checkpoint RL actually reached at that step? Each candidate is exported to a
scratch folder (the same export code users run), scored, and the folder is deleted.
"""

import shutil
import tempfile
from pathlib import Path

import pandas as pd

from relex_core.analysis import WindowFit
from relex_core.errors import RelexError
from relex_core.export import extrapolate, reconstruct

COLUMNS = ["kind", "step", "accuracy", "n_problems"]


def score_checkpoints(fit: WindowFit, target_steps, reconstruct_steps, evaluate, *, progress=None,
                      scratch_dir=None) -> pd.DataFrame:
    """Scores of the real checkpoint (where the run has one), the extrapolation and the reconstruction.

    evaluate: path → {"accuracy", "n_problems", ...} (e.g. the sample verifier).
    target_steps: steps to extrapolate to; reconstruct_steps: window steps to project on rank k.
    progress: callable(fraction, message) or None.
    Columns: kind ('actual', 'extrapolated', 'reconstructed'), step, accuracy, n_problems.
    """
    run = fit.run_gram.run
    checkpoints = {checkpoint.step: checkpoint.path for checkpoint in run.checkpoints}
    target_steps = [int(step) for step in target_steps]
    reconstruct_steps = [int(step) for step in reconstruct_steps]
    jobs = ([("actual", step) for step in target_steps if step in checkpoints]
            + [("extrapolated", step) for step in target_steps] + [("reconstructed", step) for step in reconstruct_steps])
    scratch = Path(tempfile.mkdtemp(prefix="relex-evaluate-", dir=scratch_dir))
    records = []
    try:
        for number, (kind, step) in enumerate(jobs):
            if progress:
                progress(number / len(jobs), f"scoring the {kind} checkpoint at step {step}")
            if kind == "actual":
                path = checkpoints[step]
            elif kind == "extrapolated":
                path = extrapolate(fit, [step], scratch / f"extrapolated-{step}", progress=False)[0].path
            else:
                path = reconstruct(fit, step, scratch / f"reconstructed-{step}", progress=False).path
            try:
                score = evaluate(path)
            except ValueError as error:  # e.g. a model that is not the verifier's task
                raise RelexError(f"the verifier cannot score this checkpoint ({error})", path=path) from None
            records.append((kind, step, float(score["accuracy"]), int(score["n_problems"])))
            if kind != "actual":
                shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if progress:
        progress(1.0, "done")
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def empty_scores() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS)


def default_evaluation_steps(steps, window, count: int = 4) -> list[int]:
    """Up to `count` checkpoints after the window, evenly spread and always including the last one."""
    later = [int(step) for step in steps if step > window[1]]
    if len(later) <= count:
        return later
    return sorted({later[round(index * (len(later) - 1) / (count - 1))] for index in range(count)})
