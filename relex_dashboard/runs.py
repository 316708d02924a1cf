"""What every session of the server shares: one Gram pass per run, and the Gram maths on top.

A run is known by its key, a hash of what its Gram depends on that costs only `stat` calls:
the base's and every checkpoint's step, folder and weight files (size, mtime). The first
session that opens a run starts its pass on a thread of its own and gets a `RunAnalysis`; a
session opening the same run meanwhile gets the same one, so both watch one pass and one
progress. Nothing is locked while a pass runs, so a session on another run never waits.

The Gram maths (WindowFit, backtests of every window end, stability, spectra) are cached per
Gram fingerprint with `st.cache_resource`, so a slider move or a page switch redoes no pass.
"""

import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from relex_core import selection
from relex_core.analysis import WindowFit, spectrum_frame, stability_frame
from relex_core.gram import RunGram, compute_gram
from relex_core.io.discover import Run
from relex_core.io.reader import weight_files
from relex_core.options import parse_fit
from relex_core.spectra import delta_spectrum_frame

FINISHED_KEPT = 8  # finished analyses kept in memory (a Gram is n_tensors × N² floats: megabytes)


def run_key(run: Run) -> str:
    """A hash of the run's checkpoints (step, folder) and of their weight files (path, size, mtime)."""
    checkpoints = []
    for checkpoint in (run.base, *run.checkpoints):
        _, files, _ = weight_files(checkpoint.path)
        checkpoints.append([int(checkpoint.step), str(checkpoint.path.resolve()),
                            [[str(file), file.stat().st_size, file.stat().st_mtime_ns] for file in files]])
    text = json.dumps({"source": str(run.source.resolve()), "checkpoints": checkpoints})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class RunAnalysis:
    """One run's Gram pass, shared by every session that opens the run.

    future: resolves to the RunGram (or the pass's error). progress: the pass callback's
    latest (fraction, message), shown as given.
    """
    key: str
    run: Run
    future: Future = field(default_factory=Future)
    progress: tuple = (0.0, "opening checkpoints")
    started: float = field(default_factory=time.monotonic)

    def report(self, fraction: float, message: str) -> None:
        self.progress = (min(1.0, max(0.0, float(fraction))), str(message))

    @property
    def title(self) -> str:
        return f"Analysing {self.run.source.name}: one pass over {len(self.run.checkpoints) + 1} checkpoints"


class _Registry:
    """RunAnalysis per run key. The lock guards the dictionary only, never a pass."""

    def __init__(self):
        self.lock = threading.Lock()
        self.analyses: OrderedDict[str, RunAnalysis] = OrderedDict()

    def get_or_start(self, run: Run, key: str) -> RunAnalysis:
        with self.lock:
            analysis = self.analyses.get(key)
            if analysis is not None:
                self.analyses.move_to_end(key)
                return analysis
            analysis = RunAnalysis(key=key, run=run)
            self.analyses[key] = analysis
            self._forget_old()
        # A thread per pass rather than a pool: a pass never queues behind another run's.
        threading.Thread(target=_run_pass, args=(analysis,), name=f"relex-pass-{key[:8]}", daemon=True).start()
        return analysis

    def forget(self, key: str) -> None:
        with self.lock:
            self.analyses.pop(key, None)

    def _forget_old(self) -> None:
        finished = [key for key, analysis in self.analyses.items() if analysis.future.done()]
        for key in finished[:max(0, len(finished) - FINISHED_KEPT)]:
            del self.analyses[key]


@st.cache_resource(show_spinner=False)
def _pass_locks() -> dict:
    return {"lock": threading.Lock(), "runs": {}}


def pass_lock(run: Run) -> threading.Lock:
    """The lock every pass over this run's folders holds: a session's analysis and the live watcher's
    update (relex_dashboard.live). The one that waits then finds the other's Gram in the disk cache,
    so the server never reads the same run twice at once."""
    key = tuple(str(Path(source).resolve()) for source in (run.sources or (run.source,)))
    locks = _pass_locks()
    with locks["lock"]:
        return locks["runs"].setdefault(key, threading.Lock())


def _run_pass(analysis: RunAnalysis) -> None:
    if not analysis.future.set_running_or_notify_cancel():
        return
    try:
        lock = pass_lock(analysis.run)
        if not lock.acquire(blocking=False):
            analysis.report(0.0, "waiting for the live view's update of this run")
            lock.acquire()
        try:
            analysis.future.set_result(compute_gram(analysis.run, progress=analysis.report))
        finally:
            lock.release()
    except BaseException as error:  # every session watching it shows the error
        analysis.future.set_exception(error)


@st.cache_resource(show_spinner=False)
def registry() -> _Registry:
    return _Registry()


def analysis_of(run: Run, key: str, rescan: bool = False) -> RunAnalysis:
    """The shared analysis of `run` (started now if no session has it); rescan drops a finished one first."""
    store = registry()
    if rescan:
        current = store.analyses.get(key)
        if current is not None and current.future.done():
            store.forget(key)
    return store.get_or_start(run, key)


# --------------------------------------------------------------------------- the Gram maths, cached


def fit_setting(fit: str, fit_last: int = 0, refit_every: int = 0) -> str:
    """The session's fit as one short name: the trend, then `-lastW` (fit on the window's last W
    checkpoints) and `-everyF` (autoregressive refits every F intervals) when set. It keys the caches
    and names export folders; `fit_options` reads it back."""
    return parse_fit(fit).name + (f"-last{int(fit_last)}" if fit_last else "") + \
        (f"-every{int(refit_every)}" if refit_every else "")


def fit_options(setting: str) -> dict:
    """WindowFit's keyword arguments for a `fit_setting`: the one place that maps it."""
    match = re.fullmatch(r"(?P<fit>.+?)(?:-last(?P<last>\d+))?(?:-every(?P<every>\d+))?", setting)
    return {"fit": parse_fit(match["fit"]).name, "fit_last": int(match["last"]) if match["last"] else None,
            "refit_every": int(match["every"]) if match["every"] else None}


def min_window(setting: str) -> int:
    """The fewest window checkpoints the fit can be made on (a line needs two, a parabola three)."""
    return max(2, parse_fit(fit_options(setting)["fit"]).minimum_points)


@st.cache_resource(show_spinner=False, max_entries=256)
def _window_fit(fingerprint: str, window: tuple, rank: int, fit: str, _run_gram: RunGram) -> WindowFit:
    return WindowFit(_run_gram, window, rank=rank, **fit_options(fit))


def window_fit(run_gram: RunGram, window, rank: int = 1, fit: str = "linear") -> WindowFit:
    """WindowFit cached per (run fingerprint, window, rank, fit)."""
    return _window_fit(run_gram.fingerprint, tuple(int(step) for step in window), int(rank), str(fit), run_gram)


@st.cache_resource(show_spinner=False)
def _background() -> ThreadPoolExecutor:
    """Workers for the Window page's every-window-end figures, started before the page is opened."""
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="relex-window-ends")


@st.cache_resource(show_spinner=False, max_entries=64)
def _window_end_backtests(fingerprint: str, start: int, rank: int, fit: str, _run_gram: RunGram) -> Future:
    return _background().submit(selection.window_end_backtests, _run_gram, start, rank, **fit_options(fit))


def window_end_backtests(run_gram: RunGram, start: int, rank: int, fit: str):
    """`selection.window_end_backtests`, cached per (run, start, rank, fit); waits if still computing."""
    return _window_end_backtests(run_gram.fingerprint, int(start), int(rank), str(fit), run_gram).result()


@st.cache_resource(show_spinner=False, max_entries=64)
def _stability(fingerprint: str, start: int, reference: tuple | None, rank: int, _run_gram: RunGram) -> Future:
    return _background().submit(stability_frame, _run_gram, start=start, reference=reference, rank=rank)


def stability(run_gram: RunGram, start: int, reference=None, rank: int = 1):
    """`stability_frame` for growing windows from `start` (rank-k principal angles), cached; waits if still
    computing."""
    return _stability(run_gram.fingerprint, int(start), tuple(reference) if reference else None, int(rank),
                      run_gram).result()


def prefetch_window_ends(run_gram: RunGram, start: int, rank: int, fit: str) -> None:
    """Start the Window page's every-window-end figures in the background, so the page opens at once."""
    _window_end_backtests(run_gram.fingerprint, int(start), int(rank), str(fit), run_gram)
    _stability(run_gram.fingerprint, int(start), None, int(rank), run_gram)


@st.cache_resource(show_spinner=False, max_entries=64)
def _spectrum(fingerprint: str, window: tuple, _fit: WindowFit):
    return spectrum_frame(_fit)


def spectrum(fit: WindowFit):
    """The window's full trajectory spectrum per tensor (it depends on the window only, not on rank or fit)."""
    return _spectrum(fit.run_gram.fingerprint, tuple(int(step) for step in fit.window_steps[[0, -1]]), fit)


@st.cache_resource(show_spinner="Reading the tensor from two checkpoints…", max_entries=64)
def _delta_spectrum(fingerprint: str, tensor: str, step: int, k: int, _run_gram: RunGram):
    return delta_spectrum_frame(_run_gram, tensor, step, k)


def delta_spectrum(run_gram: RunGram, tensor: str, step: int, k: int):
    """Top-k singular values of ΔW for one tensor and checkpoint, cached (it reads weights)."""
    return _delta_spectrum(run_gram.fingerprint, tensor, int(step), int(k), run_gram)
