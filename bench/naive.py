"""The naive analysis, as reference scripts do it: load every checkpoint whole, stack the deltas
of each tensor, and take a full SVD of that T × d matrix.

    python bench/naive.py RUN OUT.csv [--dtype float32]

Memory holds every checkpoint at once plus one stacked tensor and its SVD. Writes per tensor:
tensor, sigma_1, sigma_2, energy_rank1, slope, r2 (the same definitions as relex's tensors.csv:
c_t = <Δ_t, v1> signed so the last is ≥ 0, OLS line of c on the real steps).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relex_core.io.discover import open_run  # noqa: E402


def load_checkpoint(path: Path) -> dict:
    state = {}
    for file in sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else [Path(path)]:
        state.update(load_file(str(file)))
    return state


def naive_analysis(run_source, dtype=torch.float32) -> pd.DataFrame:
    run = open_run(run_source)
    base = load_checkpoint(run.base.path)
    states = [load_checkpoint(checkpoint.path) for checkpoint in run.checkpoints]
    steps = np.array(run.steps, dtype=np.float64)
    records = []
    for name, tensor in base.items():
        if not tensor.is_floating_point():
            continue
        deltas = torch.stack([state[name].reshape(-1).to(dtype) - tensor.reshape(-1).to(dtype) for state in states])
        _, sigma, vh = torch.linalg.svd(deltas, full_matrices=False)
        coefficients = (deltas @ vh[0]).double().numpy()
        if coefficients[-1] < 0:
            coefficients = -coefficients
        slope, intercept = np.polyfit(steps, coefficients, 1)
        residual = coefficients - (slope * steps + intercept)
        total = ((coefficients - coefficients.mean()) ** 2).sum()
        squares = sigma.double().numpy() ** 2
        records.append({"tensor": name, "sigma_1": float(sigma[0]), "sigma_2": float(sigma[1]) if len(sigma) > 1 else 0.0,
                        "energy_rank1": squares[0] / squares.sum() if squares.sum() > 0 else np.nan,
                        "slope": slope, "r2": 1.0 - (residual**2).sum() / total if total > 0 else np.nan})
        del deltas, vh
    return pd.DataFrame.from_records(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("out")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    started = time.perf_counter()
    frame = naive_analysis(args.run, getattr(torch, args.dtype))
    frame.to_csv(args.out, index=False)
    print(json.dumps({"seconds": time.perf_counter() - started, "tensors": len(frame)}))


if __name__ == "__main__":
    main()
