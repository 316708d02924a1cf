"""Parsing of the options users give: windows, target steps and fit names.

One rule each, shared by the CLI, the dashboard, the export and the Python API. Light on
purpose (no numpy or torch), so the CLI can check its arguments before importing the maths.
"""

from .errors import RelexError


def parse_window(window) -> tuple:
    """'A:B' (inclusive, either side may be empty), (A, B) or None → (A or None, B or None)."""
    if window is None:
        return (None, None)
    if isinstance(window, str):
        parts = window.split(":")
        if len(parts) != 2:
            raise RelexError(f"window '{window}' must look like A:B (step range, inclusive)")
        try:
            return tuple(int(part) if part.strip() else None for part in parts)
        except ValueError:
            raise RelexError(f"window '{window}' must hold integer steps, like 0:400") from None
    first, last = window
    return (None if first is None else int(first), None if last is None else int(last))


# Steps beyond this are typos, not training steps (a run of a billion steps does not exist).
MAX_STEP = 10**9

# Names of the coefficient trends over steps, by polynomial degree.
FIT_NAMES = {1: "linear", 2: "poly2"}


def parse_fit(name) -> int:
    """Polynomial degree of a fit name: 'linear' → 1, 'poly2' → 2."""
    for degree, fit in FIT_NAMES.items():
        if str(name) == fit:
            return degree
    raise RelexError(f"fit '{name}' must be one of {', '.join(FIT_NAMES.values())}")


def fit_name(degree: int) -> str:
    """The fit name of a polynomial degree (see FIT_NAMES)."""
    return FIT_NAMES[int(degree)]


def parse_target_steps(targets) -> list[int]:
    """Target steps from '400, 500 600', '400,600', a number or a list, sorted ascending.

    One rule for the CLI, the dashboard and the export. Refused: nothing given, non-integers,
    a step given twice, negative steps, and steps above MAX_STEP.
    """
    if isinstance(targets, str):
        parts = targets.replace(",", " ").split()
    else:
        try:
            parts = list(targets)  # a list, a tuple, a numpy array
        except TypeError:  # one number
            parts = [targets]
    if not parts:
        raise RelexError("give at least one target step, like 400 or 400,600")
    steps = []
    for part in parts:
        step = _whole_number(part)
        if step is None:
            raise RelexError(f"target step '{part}' must be a whole number, like 400 or 400,600")
        if step in steps:
            raise RelexError(f"target step {step} is given twice; give distinct steps")
        steps.append(step)
    steps = sorted(steps)
    if steps[0] < 0:
        raise RelexError(f"target step {steps[0]} must not be negative")
    if steps[-1] > MAX_STEP:
        raise RelexError(f"target step {steps[-1]} is beyond any training run (at most {MAX_STEP:,})")
    return steps


def _whole_number(value) -> int | None:
    """An int from '400' or a number equal to an integer (400, 400.0, numpy ints); None otherwise."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None
