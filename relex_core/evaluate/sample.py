"""The shipped verifier as a scorer: greedy exact match of the sample model on its held-out problems."""

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import RelexError
from .scorer import Metric, Scorer


@dataclass(frozen=True)
class SampleScorer(Scorer):
    """Accuracy of the sample model on the first `limit` held-out problems (all 1000 by default)."""
    limit: int | None = None

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise RelexError(f"limit must be a positive number of problems, not {self.limit}")

    @property
    def name(self) -> str:
        return "sample" if self.limit is None else f"sample limit={self.limit}"

    def score(self, folder, cancel=None) -> list[Metric]:
        from ..sample.verifier import evaluate_checkpoint  # torch, only when scoring

        try:
            result = evaluate_checkpoint(Path(folder), n_problems=self.limit)
        except (OSError, ValueError, KeyError) as error:
            raise RelexError(f"not a checkpoint of the sample model ({error})", path=folder) from None
        return [Metric("accuracy", result["accuracy"], _mean_stderr(result["accuracy"], result["n_problems"]))]


def _mean_stderr(accuracy: float, n: int) -> float | None:
    """Standard error of a mean of n 0/1 scores, with the sample variance (as lm-eval reports it)."""
    return math.sqrt(accuracy * (1 - accuracy) / (n - 1)) if n > 1 else None
