"""One session's state: the run it looks at, the window / rank / fit, the URL, the sidebar.

Application state lives in st.session_state under the canonical `relex.*` keys below, never
in a widget's own state: Streamlit drops a widget's state when the page that drew it is left,
so every page draws the sidebar widgets again from these keys (`bind`). The URL mirrors them
(`run`, `base`, `window`, `rank`, `fit`, `fit_last`, `refit_every`), so a link or a reload opens the same run and window;
a parameter that does not fit falls back to the default, with a note on the page.

A run newly opened in a session gets its own defaults (the first ~20% of its checkpoints as
the window), and every page widget that depends on the run is reset: their keys start with
a page prefix (`trajectory.`, `export.`, ...), and all of those are dropped, so no value of
the previous run survives. Values that follow other settings (target steps, export folder
names) use `follow_default`, which keeps a user's edit and otherwise tracks the default.
"""

import hashlib
import time
from concurrent.futures import wait
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st

from relex_core import __version__
from relex_core.errors import RelexError
from relex_core.gram import RunGram
from relex_core.options import FIT_NAMES, parse_fit, parse_window

from . import files, frames, runs

# Canonical keys: what this session looks at, whatever page draws it.
SOURCE = "relex.source"      # SAMPLE or FOLDER
FOLDER = "relex.folder"      # the run folder or manifest as typed
BASE = "relex.base"          # the base checkpoint as typed ("" for the run's step-0 checkpoint)
WINDOW = "relex.window"      # (first step, last step), inclusive
RANK = "relex.rank"          # int
FIT = "relex.fit"            # a trend name (FIT_NAMES)
FIT_LAST = "relex.fit_last"  # fit on the window's last W checkpoints (0: all of them)
REFIT_EVERY = "relex.refit_every"  # autoregressive refits every F checkpoint intervals (0: none)
TENSOR = "relex.tensor"      # the Trajectory page's tensor (a heatmap click sets it)
RUN_ID = "relex.run_id"      # the opened run (folder and base) the window, rank and fit belong to
OPENED = "relex.opened"      # memo of the opened run: {"spec", "run", "key"}
NOTES = "relex.notes"        # notes for the page (URL parameters that fell back to defaults)
PENDING = "relex.pending"    # window / rank / fit from the URL, applied once the run is analysed
URL_READ = "relex.url_read"

SAMPLE, FOLDER_CHOICE = "sample", "folder"
CHOICE_LABELS = {SAMPLE: "Sample run", FOLDER_CHOICE: "Folder on this server"}
FIT_CHOICES = list(FIT_NAMES)
# Widget keys starting with these belong to one page and to the run it showed.
PAGE_PREFIXES = ("overview.", "spectra.", "trajectory.", "window.", "export.", "evaluate.")
FIRST_WAIT_SECONDS = 0.5  # a cached Gram loads within this: the page then draws without a progress flash


@dataclass(frozen=True)
class Analysis:
    """What every page works from: the run's Gram and the session's window, rank and fit.

    fit_name is the whole fit setting (`runs.fit_setting`: the trend, plus `-lastW` / `-everyF`)."""
    run_gram: RunGram
    window: tuple[int, int]
    rank: int
    fit_name: str
    is_sample: bool
    run_key: str

    @property
    def fit(self):
        """The WindowFit of the session's window, rank and fit (cached per run)."""
        return runs.window_fit(self.run_gram, self.window, self.rank, self.fit_name)

    @property
    def window_label(self) -> str:
        return f"{self.window[0]}:{self.window[1]}"

    @property
    def steps(self) -> list[int]:
        return [int(step) for step in self.run_gram.steps]

    @property
    def context(self) -> dict:
        """The facts a figure report carries."""
        run = self.run_gram.run
        return {"run": str(run.source), "base": str(run.base.path), "window": self.window_label,
                "rank": self.rank, "fit": self.fit_name, "relex version": __version__}


# --------------------------------------------------------------------------- small helpers


@contextmanager
def errors_shown(where=None):
    """Show a RelexError as one error line where it happened; the rest of the page still draws."""
    try:
        yield
    except RelexError as error:
        (where or st).error(str(error))


def code(text) -> str:
    """Text as inline code for Markdown: window labels like 0:100 stay as typed (no emoji shortcode)."""
    return f"`{text}`"


def bind(widget_key: str, canonical_key: str, default=None):
    """Before drawing a widget: give it the canonical value, which outlives pages; returns the
    on_change callback that copies the widget's value back.

    The widget's state is written on every run, even when it holds the same value: a widget
    drawn by another page is another widget to Streamlit, and would start from its default.
    A value the user just set is never lost: its on_change has copied it back before the run.
    """
    if canonical_key not in st.session_state:
        st.session_state[canonical_key] = default
    st.session_state[widget_key] = st.session_state[canonical_key]

    def copy_back():
        st.session_state[canonical_key] = _plain(st.session_state[widget_key])
        st.session_state.pop(NOTES, None)

    return copy_back


def _plain(value):
    return tuple(value) if isinstance(value, list) else value


def follow_default(key: str, default) -> str:
    """The widget key for a value that follows a default (a target step, a folder name, a step that
    depends on the window): one key per default, so a changed default shows in a fresh widget, and a
    user's edit holds until the default changes.

    Not one key rewritten with each new default: while reruns chase each other (a slider moved by
    keyboard), the browser can send back the widget's previous value, which would look like an edit
    and leave a stale value, such as an old target beside a chart of a new window.
    """
    widget_key = f"{key}@{hashlib.sha1(repr(default).encode()).hexdigest()[:10]}"
    st.session_state.setdefault(widget_key, default)
    return widget_key


TRAJECTORY_PAGE = "app_pages/trajectory.py"
OPEN_TRAJECTORY = "relex.open_trajectory"


def on_tensor_click(chart_key: str):
    """on_select callback of a layer × module heatmap: the clicked cell's tensor becomes the
    Trajectory page's tensor, and `follow_tensor_click` then opens that page.

    A callback, not a check of the returned selection: the selection stays in the chart's state,
    and a check on every rerun would open the page again and again.
    """
    def clicked():
        event = st.session_state.get(chart_key)
        points = event["selection"]["points"] if event else []
        names = [point.get("customdata") for point in points if isinstance(point.get("customdata"), str)]
        if names:
            st.session_state[TENSOR] = names[0]
            st.session_state[OPEN_TRAJECTORY] = True

    return clicked


def follow_tensor_click(on_trajectory: bool = False) -> None:
    """Open the Trajectory page if a heatmap click asked for it (nothing to do when already there)."""
    if st.session_state.pop(OPEN_TRAJECTORY, False) and not on_trajectory:
        st.switch_page(TRAJECTORY_PAGE)


def confirm_targets(target_steps, window, key: str, where=None) -> bool:
    """Say what each target is for the window (fitted point, back-cast, far extrapolation); far
    targets need the confirmation checkbox. True when the targets may be used."""
    where = where or st
    check = frames.check_targets(target_steps, window)
    for note in check.notes:
        (where.warning if check.far and note == check.notes[-1] else where.info)(note)
    if check.far:  # asked again for every new far target
        return where.checkbox("Extrapolate that far anyway", key=f"{key}@{'-'.join(map(str, check.far))}")
    return True


# --------------------------------------------------------------------------- the URL


def _read_url() -> None:
    """Once per session: take run, base, window, rank and fit from the URL (window / rank / fit wait
    for the run's analysis in PENDING); a run or base that cannot be opened falls back with a note."""
    if st.session_state.get(URL_READ):
        return
    st.session_state[URL_READ] = True
    params, notes, sample = st.query_params, [], files.sample_run()
    st.session_state.setdefault(SOURCE, SAMPLE if sample else FOLDER_CHOICE)
    run_text, base_text = params.get("run", "").strip(), params.get("base", "").strip()
    if run_text:
        choice = SAMPLE if run_text == SAMPLE else FOLDER_CHOICE
        try:
            if choice == SAMPLE:
                if sample is None:
                    raise RelexError("the sample run is not installed here")
                files.open_allowed_run(str(sample), base_text)
            else:
                files.open_allowed_run(run_text, base_text, files.run_roots())
            st.session_state[SOURCE], st.session_state[BASE] = choice, base_text
            if choice == FOLDER_CHOICE:
                st.session_state[FOLDER] = run_text
        except RelexError as error:
            fallback = "the sample run" if sample else "no run"
            notes.append(f"The link's run could not be opened ({error}); showing {fallback} instead.")
            st.session_state[SOURCE] = SAMPLE if sample else FOLDER_CHOICE
    pending = {name: params.get(name) for name in ("window", "rank", "fit", "fit_last", "refit_every")
               if params.get(name)}
    if pending:
        st.session_state[PENDING] = pending
    st.session_state[NOTES] = notes


def _write_url(analysis: Analysis | None = None) -> None:
    """Mirror the session's run (and, once analysed, window, rank and fit) in the URL."""
    wanted = {"run": SAMPLE if st.session_state.get(SOURCE) == SAMPLE else st.session_state.get(FOLDER, "")}
    if st.session_state.get(BASE):
        wanted["base"] = st.session_state[BASE]
    if analysis is not None:
        options = runs.fit_options(analysis.fit_name)
        wanted.update(window=analysis.window_label, rank=str(analysis.rank), fit=options["fit"],
                      fit_last=str(options["fit_last"] or ""), refit_every=str(options["refit_every"] or ""))
    wanted = {name: value for name, value in wanted.items() if value}
    if {name: st.query_params.get(name) for name in st.query_params} != wanted:
        st.query_params.from_dict(wanted)


def _apply_pending(steps, notes: list) -> None:
    """The URL's window / rank / fit for the run just analysed; one that does not fit keeps the default."""
    pending = st.session_state.pop(PENDING, {})
    if "fit" in pending:
        try:
            name = parse_fit(pending["fit"]).name  # 'poly1' is 'linear'
        except RelexError:
            name = None
        if name in FIT_CHOICES:
            st.session_state[FIT] = name
        else:
            notes.append(f"The link's fit '{pending['fit']}' is not one of {', '.join(FIT_CHOICES)}; using "
                         f"{st.session_state[FIT]}.")
    minimum = runs.min_window(st.session_state[FIT])
    if "window" in pending:
        try:
            first, last = parse_window(pending["window"])
            if first not in steps or last not in steps or frames.window_size((first, last), steps) < minimum:
                raise RelexError(f"needs two checkpoint steps of this run with at least {minimum} checkpoints "
                                 "between them, inclusive")
            st.session_state[WINDOW] = (first, last)
        except (RelexError, TypeError) as error:
            notes.append(f"The link's window '{pending['window']}' does not fit this run ({error}); using "
                         f"{st.session_state[WINDOW][0]}:{st.session_state[WINDOW][1]}.")
    if "rank" in pending:
        size = frames.window_size(st.session_state[WINDOW], steps)
        text = pending["rank"]
        if text.isdigit() and 1 <= int(text) <= size:
            st.session_state[RANK] = int(text)
        else:
            notes.append(f"The link's rank '{text}' must be a whole number from 1 to the window's {size} "
                         f"checkpoints; using {st.session_state[RANK]}.")
    for name, key in (("fit_last", FIT_LAST), ("refit_every", REFIT_EVERY)):
        if name in pending:
            text = pending[name]
            if text.isdigit():
                st.session_state[key] = int(text)
            else:
                notes.append(f"The link's {name} '{text}' must be a whole number; not used.")


# --------------------------------------------------------------------------- the run


def _run_picker() -> tuple | None:
    """The sidebar's run choice, drawn from the canonical keys; (choice, folder text, base text) or None."""
    sample = files.sample_run()
    st.subheader("Run")
    st.session_state.setdefault(SOURCE, SAMPLE if sample else FOLDER_CHOICE)
    on_change = bind("sidebar.source", SOURCE)
    choice = st.radio("Run", list(CHOICE_LABELS), format_func=CHOICE_LABELS.get, key="sidebar.source",
                      on_change=on_change, label_visibility="collapsed")
    if choice == SAMPLE:
        if sample is None:
            st.error("The sample run is not installed here (set RELEX_SAMPLE_RUN to its folder).")
            return None
        st.caption(code(sample))
        folder = str(sample)
    else:
        on_change = bind("sidebar.folder", FOLDER, "")
        roots = files.run_roots()
        folder = st.text_input("Run folder or manifest", key="sidebar.folder", on_change=on_change,
                               placeholder=str(roots[0] / "my-grpo") if roots else "/data/runs/my-grpo",
                               help="A path on the machine running relex"
                                    + (f", inside {', '.join(map(str, roots))}." if roots else "."))
        if not folder.strip():
            st.info("Enter the path of a run folder (checkpoint-N, global_step_N, ...) or a manifest.")
            return None
    on_change = bind("sidebar.base", BASE, "")
    base = st.text_input("Base checkpoint (optional)", key="sidebar.base", on_change=on_change,
                         help="Overrides the run's step-0 checkpoint as θ₀.")
    return choice, folder.strip(), base.strip()


def _open(spec: tuple, rescan: bool):
    """The run and its key for (choice, folder, base), remembered for the session until a re-scan."""
    opened = st.session_state.get(OPENED)
    if opened is None or opened["spec"] != spec or rescan:
        choice, folder, base = spec
        roots = None if choice == SAMPLE else files.run_roots()
        run = files.open_allowed_run(folder, base, roots)
        opened = {"spec": spec, "run": run, "key": runs.run_key(run)}
        st.session_state[OPENED] = opened
    return opened["run"], opened["key"]


@st.fragment(run_every=0.5)
def _progress(analysis: runs.RunAnalysis) -> None:
    """The pass's progress as its callback reports it, redrawn twice a second; the whole page reruns when done."""
    if analysis.future.done():
        st.rerun()
    fraction, message = analysis.progress
    seconds = time.monotonic() - analysis.started
    st.progress(fraction, text=f"{message} · {seconds:.0f} s")


def _reset_run_dependent(steps) -> None:
    """Defaults of a newly opened run: its own window, no page widget of the previous run."""
    for key in [key for key in st.session_state if str(key).startswith(PAGE_PREFIXES)]:
        del st.session_state[key]
    st.session_state.pop(TENSOR, None)
    st.session_state.setdefault(FIT, FIT_CHOICES[0])
    st.session_state.setdefault(RANK, 1)
    st.session_state[FIT_LAST] = st.session_state[REFIT_EVERY] = 0  # a new run's window may not take the last ones
    st.session_state[WINDOW] = frames.default_window(steps, runs.min_window(st.session_state[FIT]))


def _settle(run_gram: RunGram, run_id: str, notes: list) -> None:
    """Make the canonical window, rank and fit valid for this run (its defaults if it is new here)."""
    steps = [int(step) for step in run_gram.steps]
    if st.session_state.get(RUN_ID) != run_id:
        _reset_run_dependent(steps)
        st.session_state[RUN_ID] = run_id
        _apply_pending(steps, notes)
    window = frames.clamp_window(st.session_state.get(WINDOW), steps)  # a re-scan may have changed the steps
    st.session_state[WINDOW] = window
    size = frames.window_size(window, steps)
    st.session_state[RANK] = min(max(1, int(st.session_state.get(RANK, 1))), size)
    fit = st.session_state.get(FIT, FIT_CHOICES[0])
    if size < runs.min_window(fit):
        notes.append(f"The fit {fit} needs at least {runs.min_window(fit)} checkpoints in the window; "
                     f"{code(window[0])}–{code(window[1])} holds {size}, so the fit is {FIT_CHOICES[0]}.")
        fit = FIT_CHOICES[0]
    st.session_state[FIT] = fit
    setting = session_fit_setting()
    if setting != fit:  # fit_last / refit_every: this window must take them (enough points, even steps)
        try:
            runs.window_fit(run_gram, window, st.session_state[RANK], setting)
        except RelexError as error:
            notes.append(f"The fit options of {code(setting)} do not suit window {code(f'{window[0]}:{window[1]}')} "
                         f"({error}); fitting {fit} on the whole window.")
            st.session_state[FIT_LAST] = st.session_state[REFIT_EVERY] = 0


def session_fit_setting() -> str:
    """The session's fit as `runs.fit_setting` writes it."""
    return runs.fit_setting(st.session_state.get(FIT, FIT_CHOICES[0]), st.session_state.get(FIT_LAST, 0),
                            st.session_state.get(REFIT_EVERY, 0))


def _controls(steps) -> None:
    """The window slider, rank and fit: drawn once, in the sidebar, from the canonical keys."""
    st.subheader("Window and fit")
    on_change = bind("sidebar.window", WINDOW)
    # value= repeats the canonical value: it is what makes a select_slider a range slider.
    st.select_slider("Observation window (training steps)", options=steps, value=st.session_state[WINDOW],
                     key="sidebar.window", on_change=on_change,
                     help="The checkpoints the fit sees (inclusive). The base is never in the window.")
    size = frames.window_size(st.session_state[WINDOW], steps)
    on_change = bind("sidebar.rank", RANK)
    st.number_input("Rank k", min_value=1, max_value=max(1, size), step=1, key="sidebar.rank", on_change=on_change,
                    help="How many trajectory directions the fit keeps.")
    on_change = bind("sidebar.fit", FIT)
    st.radio("Fit", FIT_CHOICES, key="sidebar.fit", on_change=on_change, horizontal=True,
             help="Trend of each coefficient over steps: a line, a polynomial of degree 2 or 3, or a sinusoid "
                  "A·sin(2πf·s + φ) + C (the paper's ablation).")
    with st.expander("Fit options (the official scripts' ablations)",
                     expanded=bool(st.session_state.get(FIT_LAST) or st.session_state.get(REFIT_EVERY))):
        on_change = bind("sidebar.fit_last", FIT_LAST, 0)
        st.number_input("Fit on the last W checkpoints (0: all)", min_value=0, max_value=max(1, size), step=1,
                        key="sidebar.fit_last", on_change=on_change,
                        help="The directions still come from the whole window; the trend is fitted to its last W "
                             "checkpoints only (the official --window W).")
        on_change = bind("sidebar.refit_every", REFIT_EVERY, 0)
        st.number_input("Refit every F intervals (0: never)", min_value=0, max_value=10_000, step=1,
                        key="sidebar.refit_every", on_change=on_change,
                        help="Autoregressive extrapolation: step one checkpoint interval at a time, append each "
                             "prediction to the fitted points and refit every F steps (the official "
                             "--future_extrapolation_window F). Needs evenly spaced checkpoints.")


def _stop(messages, text: str = "Pick a run in the sidebar to start.") -> None:
    _show_notes(messages)
    _write_url()
    st.info(text)
    st.stop()


def _show_notes(messages) -> None:
    for note in st.session_state.get(NOTES, []):
        messages.warning(note)


def page_setup() -> Analysis:
    """First call of every page: the sidebar, then the Analysis, or what is missing and stop.

    While the run's pass runs (in the background, shared with every session on the same run)
    the page shows its progress and stops; it reruns by itself when the pass is done.
    """
    _read_url()
    messages = st.container()
    with st.sidebar:
        spec = _run_picker()
        rescan = st.button("Re-scan run", key="sidebar.rescan", disabled=spec is None,
                           help="Look for new checkpoints (the disk cache is reused when nothing changed).")
    if spec is None:
        _stop(messages)
    try:
        run, key = _open(spec, rescan)
    except RelexError as error:
        messages.error(str(error))
        _stop(messages)
    analysis = runs.analysis_of(run, key, rescan)
    wait([analysis.future], timeout=FIRST_WAIT_SECONDS)
    if not analysis.future.done():
        _show_notes(messages)
        _write_url()
        with messages.status(analysis.title, expanded=True):
            _progress(analysis)
        st.stop()
    error = analysis.future.exception()
    if isinstance(error, RelexError):
        messages.error(str(error))
        _stop(messages, "Fix the run, then press “Re-scan run” to analyse it again.")
    if error is not None:
        raise error
    run_gram = analysis.future.result()
    _settle(run_gram, f"{run.source}|{run.base.path}", st.session_state.setdefault(NOTES, []))
    _show_notes(messages)
    st.session_state[NOTES] = []  # shown once: gone at the next rerun
    steps = [int(step) for step in run_gram.steps]
    with st.sidebar:
        source = "from the disk cache" if run_gram.from_cache else "one Gram pass"
        st.caption(f"{len(steps)} checkpoints after the base, steps {steps[0]}–{steps[-1]} ({source})")
        _controls(steps)
    result = Analysis(run_gram=run_gram, window=tuple(st.session_state[WINDOW]), rank=int(st.session_state[RANK]),
                      fit_name=session_fit_setting(), is_sample=spec[0] == SAMPLE, run_key=key)
    _write_url(result)
    runs.prefetch_window_ends(run_gram, result.window[0], result.rank, result.fit_name)
    return result
