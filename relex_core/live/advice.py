"""The advice: when has the prefix observed so far said all it will about step S?

Gram rule (default): over the last k updates the prediction for S moved by less than
`change_tolerance` (‖δ̂_now(S) − δ̂_{k updates ago}(S)‖ / ‖δ̂_{k updates ago}(S)‖, `row.settle_change`),
and the windows that ended 1…lags checkpoints before the latest forecast the checkpoints observed
since within `forecast_tolerance` (mean relative error, the largest over the lags: `row.forecast_error`).
Score rule (with scores): the exported prediction's score has stopped improving as the window
grew: over the last k updates it rose by at most `score_tolerance` above its value k updates ago.
Both are pure functions of the live rows, so a replay of live.csv gives the same answer.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AdviceRule:
    change_tolerance: float = 0.05
    forecast_tolerance: float = 0.25
    updates: int = 3
    score_tolerance: float = 0.005
    basis: str = "gram"  # "gram" or "score"

    def __post_init__(self):
        if self.updates < 1:
            raise ValueError("the advice needs at least one update")
        if self.basis not in ("gram", "score"):
            raise ValueError(f"basis must be 'gram' or 'score', not {self.basis!r}")

    @property
    def text(self) -> str:
        if self.basis == "score":
            return (f"RL could stop once the exported prediction's score has risen by at most {self.score_tolerance:g} "
                    f"over the last {self.updates} updates")
        return (f"RL could stop once the prediction for the target step has changed by less than "
                f"{self.change_tolerance:.1%} over the last {self.updates} updates and earlier windows forecast the "
                f"checkpoints observed since within {self.forecast_tolerance:.1%} (mean relative error)")

    def holds(self, rows) -> bool:
        """Whether the rule holds at the last of `rows` (dicts with the live row's keys, oldest first)."""
        if len(rows) < self.updates + 1:
            return False
        if self.basis == "score":
            scores = [row.get("predicted_score", math.nan) for row in rows[-self.updates - 1:]]
            if not all(_finite(score) for score in scores):
                return False
            return max(scores[1:]) - scores[0] <= self.score_tolerance
        last = rows[-1]
        return (_finite(last["settle_change"]) and last["settle_change"] < self.change_tolerance
                and _finite(last["forecast_error"]) and last["forecast_error"] < self.forecast_tolerance)

    def first_settled(self, rows) -> int | None:
        """Index of the first row at which the rule holds, or None."""
        for end in range(1, len(rows) + 1):
            if self.holds(rows[:end]):
                return end - 1
        return None

    def message(self, row) -> str:
        figures = (f"change {row['settle_change']:.2%} over {self.updates} updates, "
                   f"forecast error {row['forecast_error']:.2%}"
                   if self.basis == "gram" else f"predicted score {row.get('predicted_score', math.nan):.4f}")
        return (f"the prediction for step {row['target_step']} has settled at step {row['latest_step']}: "
                f"RL could stop here ({figures}; rule: {self.text})")


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
