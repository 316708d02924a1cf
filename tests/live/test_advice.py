"""The advice rule on synthetic runs with known structure, one update per checkpoint as a watch would see them.

Both runs drift at constant speed along one direction per tensor plus a random walk (5% of the final
drift). In the second, the direction turns by 90° halfway (step 600 of 1200). With the default
thresholds the rule fires on the first (once the walk is small against the drift) and never on the
second: after the turn, earlier windows' forecasts miss and the prediction for S keeps moving.
"""

import numpy as np
import pytest

from relex_core.live import AdviceRule, live_row
from tests.live.test_row import run_gram_of

STEPS = np.arange(1, 25) * 50
TURN = 12  # the direction turns after the 12th checkpoint (step 600), halfway
TARGET = 2400


def synthetic_deltas(turn: int | None, noise: float = 0.05, seed: int = 0, size: int = 200) -> list:
    rng = np.random.default_rng(seed)
    deltas = []
    for scale in (1.0, 0.5, 2.0):
        direction = rng.standard_normal(size)
        direction /= np.linalg.norm(direction)
        turned = rng.standard_normal(size)
        turned -= (turned @ direction) * direction
        turned /= np.linalg.norm(turned)
        progress = STEPS / STEPS[-1]
        if turn is None:
            drift = np.outer(progress, direction)
        else:
            corner = progress[turn - 1]
            drift = np.outer(np.minimum(progress, corner), direction) + np.outer(np.maximum(progress - corner, 0),
                                                                                 turned)
        walk = np.cumsum(rng.standard_normal((len(STEPS), size)) * noise / np.sqrt(size), axis=0)
        deltas.append((drift + walk) * scale)
    return deltas


def replay_rows(deltas, rule: AdviceRule) -> tuple[list, int | None]:
    """The live rows of one update per checkpoint, and the step at which the rule first holds."""
    run_gram = run_gram_of(deltas, STEPS)
    rows, fired = [], None
    for count in range(2, len(STEPS) + 1):
        prefix = run_gram.select(range(count))
        rows.append(live_row(prefix, int(STEPS[0]), TARGET, rows[-1]["latest_step"] if rows else None,
                             rows[-rule.updates]["latest_step"] if len(rows) >= rule.updates else None))
        if fired is None and rule.holds(rows):
            fired = rows[-1]["latest_step"]
    return rows, fired


def test_the_advice_fires_on_a_run_with_constant_direction_and_speed():
    rule = AdviceRule()
    rows, fired = replay_rows(synthetic_deltas(turn=None), rule)
    assert fired is not None
    index = [row["latest_step"] for row in rows].index(fired)
    assert rows[index]["settle_change"] < rule.change_tolerance
    assert rows[index]["forecast_error"] < rule.forecast_tolerance
    assert not any(rule.holds(rows[:end]) for end in range(1, index + 1))  # the first update where it holds
    assert "has settled at step" in rule.message(rows[index]) and f"{rule.change_tolerance:.1%}" in rule.text


def test_the_advice_does_not_fire_on_a_run_whose_direction_turns_halfway():
    rule = AdviceRule()
    rows, fired = replay_rows(synthetic_deltas(turn=TURN), rule)
    assert fired is None
    after_turn = [row for row in rows if row["latest_step"] > STEPS[TURN - 1] + 3 * 50]
    assert all(row["forecast_error"] > rule.forecast_tolerance for row in after_turn)
    # The same noise without the turn: the rule fires, and only after the turn's step.
    _, fired_straight = replay_rows(synthetic_deltas(turn=None), rule)
    assert fired_straight is not None and fired_straight > STEPS[TURN - 1]


def test_thresholds_are_the_users():
    rows, _ = replay_rows(synthetic_deltas(turn=TURN), AdviceRule())
    assert AdviceRule(change_tolerance=1.0, forecast_tolerance=1.0).first_settled(rows) is not None
    assert AdviceRule(change_tolerance=0.0).first_settled(rows) is None
    with pytest.raises(ValueError):
        AdviceRule(updates=0)


def test_the_score_rule_fires_once_the_predicted_score_stops_improving():
    scores = [0.30, 0.36, 0.41, 0.44, 0.446, 0.448, 0.447, 0.449]
    rows = [{"predicted_score": score, "latest_step": 48 * (index + 1), "target_step": 960}
            for index, score in enumerate(scores)]
    rule = AdviceRule(basis="score", updates=3, score_tolerance=0.01)
    # From 0.44 (index 3) the next three rise by at most 0.009: it holds at index 6, not before.
    assert rule.first_settled(rows) == 6
    rows[5]["predicted_score"] = float("nan")  # a failed score: no advice from a gap
    assert rule.first_settled(rows) is None
