"""The option parsers: one rule each for windows, target steps and fit names."""

import numpy as np
import pytest

from relex_core import RelexError
from relex_core.options import FIT_NAMES, MAX_STEP, FitSpec, fit_name, parse_fit, parse_target_steps, parse_window


@pytest.mark.parametrize("given, steps", [
    ("400", [400]), ("600, 400", [400, 600]), ("600,400 500", [400, 500, 600]), (" 0 ,", [0]),
    (400, [400]), ([600, 400], [400, 600]), (np.array([20, 10]), [10, 20]), ([30.0], [30]),
])
def test_target_steps_are_whole_distinct_and_sorted(given, steps):
    assert parse_target_steps(given) == steps


@pytest.mark.parametrize("given, message", [
    ("", "at least one"), ([], "at least one"), ("4e2", "whole number"), ("ten", "whole number"),
    ([60.5], "whole number"), ("-5", "not be negative"), ("400, 400", "given twice"), ([60, 60], "given twice"),
    (str(MAX_STEP + 1), "beyond any training run"), ("12345678901", "beyond any training run"),
])
def test_target_steps_refused(given, message):
    with pytest.raises(RelexError, match=message):
        parse_target_steps(given)


def test_fit_names_are_one_rule_and_round_trip():
    for name in FIT_NAMES:
        assert fit_name(parse_fit(name)) == name and parse_fit(parse_fit(name)) == parse_fit(name)
    assert parse_fit("linear") == parse_fit("poly1") == FitSpec("poly", 1) and fit_name("poly1") == "linear"
    assert parse_fit("poly7") == FitSpec("poly", 7) and fit_name("POLY7") == "poly7"
    assert parse_fit("sin") == FitSpec("sin", None) and parse_fit("sin").minimum_points == 5
    assert parse_fit("poly3").minimum_points == 4
    assert len({parse_fit("linear"), parse_fit("poly1"), FitSpec()}) == 1  # hashable: one cache entry
    for bad in ("cubic", "poly0", "poly", "poly-2", "poly2.5", "sine", 2):
        with pytest.raises(RelexError, match="must be linear, polyD"):
            parse_fit(bad)
    with pytest.raises(RelexError):
        FitSpec("poly", 0)
    with pytest.raises(RelexError):
        FitSpec("sin", 2)


@pytest.mark.parametrize("given, window", [("10:40", (10, 40)), (":40", (None, 40)), ("10:", (10, None)),
                                           (None, (None, None)), ((10, 40), (10, 40))])
def test_window_is_an_inclusive_step_range(given, window):
    assert parse_window(given) == window


@pytest.mark.parametrize("given", ["10-40", "a:b", "1:2:3"])
def test_window_refused(given):
    with pytest.raises(RelexError, match="window"):
        parse_window(given)
