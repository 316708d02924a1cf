"""Scoring in the background: one job per run, shared by every session of the server.

A job writes the exports its items need (under the run's scores folder), then runs
relex_core.evaluate.score on every item's folder, appending to that folder's scores.csv as each
one is done. It runs on a thread of its own, so the page stays usable and other pages can be
visited; the page polls `job.progress` and sets `job.cancel` for the cancel button. A session
opening the run meanwhile finds the same job (keyed by the scores file), as runs.py does for passes.
Results live in scores.csv only: a reload, a second session or a restarted server reads them back.
"""

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from relex_core.errors import RelexError
from relex_core.evaluate import Scorer, score
from relex_core.export import extrapolate

from .evaluate import export_is_current

FINISHED_KEPT = 8  # finished jobs kept for their outcome notes


@dataclass
class ScoringJob:
    """future: resolves to relex_core.evaluate's Outcomes (or the job's error). progress: the latest
    (fraction, message). finished: folders done so far (the page redraws its chart when it grows)."""
    out: Path
    scorer: Scorer
    items: tuple
    force: bool = False
    future: Future = field(default_factory=Future)
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: tuple = (0.0, "starting")
    finished: int = 0
    started: float = field(default_factory=time.monotonic)

    def report(self, fraction: float, message: str) -> None:
        self.progress = (min(1.0, max(0.0, float(fraction))), str(message))

    @property
    def running(self) -> bool:
        return not self.future.done()


def run_job(job: ScoringJob, fit) -> None:
    """The job's thread: exports first (each its share of the bar), then scoring, one folder after another."""
    if not job.future.set_running_or_notify_cancel():
        return
    try:
        job.report(0.0, f"checking {job.scorer.name}")
        job.scorer.check()  # an unknown task or a missing extra, before any export is written
        exports = [item for item in job.items if item.is_export and not export_is_current(fit, item)]
        units = len(exports) + len(job.items)  # one unit per export written and per folder scored
        for number, item in enumerate(exports):
            if job.cancel.is_set():
                break
            job.report(number / units, f"writing the {item.kind} export for step {item.step}")
            extrapolate(fit, [item.step], item.path, method=item.kind, force=True, progress=False)
        paths = [item.path for item in job.items if not item.is_export or item.path.is_dir()]
        outcomes = []
        if not job.cancel.is_set() and paths:
            done = len(exports) / units

            def progress(fraction, message):
                job.finished = round(fraction * len(paths))
                job.report(done + (1 - done) * fraction, message)

            outcomes = score(paths, job.scorer, out=job.out, force=job.force, progress=progress, cancel=job.cancel)
        job.finished = len(outcomes)
        job.report(1.0, "cancelled" if job.cancel.is_set() else "done")
        job.future.set_result(outcomes)
    except BaseException as error:  # the page shows it
        job.future.set_exception(error)


class _Registry:
    """The job of each scores file. The lock guards the dictionary only, never a job."""

    def __init__(self):
        self.lock = threading.Lock()
        self.jobs: dict[str, ScoringJob] = {}

    def get(self, out) -> ScoringJob | None:
        with self.lock:
            return self.jobs.get(str(out))

    def start(self, fit, out, scorer: Scorer, items, force: bool = False) -> ScoringJob:
        """Starts a job on `out`; refused while one runs there (two jobs would score the same folders)."""
        with self.lock:
            current = self.jobs.get(str(out))
            if current is not None and current.running:
                raise RelexError("a scoring job for this run is still running; cancel it or wait", path=out)
            job = ScoringJob(out=Path(out), scorer=scorer, items=tuple(items), force=force)
            self.jobs[str(out)] = job
            finished = [key for key, other in self.jobs.items() if not other.running]
            for key in finished[:max(0, len(finished) - FINISHED_KEPT)]:
                del self.jobs[key]
        threading.Thread(target=run_job, args=(job, fit), name="relex-scoring", daemon=True).start()
        return job


@st.cache_resource(show_spinner=False)
def registry() -> _Registry:
    return _Registry()
