"""Live mode of the Overview and Window pages: follow a run while it trains.

One `RunWatcher` per run, shared by every session of the server (`st.cache_resource`): a thread
that polls the run folder and grows the Gram with relex_core.live.LiveGram, exactly as `relex
watch` does, so several sessions watching one run cause one pass per new checkpoint, never two.
Its first update is a cache hit on the Gram the page's analysis just wrote. A watcher nobody has
looked at for IDLE_SECONDS stops.

Each page draws `panel(analysis, page)`: a toggle (on by default while the run folder is growing)
and a fragment that reruns every REFRESH_SECONDS on its own (`st.fragment(run_every=…)`), so the
charts follow new checkpoints without rerunning the page or touching the sidebar's widgets. The
live rows are recomputed per session from the shared Gram (its window start and target step).
"""

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from relex_core.cache import default_cache_dir
from relex_core.errors import RelexError
from relex_core.live import AdviceRule, LiveGram, open_when_ready, rows_for_updates
from relex_core.live.watch import RETRIES

from . import charts, evaluate, frames, runs, state
from .report import chart_config

REFRESH_SECONDS = float(os.environ.get("RELEX_LIVE_REFRESH", "5"))   # how often a page's live view redraws
POLL_SECONDS = float(os.environ.get("RELEX_LIVE_POLL", "10"))        # how often the shared watcher polls the run
IDLE_SECONDS = 600           # a watcher no session has drawn for this long stops
CHECKPOINT_PREFIXES = ("checkpoint-", "global_step", "step_", "step-")


@dataclass
class RunWatcher:
    """The shared watcher of one run: its LiveGram, the latest step of each update, and a version."""
    sources: tuple
    base: str | None
    prefer: str
    live: LiveGram = field(default_factory=lambda: LiveGram(cache_dir=default_cache_dir()))
    update_ends: list = field(default_factory=list)
    version: int = 0
    error: str | None = None
    last_seen: float = field(default_factory=time.monotonic)
    last_update: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> "RunWatcher":
        self.thread = threading.Thread(target=self._loop, name="relex-live-watcher", daemon=True)
        self.thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def snapshot(self):
        """(RunGram or None, update ends, version, error), consistent with each other."""
        with self.lock:
            self.last_seen = time.monotonic()
            return self.live.run_gram, tuple(self.update_ends), self.version, self.error

    def _loop(self) -> None:
        failures = 0
        while not self.stop.is_set() and time.monotonic() - self.last_seen < IDLE_SECONDS:
            try:
                run = open_when_ready(list(self.sources), base=self.base, prefer=self.prefer)
                update = None
                if run is not None:
                    with runs.pass_lock(run):  # never beside a session's own pass over this run
                        update = self.live.update(run)
                failures = 0
                if update is not None:
                    with self.lock:
                        self.update_ends.append(int(self.live.run_gram.steps[-1]))
                        self.version += 1
                        self.last_update = time.time()
                        self.error = None
            except (RelexError, OSError) as error:  # a checkpoint deleted mid-read: try again, then say so
                failures += 1
                if failures > RETRIES:
                    with self.lock:
                        self.error = str(error)
            self.stop.wait(POLL_SECONDS)


@st.cache_resource(show_spinner=False)
def _registry() -> dict:
    return {"lock": threading.Lock(), "watchers": {}}


def watcher_of(run) -> RunWatcher:
    """The one watcher of this run (its folders and base), started by the first session that asks."""
    sources = tuple(str(Path(source).resolve()) for source in (run.sources or (run.source,)))
    base = None if run.base.step == 0 and run.base.path.parent.resolve() == Path(sources[0]) else str(run.base.path)
    key = (sources, base)
    registry = _registry()
    with registry["lock"]:
        watcher = registry["watchers"].get(key)
        if watcher is None or not watcher.alive:
            watcher = RunWatcher(sources=sources, base=base, prefer="native").start()
            registry["watchers"][key] = watcher
    return watcher


def is_growing(run) -> bool:
    """A run still training: an unfinished newest checkpoint was skipped when it was opened, or its
    folder holds a checkpoint folder now that it did not hold then (a listing, no file is read)."""
    if any(note.startswith("skipped ") for note in run.notes):
        return True
    known = {checkpoint.path.name for checkpoint in (run.base, *run.checkpoints)}
    known |= {folder.name for checkpoint in (run.base, *run.checkpoints) for folder in checkpoint.path.parents}
    try:
        entries = [entry.name for entry in os.scandir(run.source) if entry.is_dir()]
    except OSError:
        return False
    return any(name.startswith(CHECKPOINT_PREFIXES) and name not in known for name in entries)


def panel(analysis, page: str) -> None:
    """The live toggle and, when on, the live view that refreshes itself."""
    run = analysis.run_gram.run
    on = st.toggle("Live: follow the run as checkpoints land", value=is_growing(run), key=f"{page}.live",
                   help="Polls the run folder and adds each finished checkpoint to the Gram (one watcher per run, "
                        "shared by every session). The rest of the page keeps the analysis it opened with; "
                        "“Re-scan run” brings it up to date.")
    if on:
        _live_view(analysis, page)


@st.cache_resource(show_spinner=False, max_entries=64)
def _rows(version_key: tuple, start: int, target: int, rank: int, fit: str, _run_gram, _ends) -> pd.DataFrame:
    rule = AdviceRule()
    return pd.DataFrame(rows_for_updates(_run_gram, _ends, start, target, rule.updates, rank=rank,
                                         **runs.fit_options(fit)))


@st.fragment(run_every=REFRESH_SECONDS)
def _live_view(analysis, page: str) -> None:
    watcher = watcher_of(analysis.run_gram.run)
    run_gram, ends, version, error = watcher.snapshot()
    if error:
        st.error(f"The live watcher stopped updating: {error}")
    if run_gram is None:
        st.info("Live: waiting for the watcher's first update…")
        return
    steps = [int(step) for step in run_gram.steps]
    target = int(st.number_input("Step to predict", min_value=1, value=2 * steps[-1], step=1,
                                 key=f"{page}.live_target",
                                 help="The advice asks whether the prediction for this step has settled."))
    start = int(analysis.window[0])
    rows = _rows((id(watcher), version), start, target, analysis.rank, analysis.fit_name, run_gram, ends)
    rule = AdviceRule()
    settled = _settled_row(rows, rule)
    if settled is not None:
        st.success(f"**{rule.message(settled)}**", icon="✅")
    updated = time.strftime("%H:%M:%S", time.localtime(watcher.last_update)) if watcher.last_update else "—"
    st.caption(f"Live · {len(steps)} checkpoints after the base, latest step {steps[-1]} · {version} update(s), "
               f"last at {updated} · window {start}:{steps[-1]} · advice: {rule.text}.")
    if page == "overview":
        distance = frames.update_norm_frame(run_gram)
        left, right = st.columns(2)
        left.plotly_chart(charts.update_norm_chart(distance, (start, steps[-1])), key=f"{page}.live_distance",
                          config=chart_config("live_distance"))
        right.plotly_chart(advice_chart(rows, rule, target), key=f"{page}.live_advice",
                           config=chart_config("live_advice"))
    else:
        st.plotly_chart(advice_chart(rows, rule, target), key=f"{page}.live_advice", config=chart_config("live_advice"))
    # what the Evaluate page scored for this run (its scores.csv, read as that page reads it), beside the live view
    scores, _ = evaluate.stored_scores(evaluate.scores_folder(run_gram.run) / evaluate.SCORES_FILE)
    if not scores.empty:
        scorer, metric = evaluate.measures(scores)[0]  # the most recently scored measure
        rows = evaluate.of_measure(scores, scorer, metric)
        st.plotly_chart(charts.scores_chart(rows, (start, steps[-1]), f"{metric} (±1 standard error)"),
                        key=f"{page}.live_scores", config=chart_config("live_scores"))


def _settled_row(rows: pd.DataFrame, rule: AdviceRule):
    records = rows.to_dict("records")
    index = rule.first_settled(records)
    return None if index is None else records[index]


def advice_chart(rows: pd.DataFrame, rule: AdviceRule, target: int) -> go.Figure:
    """The advice's two curves against the latest step, with their thresholds."""
    figure = charts._figure(f"Has the prediction for step {target} settled?", charts.STEP_AXIS,
                            "relative change / error")
    if rows.empty:
        return figure
    curves = (("settle_change", f"change of the prediction over {rule.updates} updates", rule.change_tolerance,
               charts.OKABE_ITO[0]),
              ("forecast_error", "earlier windows' forecast error", rule.forecast_tolerance, charts.OKABE_ITO[1]))
    for column, name, threshold, color in curves:
        figure.add_trace(go.Scatter(x=rows["latest_step"], y=rows[column], mode="lines+markers", name=name,
                                    line=dict(color=color),
                                    hovertemplate=f"step %{{x}}<br>{name} = %{{y:.2%}}<extra></extra>"))
        figure.add_hline(y=threshold, line=dict(color=color, dash="dash", width=1))
    figure.update_yaxes(tickformat=".0%")
    return figure
