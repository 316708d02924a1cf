"""Streamlit glue shared by app.py and the pages: run picker, shared window / rank / fit, caches, errors.

Caching, from slow to fast:
- the Gram pass: relex's disk cache (survives restarts) under an in-process store held by
  `st.cache_resource`, so page switches and widget changes never touch the checkpoints again;
- WindowFit per (run fingerprint, window, rank, degree), and the per-window-end backtests,
  via `st.cache_resource`: a window or rank change redoes only Gram maths. The per-window-end
  figures are started in a background thread as soon as the window's start is known.
The window, rank and fit degree live in st.session_state under canonical keys; each place
that draws one of them (sidebar, Window page, Export page) has its own widget, synced to it.
"""

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from relex_core.analysis import WindowFit, spectrum_frame, stability_frame
from relex_core.errors import RelexError
from relex_core.gram import RunGram, compute_gram
from relex_core.io.discover import open_run
from relex_core.options import FIT_NAMES
from relex_core import selection
from relex_core.spectra import delta_spectrum_frame
from . import frames

SAMPLE_RUN = "Sample run"
FOLDER_RUN = "Folder on this server"
WINDOW, RANK, DEGREE = "relex.window", "relex.rank", "relex.degree"
DEGREE_NAMES = FIT_NAMES


@dataclass(frozen=True)
class Analysis:
    """What every page works from: the run's Gram and the shared window, rank and fit degree."""
    run_gram: RunGram
    window: tuple[int, int]
    rank: int
    degree: int
    repo_root: Path
    is_sample: bool

    @property
    def fit(self) -> WindowFit:
        return window_fit(self.run_gram, self.window, self.rank, self.degree)

    @property
    def window_label(self) -> str:
        return f"{self.window[0]}:{self.window[1]}"

    @property
    def steps(self) -> list[int]:
        return [int(step) for step in self.run_gram.steps]


# --------------------------------------------------------------------------- caches


class _GramStore:
    """Process-wide RunGrams by (run, base); one lock so two sessions never run the same pass twice."""

    def __init__(self):
        self.lock = threading.Lock()
        self.grams: dict = {}


@st.cache_resource(show_spinner=False)
def _gram_store() -> _GramStore:
    return _GramStore()


def load_run_gram(source: Path, base: Path | None, rescan: bool = False, where=None) -> RunGram:
    """The run's Gram: from memory, else relex's disk cache, else one pass drawn with a progress bar in `where`."""
    store = _gram_store()
    key = (str(source), str(base) if base else "")
    with store.lock:
        if rescan:
            store.grams.pop(key, None)
        if key in store.grams:
            return store.grams[key]
        run = open_run(source, base)
        label = f"Analysing {source.name}: one pass over {len(run.checkpoints) + 1} checkpoints"
        with (where or st.container()).status(label, expanded=True) as status:
            bar = st.progress(0.0, text="opening checkpoints")
            run_gram = compute_gram(run, progress=lambda fraction, message: bar.progress(min(1.0, fraction),
                                                                                         text=message))
            bar.progress(1.0, text="done")
            status.update(label=f"Analysis ready ({'from the disk cache' if run_gram.from_cache else 'Gram pass done'})",
                          state="complete", expanded=False)
        store.grams[key] = run_gram
        return run_gram


@st.cache_resource(show_spinner=False, max_entries=256)
def _window_fit(fingerprint: str, window: tuple, rank: int, degree: int, _run_gram: RunGram) -> WindowFit:
    return WindowFit(_run_gram, window, rank=rank, degree=degree)


def window_fit(run_gram: RunGram, window, rank: int = 1, degree: int = 1) -> WindowFit:
    """WindowFit cached per (run fingerprint, window, rank, degree)."""
    return _window_fit(run_gram.fingerprint, tuple(int(step) for step in window), int(rank), int(degree), run_gram)


@st.cache_resource(show_spinner=False)
def _background() -> ThreadPoolExecutor:
    """One worker for the Window page's every-window-end figures, started before the page is opened."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="relex-window-ends")


@st.cache_resource(show_spinner=False, max_entries=64)
def _window_end_backtests(fingerprint: str, start: int, rank: int, degree: int, _run_gram: RunGram) -> Future:
    return _background().submit(selection.window_end_backtests, _run_gram, start, rank, degree)


def window_end_backtests(run_gram: RunGram, start: int, rank: int, degree: int):
    """`selection.window_end_backtests`, cached per (run, start, rank, degree); waits if still computing."""
    return _window_end_backtests(run_gram.fingerprint, int(start), int(rank), int(degree), run_gram).result()


@st.cache_resource(show_spinner=False, max_entries=64)
def _stability(fingerprint: str, start: int, reference: tuple | None, _run_gram: RunGram) -> Future:
    return _background().submit(stability_frame, _run_gram, start=start, reference=reference)


def stability(run_gram: RunGram, start: int, reference=None):
    """`stability_frame` for growing windows from `start`, cached; waits if still computing."""
    return _stability(run_gram.fingerprint, int(start), tuple(reference) if reference else None, run_gram).result()


def prefetch_window_ends(analysis: "Analysis") -> None:
    """Start the Window page's every-window-end figures for the current start, rank and fit in the
    background (a WindowFit per checkpoint: about a second on a small run), so the page opens at once."""
    run_gram, start = analysis.run_gram, analysis.window[0]
    _window_end_backtests(run_gram.fingerprint, int(start), analysis.rank, analysis.degree, run_gram)
    _stability(run_gram.fingerprint, int(start), None, run_gram)


@st.cache_resource(show_spinner=False, max_entries=64)
def _spectrum(fingerprint: str, window: tuple, _fit: WindowFit):
    return spectrum_frame(_fit)


def spectrum(analysis: Analysis):
    """The window's full trajectory spectrum per tensor (it depends on the window only, not on rank or fit)."""
    return _spectrum(analysis.run_gram.fingerprint, analysis.window, analysis.fit)


@st.cache_resource(show_spinner="Reading the tensor from two checkpoints…", max_entries=64)
def _delta_spectrum(fingerprint: str, tensor: str, step: int, k: int, _run_gram: RunGram):
    return delta_spectrum_frame(_run_gram, tensor, step, k)


def delta_spectrum(run_gram: RunGram, tensor: str, step: int, k: int):
    """Top-k singular values of ΔW for one tensor and checkpoint, cached (it reads weights)."""
    return _delta_spectrum(run_gram.fingerprint, tensor, int(step), int(k), run_gram)


# --------------------------------------------------------------------------- errors


@contextmanager
def errors_shown():
    """Show a RelexError as st.error(str(error)) where it happened; the rest of the page still draws."""
    try:
        yield
    except RelexError as error:
        st.error(str(error))


# --------------------------------------------------------------------------- shared controls


def _plain(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _synced(name: str, place: str) -> tuple[str, object, callable]:
    """Widget key for `name` at `place`, its value (the canonical one) and its on_change copier.

    The widget state is only overwritten when the canonical value changed elsewhere (another
    place, or a button), so the value a user just set is never fought over.
    """
    widget_key = f"{place}:{name}"
    value = st.session_state[name]
    if _plain(st.session_state.get(widget_key)) != value:
        st.session_state[widget_key] = value

    def copy_back():
        st.session_state[name] = _plain(st.session_state[widget_key])

    return widget_key, value, copy_back


def window_rank_fit_controls(analysis_steps, place: str, container=None, compact: bool = False) -> None:
    """Draw the shared window slider, rank and fit choice at `place` (all synced through session_state).

    `value=` repeats the canonical value: it makes the select_slider a range slider.
    """
    container = container or st
    key, value, on_change = _synced(WINDOW, place)
    container.select_slider("Observation window (training steps)", options=analysis_steps, value=value, key=key,
                            on_change=on_change,
                            help="The checkpoints the fit sees (inclusive). The base is never in the window.")
    columns = container.columns(2) if compact else (container, container)
    size = sum(value[0] <= step <= value[1] for step in analysis_steps)
    key, value, on_change = _synced(RANK, place)
    columns[0].number_input("Rank k", min_value=1, max_value=max(1, size), value=value, step=1, key=key,
                            on_change=on_change, help="How many trajectory directions the fit keeps.")
    key, value, on_change = _synced(DEGREE, place)
    columns[1].radio("Fit", options=list(DEGREE_NAMES), index=list(DEGREE_NAMES).index(value),
                     format_func=DEGREE_NAMES.get, key=key, on_change=on_change, horizontal=True,
                     help="Trend of each coefficient over steps: a line, or a parabola (poly2).")


def _settle_shared_values(steps) -> None:
    """Keep the shared window, rank and degree valid for the run now loaded."""
    window = frames.clamp_window(st.session_state.get(WINDOW), steps)
    st.session_state[WINDOW] = window
    size = sum(window[0] <= step <= window[1] for step in steps)
    st.session_state[RANK] = min(max(1, int(st.session_state.get(RANK, 1))), size)
    degree = int(st.session_state.get(DEGREE, 1))
    st.session_state[DEGREE] = degree if degree in DEGREE_NAMES and size > degree else 1


# --------------------------------------------------------------------------- the sidebar


def _user_path(text: str, repo_root: Path) -> Path:
    path = Path(text.strip()).expanduser()
    return path if path.is_absolute() else repo_root / path


def app_folder() -> Path:
    """The repository root (the folder above relex_dashboard/): the sample run and relative paths are found from it."""
    return Path(__file__).resolve().parents[1]


def _sidebar(repo_root: Path, messages) -> Analysis | None:
    """The run picker and the shared controls; None (with the reason shown in `messages`) when no run is loaded."""
    with st.sidebar:
        st.subheader("Run")
        choice = st.radio("Run", [SAMPLE_RUN, FOLDER_RUN], key="relex.run_choice", label_visibility="collapsed")
        if choice == SAMPLE_RUN:
            source = repo_root / "sample_data" / "run"
            st.caption(f"`{source}`")
        else:
            text = st.text_input("Run folder or manifest", key="relex.run_folder",
                                 placeholder="/data/runs/my-grpo", help="A path on the machine running relex.")
            if not text.strip():
                st.info("Enter the path of a run folder (checkpoint-N, global_step_N, ...) or a manifest.")
                return None
            source = _user_path(text, repo_root)
        base_text = st.text_input("Base checkpoint (optional)", key="relex.base",
                                  help="Overrides the run's step-0 checkpoint as θ_0.")
        rescan = st.button("Re-scan run", help="Look for new checkpoints (the disk cache is reused when unchanged).")
    base = _user_path(base_text, repo_root) if base_text.strip() else None
    try:
        run_gram = load_run_gram(source, base, rescan, messages)
    except RelexError as error:
        messages.error(str(error))
        return None
    steps = [int(step) for step in run_gram.steps]
    _settle_shared_values(steps)
    with st.sidebar:
        st.caption(f"{len(steps)} checkpoints after the base, steps {steps[0]}–{steps[-1]}")
        st.subheader("Window and fit")
        window_rank_fit_controls(steps, "sidebar")
    return Analysis(run_gram=run_gram, window=tuple(st.session_state[WINDOW]), rank=int(st.session_state[RANK]),
                    degree=int(st.session_state[DEGREE]), repo_root=repo_root, is_sample=choice == SAMPLE_RUN)


def page_setup() -> Analysis:
    """First call of every page: draw the sidebar and return the Analysis, or say what is missing and stop.

    Each page draws the sidebar itself (rather than app.py before `page.run()`), so a page file
    is complete on its own and the Analysis it gets is always the one of this very run.
    """
    # One slot on top of the page for the analysis progress or a loading error: it is there on every
    # run, so the page's elements keep their places and none is left over from the previous run.
    analysis = _sidebar(app_folder(), st.empty())
    if analysis is None:
        st.info("Pick a run in the sidebar to start.")
        st.stop()
    prefetch_window_ends(analysis)
    return analysis
