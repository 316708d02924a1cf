"""What the official RELEX `svd_extrapolation.py --mode extrapolate` computes, rebuilt on explicit vectors.

Written for the tests from a reading of the official script (github.com/weizhepei/RELEX), not
copied from it, and only its conventions are kept:
- The history is every checkpoint with step ≤ `history_steps` (the base, step 0, is not in it).
- Per tensor, M = stacked deltas θ_t − θ_0 (T, d); V_r = Mᵀ U_r / S from the eigenpairs of M Mᵀ,
  a direction with S_k ≤ 1e-6·S_1 set to zero; C = M V_r, the history's coefficients.
- The trend's axis is the index of a checkpoint in the history, 0…T−1, not its step; with one
  checkpoint per step the two differ by a shift, which no polynomial fit sees.
- `--window W` fits on C[−W:] with local index 0…W−1; a target step s is evaluated at index
  W − 1 + (s − last history step).
- `--future_extrapolation_window F`: a deque of the last W coefficients; for every step from the
  last history step + 1 to the largest target, refit when F steps have passed since the last
  refit (and at the first), evaluate at index W (one past the buffer), record it if the step is
  a target, append it. Between refits the evaluation point does not move: predictions are held.
- θ̂ = θ_0 (bf16 read as float32) + δ̂ (float32), summed in float32 and cast to bf16.
Deltas here are float64 from the checkpoints themselves (the official script keeps them as
float16 on disk, a storage choice, not part of the method), and the SVD comes from np.linalg.svd.
"""

from collections import deque
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file


def load_folder(folder) -> dict:
    state = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(file))
    return state


def _directions(history: np.ndarray, rank: int) -> np.ndarray:
    """(d, r) V_r of the stacked history deltas, zero columns for S_k ≤ 1e-6·S_1."""
    _, sigma, vt = np.linalg.svd(history, full_matrices=False)
    directions = vt[:rank].T.copy()
    floor = sigma[0] * 1e-6 if sigma[0] > 0 else 1e-12
    directions[:, sigma[:rank] <= floor] = 0.0
    return directions


def _coefficient_predictions(coefficients: np.ndarray, last_step: int, targets, degree: int, window: int,
                             refit_every: int) -> dict:
    """{target step: (r,) predicted coefficients} on the history-index axis, as the official loop."""
    size = len(coefficients)
    window = size if window == -1 else min(window, size)
    fit = lambda values: [np.poly1d(np.polyfit(np.arange(window, dtype=np.float64), values[:, k], degree))
                          for k in range(values.shape[1])]
    if refit_every == -1:
        polynomials = fit(coefficients[-window:])
        return {step: np.array([p(window - 1 + step - last_step) for p in polynomials]) for step in targets}
    buffer = deque(coefficients[-window:], maxlen=window)
    since_refit, predictions, polynomials = refit_every, {}, None
    for step in range(last_step + 1, max(targets) + 1):
        if since_refit >= refit_every:
            polynomials = fit(np.array(buffer))
            since_refit = 0
        prediction = np.array([p(window) for p in polynomials])
        if step in targets:
            predictions[step] = prediction
        buffer.append(prediction)
        since_refit += 1
    return predictions


def official_extrapolation(run, history_steps: int, targets, *, rank: int = 1, degree: int = 1, window: int = -1,
                           refit_every: int = -1) -> dict:
    """{target step: {tensor name: bf16 tensor}} for a run folder of `checkpoint-N` (base: checkpoint-0)."""
    run = Path(run)
    steps = sorted(int(path.name.split("-")[1]) for path in run.glob("checkpoint-*"))
    history_steps_list = [step for step in steps if 0 < step <= history_steps]
    base = load_folder(run / "checkpoint-0")
    history = [load_folder(run / f"checkpoint-{step}") for step in history_steps_list]
    result = {step: {} for step in targets}
    for name, theta_0 in base.items():
        start = theta_0.to(torch.float64).reshape(-1).numpy()
        deltas = np.stack([state[name].to(torch.float64).reshape(-1).numpy() - start for state in history])
        directions = _directions(deltas, rank)
        predictions = _coefficient_predictions(deltas @ directions, history_steps_list[-1], targets, degree, window,
                                               refit_every)
        for step in targets:
            delta = torch.from_numpy((directions @ predictions[step]).astype(np.float32))
            result[step][name] = (theta_0.float() + delta.reshape(theta_0.shape)).to(torch.bfloat16)
    return result
