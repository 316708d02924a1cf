"""Model selection: which observation window to trust, scored on held-out checkpoints (Gram only).

`window_end_backtests` backtests every window start:end; `suggest_window` picks the shortest
window whose held-out error is within a tolerance of the best one's, every candidate scored on
the same held-out steps so that short windows are not flattered by easy near targets.
Used by `relex suggest` and the dashboard's Window page. `backtest_verdict` says in one sentence
how one window's backtest compares relex with keeping the last checkpoint (`relex backtest`, the
dashboard's Window and Export pages).
"""

from dataclasses import dataclass

import pandas as pd

from .analysis import WindowFit
from .errors import RelexError
from .gram import RunGram


def default_holdout(steps) -> int:
    """First step of the last quarter of the checkpoints (at least one): the suggestion's held-out set."""
    steps = [int(step) for step in steps]
    return steps[max(2, len(steps) - max(1, len(steps) // 4))] if len(steps) > 2 else steps[-1]


@dataclass(frozen=True)
class BacktestVerdict:
    """relex against the `last` and `linear` baselines on one window's held-out checkpoints.

    mean_error: method → mean rel_error over the held-out checkpoints; wins: method → how many
    of them relex predicts better than that baseline (lower rel_error).
    """
    held_out: tuple[int, int]
    targets: int
    mean_error: dict
    wins: dict

    def change(self, baseline: str = "last") -> float:
        """relex's mean held-out error relative to a baseline's: −0.3 is 30% lower, +0.3 is 30% higher."""
        return self.mean_error["relex"] / self.mean_error[baseline] - 1.0

    @property
    def loses_to_last_everywhere(self) -> bool:
        return self.wins["last"] == 0

    @property
    def text(self) -> str:
        first, last = self.held_out
        plural = "s" if self.targets != 1 else ""
        steps = f"step {first}" if first == last else f"steps {first}–{last}"
        sentence = (f"relex's held-out error is {_compared(self.change('last'))} keeping the last checkpoint "
                    f"and {_compared(self.change('linear'))} the line through the base and the last checkpoint "
                    f"(mean relative error {self.mean_error['relex']:.3g}, against {self.mean_error['last']:.3g} "
                    f"and {self.mean_error['linear']:.3g}, over {self.targets} held-out checkpoint{plural}, {steps})")
        if self.loses_to_last_everywhere:
            where = ("the held-out checkpoint" if self.targets == 1
                     else f"every one of the {self.targets} held-out checkpoints")
            return (f"{sentence}. relex loses to the last checkpoint at {where}: with this window, keeping the "
                    "last checkpoint beats exporting an extrapolation.")
        return f"{sentence}. relex beats the last checkpoint at {self.wins['last']} of the {self.targets}."


def _compared(change: float) -> str:
    if abs(change) < 0.005:
        return "about the same as"
    amount = f"{abs(change):.0%}" if abs(change) >= 0.1 else f"{abs(change):.1%}"
    return f"{amount} {'lower' if change < 0 else 'higher'} than"


def backtest_verdict(backtests: pd.DataFrame) -> BacktestVerdict:
    """The verdict on a whole-model backtest (`WindowFit.backtest_frame()`: target_step, method, rel_error)."""
    if backtests.empty:
        raise RelexError("the window ends at the last checkpoint: no later checkpoint to test against")
    errors = backtests.pivot(index="target_step", columns="method", values="rel_error").sort_index()
    return BacktestVerdict(
        held_out=(int(errors.index[0]), int(errors.index[-1])), targets=len(errors),
        mean_error={method: float(errors[method].mean()) for method in ("relex", "last", "linear")},
        wins={method: int((errors["relex"] < errors[method]).sum()) for method in ("last", "linear")})


def window_end_backtests(run_gram: RunGram, start: int, rank: int = 1, fit="linear", fit_last=None,
                         refit_every=None) -> pd.DataFrame:
    """Backtests of every window start:end, end running over the run's checkpoints (Gram only).

    fit, fit_last, refit_every: as in `WindowFit`, the same for every window.
    Columns: window_end, target_step, method, rel_error, cosine. Ends whose window cannot take
    these settings (too few checkpoints for the rank, the fit or fit_last; uneven steps with
    refit_every), or that leave no later checkpoint, are left out.
    """
    frames = []
    for end in run_gram.steps[:-1]:
        try:
            fit_of_window = WindowFit(run_gram, (start, int(end)), rank=rank, fit=fit, fit_last=fit_last,
                                      refit_every=refit_every)
        except RelexError:  # this window cannot take these settings: not a candidate
            continue
        frame = fit_of_window.backtest_frame()
        frame.insert(0, "window_end", int(end))
        frames.append(frame)
    columns = ["window_end", "target_step", "method", "rel_error", "cosine"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


@dataclass(frozen=True)
class WindowSuggestion:
    """The shortest window whose held-out error is within `tolerance` of the best one's.

    scores: window_end, mean_rel_error over the held-out steps, for every candidate window.
    """
    window: tuple[int, int]
    score: float
    best_window: tuple[int, int]
    best_score: float
    holdout: tuple[int, int]
    tolerance: float
    method: str
    scores: pd.DataFrame

    @property
    def reason(self) -> str:
        first, last = self.holdout
        held_out = f"step {first}" if first == last else f"steps {first}–{last}"
        chosen = f"{self.window[0]}:{self.window[1]}"
        best = f"{self.best_window[0]}:{self.best_window[1]}"
        if self.window == self.best_window:
            return (f"window {chosen} has the lowest mean held-out error of {self.method} on {held_out} "
                    f"({self.score:.3g}); no shorter window comes within {self.tolerance:.0%} of it")
        return (f"window {chosen} is the shortest whose mean held-out error of {self.method} on {held_out} "
                f"({self.score:.3g}) is within {self.tolerance:.0%} of the best ({self.best_score:.3g}, "
                f"window {best})")


def suggest_window(backtests: pd.DataFrame, start: int, holdout_from: int, tolerance: float = 0.1,
                   method: str = "relex") -> WindowSuggestion:
    """Pick a window from `window_end_backtests`: every candidate is scored on the same held-out steps.

    Candidates are the windows start:end with end < holdout_from; each one's score is its mean
    rel_error over the checkpoints at or after holdout_from (the same targets for all, so short
    windows are not flattered by easy near targets). The suggestion is the shortest window whose
    score is at most (1 + tolerance) × the best score.
    """
    if tolerance < 0:
        raise RelexError(f"tolerance {tolerance} must not be negative")
    rows = backtests[(backtests["method"] == method) & (backtests["target_step"] >= holdout_from)
                     & (backtests["window_end"] < holdout_from)]
    scores = (rows.groupby("window_end", sort=True)["rel_error"].mean().dropna()
              .rename("mean_rel_error").reset_index())
    if scores.empty:
        raise RelexError(f"no window from step {start} ends before the held-out steps (from {holdout_from}); "
                         f"move the held-out start later")
    held_out = rows["target_step"]
    best = scores.loc[scores["mean_rel_error"].idxmin()]
    good_enough = scores[scores["mean_rel_error"] <= best["mean_rel_error"] * (1 + tolerance)]
    chosen = good_enough.iloc[0]  # sorted by window_end: the shortest window first
    return WindowSuggestion(window=(int(start), int(chosen["window_end"])), score=float(chosen["mean_rel_error"]),
                            best_window=(int(start), int(best["window_end"])),
                            best_score=float(best["mean_rel_error"]),
                            holdout=(int(held_out.min()), int(held_out.max())), tolerance=float(tolerance),
                            method=method, scores=scores)
