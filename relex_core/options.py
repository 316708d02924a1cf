"""Parsing of the options users give: windows, target steps and fit names.

One rule each, shared by the CLI, the dashboard, the export and the Python API. Light on
purpose (no numpy or torch), so the CLI can check its arguments before importing the maths.
"""

from dataclasses import dataclass

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

# The fits offered in menus and --help. parse_fit takes any polyD (D ≥ 1) besides these.
FIT_NAMES = ("linear", "poly2", "poly3", "sin")


@dataclass(frozen=True)
class FitSpec:
    """A trend of the coefficients over steps: kind 'poly' with a degree ≥ 1, or kind 'sin'.

    Frozen and hashable, so fits can be cached per setting. Its `name` is the one way to write
    it ('linear' = poly1, 'poly2', 'poly3', …, 'sin'); `parse_fit(spec.name) == spec`.
    """
    kind: str = "poly"
    degree: int | None = 1

    def __post_init__(self):
        if self.kind == "sin":
            if self.degree is not None:
                raise RelexError("a sin fit has no degree")
        elif self.kind != "poly" or isinstance(self.degree, bool) or not isinstance(self.degree, int) \
                or self.degree < 1:
            raise RelexError(f"fit kind {self.kind!r} with degree {self.degree!r}: use a polynomial of "
                             "degree ≥ 1 or sin")

    @property
    def name(self) -> str:
        if self.kind == "sin":
            return "sin"
        return "linear" if self.degree == 1 else f"poly{self.degree}"

    @property
    def minimum_points(self) -> int:
        """Checkpoints a fit needs: one per polynomial coefficient; a sinusoid's four parameters plus one,
        since four points fit every frequency exactly."""
        return 5 if self.kind == "sin" else self.degree + 1


def parse_fit(fit) -> FitSpec:
    """A FitSpec from a name ('linear', 'poly1' … 'polyD', 'sin') or a FitSpec (returned as is)."""
    if isinstance(fit, FitSpec):
        return fit
    text = str(fit).strip().lower()
    if text == "linear":
        return FitSpec("poly", 1)
    if text == "sin":
        return FitSpec("sin", None)
    digits = text.removeprefix("poly")
    if text.startswith("poly") and digits.isdigit() and int(digits) >= 1:
        return FitSpec("poly", int(digits))
    raise RelexError(f"fit '{fit}' must be linear, polyD with a degree D ≥ 1 (poly2, poly3, …) or sin")


def fit_name(fit) -> str:
    """The one name of a fit given as a name or a FitSpec: 'poly1' → 'linear'."""
    return parse_fit(fit).name


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
