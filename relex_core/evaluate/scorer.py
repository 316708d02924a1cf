"""What every scorer is: plain, hashable settings, a name for the `scorer` column, and a call.

    class MyScorer(Scorer):
        name -> str                       # e.g. "sample limit=100"; rows and skips are keyed by it
        check() -> None                   # once, before any folder: raise RelexError if unusable
        score(folder: Path, cancel) -> list[Metric]   # raise RelexError naming the folder on failure

Scorers are frozen dataclasses, so a dashboard can keep them in its state and compare them.
`cancel` is a threading.Event or None; a scorer that can stop early raises `Cancelled` when it is set.
"""

from typing import NamedTuple


class Metric(NamedTuple):
    metric: str
    value: float
    stderr: float | None = None


class Cancelled(Exception):
    """Raised by a scorer that stopped because its cancel event was set."""


class Scorer:
    """Base of the scorers: subclasses are frozen dataclasses and implement `name` and `score`."""

    @property
    def name(self) -> str:
        raise NotImplementedError

    def check(self) -> None:
        """Raises RelexError if the scorer cannot run at all (a missing extra, an unknown task)."""

    def score(self, folder, cancel=None) -> list[Metric]:
        raise NotImplementedError
