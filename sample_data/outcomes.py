"""Measure the sample run with relex itself: geometry, and RELEX outcomes scored by the verifier.

Run from the repository root (a few minutes on 2 cores):
    .venv/bin/python sample_data/outcomes.py > sample_data/OUTCOMES.md
For windows covering the first 10%, 20% and 50% of the RL steps it extrapolates (rank 1, line)
to the last step and to twice the last step, and scores the exports beside the real RL
checkpoints and the `last` / `linear` baselines. Every number printed is measured here.
"""

import tempfile
from pathlib import Path

import numpy as np

from relex_core import WindowFit, compute_gram, open_run
from relex_core.export import extrapolate
from relex_core.sample.verifier import evaluate_checkpoint

RUN = Path(__file__).resolve().parent / "run"
WINDOW_SHARES = (0.1, 0.2, 0.5)


def main() -> None:
    run = open_run(RUN)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        run_gram = compute_gram(run, cache_dir=scratch / "cache", progress=False)
        whole = WindowFit(run_gram)
        tensors = whole.tensors_frame()
        model = whole.summary_frame("model").iloc[0]
        last_step = int(run.steps[-1])
        print(f"# Sample run measured with relex\n\nRun: {len(run.steps)} checkpoints after the base, "
              f"steps {run.steps[0]}…{last_step}.\n")
        print("## Geometry over the whole run (window = every checkpoint after the base, rank 1)\n")
        print(f"- median rank-1 energy over {len(tensors)} tensors: {np.nanmedian(tensors.energy_rank1):.4f} "
              f"(whole model, Σλ1/Σλ: {model.energy_rank1:.4f})")
        print(f"- median R² of the line fit of c_1 on steps: {np.nanmedian(tensors.r2):.4f} "
              f"(whole model, pooled: {model.r2:.4f})\n")

        score = lambda folder: evaluate_checkpoint(folder)["accuracy"]  # noqa: E731
        real = {step: score(checkpoint.path) for step, checkpoint in zip(run.steps, run.checkpoints)}
        print(f"Real RL: held-out accuracy {score(run.base.path):.3f} at the base, "
              f"{real[last_step]:.3f} at step {last_step}.\n")
        print("## RELEX outcomes (held-out accuracy, greedy, exact match)\n")
        print("| window | last window checkpoint (`last`) | target step | real RL | relex rank 1 "
              "| `linear` | relex rel. error vs real |")
        print("|---|---|---|---|---|---|---|")
        for share in WINDOW_SHARES:
            window_end = max(step for step in run.steps if step <= run.steps[0] + share * (last_step - run.steps[0]))
            fit = WindowFit(run_gram, window=f"0:{window_end}")
            if len(fit.window_steps) < 2:
                continue
            backtest = fit.backtest_frame().query("method == 'relex' and target_step == @last_step")
            targets = [last_step, 2 * last_step]
            relex_exports = extrapolate(fit, targets, scratch / f"relex-{window_end}", progress=False)
            linear_exports = extrapolate(fit, targets, scratch / f"linear-{window_end}", method="linear",
                                         progress=False)
            last_score = real[int(fit.window_steps[-1])]
            for target, relex_export, linear_export in zip(targets, relex_exports, linear_exports):
                real_score = f"{real[target]:.3f}" if target in real else "–"
                error = f"{backtest.rel_error.iloc[0]:.3f}" if target == last_step and len(backtest) else "–"
                print(f"| 0:{window_end} ({len(fit.window_steps)} ckpts) | {last_score:.3f} | {target} | {real_score} "
                      f"| {score(relex_export.path):.3f} | {score(linear_export.path):.3f} | {error} |")


if __name__ == "__main__":
    main()
