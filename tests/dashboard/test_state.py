"""Session state under AppTest: the run survives page switches and lives in the URL, a new run gets its own
defaults, paths outside RELEX_RUN_ROOTS are refused, and sessions share one pass per run without blocking."""

import threading
import time

import pytest

from relex_core import WindowFit, compute_gram
from relex_dashboard import runs
from relex_dashboard.state import FIT, RANK, WINDOW

from .apptest import (PAGES, analysing, assert_no_exception, decode, figures, numbers, on_page, open_app,
                      set_run_folder, texts, wait_for_analysis, widget)
from .conftest import OTHER_STEPS, SAMPLE_RUN


def shows_other_run(app) -> bool:
    """The sidebar names the other run's steps; nothing on the page names the sample's last step."""
    caption = app.sidebar.caption[-1].value
    return f"10 checkpoints after the base, steps {OTHER_STEPS[0]}–{OTHER_STEPS[-1]}" in caption and \
        "1440" not in texts(app) and "1,440" not in texts(app)


def test_the_chosen_run_stays_on_every_page(relex_cache, other_run):
    app = open_app()
    set_run_folder(app, other_run)
    assert_no_exception(app)
    for page in PAGES:
        on_page(app, page)
        assert app.sidebar.radio(key="sidebar.source").value == "folder"
        assert app.sidebar.text_input(key="sidebar.folder").value == str(other_run)
        assert shows_other_run(app), page
        for figure in figures(app).values():  # no chart draws a step of the sample run
            for item in figure["data"]:
                assert not step_values(item) & SAMPLE_ONLY_STEPS, (page, item.get("name"))


SAMPLE_ONLY_STEPS = {float(step) for step in range(48, 1441, 48)} - {float(step) for step in OTHER_STEPS}


def step_values(item) -> set:
    """The numeric x values of a trace (none for categorical axes such as a heatmap's module names)."""
    if item.get("type") == "histogram" or "x" not in item:
        return set()
    try:
        return set(numbers(decode(item["x"])).tolist())
    except (TypeError, ValueError):
        return set()


def test_a_new_run_gets_its_own_defaults_and_no_stale_widget(relex_cache, other_run, other_gram):
    app = open_app()
    app.sidebar.select_slider(key="sidebar.window").set_range(96, 480).run()
    on_page(app, "trajectory")
    app.selectbox(key="trajectory.tensor").set_value("model.layers.2.mlp.down_proj.weight").run()
    widget(app, "text_input", "Extrapolate to step").set_value("100").run()
    on_page(app, "export")
    widget(app, "text_input", "Target step(s)").set_value("2880").run()
    assert widget(app, "text_input", "Output folder (inside the export root)").value == "run-w96-480-r1-s2880"

    set_run_folder(app, other_run)
    assert tuple(app.session_state[WINDOW]) == (50, 100)  # its first fifth, not 96:480 clamped
    assert app.sidebar.select_slider(key="sidebar.window").value == (50, 100)
    assert widget(app, "text_input", "Target step(s)").value == "500"  # its last step, not the sample's 2880
    assert widget(app, "text_input", "Output folder (inside the export root)").value == "grpo-other-w50-100-r1-s500"
    on_page(app, "trajectory")
    assert widget(app, "text_input", "Extrapolate to step").value == "500"
    assert app.selectbox(key="trajectory.tensor").value == "model.embed_tokens.weight"  # its first matrix
    star = [item for item in figures(app)["coefficients"]["data"] if str(item.get("name")).startswith("prediction")]
    assert [item["name"] for item in star] == ["prediction at step 500"]
    assert "(window `50:100`)" in app.caption[0].value  # as code: Markdown would turn ":100:" into 💯


def test_a_heatmap_click_opens_its_tensor_on_the_trajectory_page(relex_cache):
    app = open_app()
    on_page(app, "spectra")
    name = "model.layers.1.self_attn.v_proj.weight"
    app.session_state["relex.tensor"] = name  # what the heatmap's on_select callback stores (the browser test clicks)
    app.session_state["relex.open_trajectory"] = True
    app.run()
    assert_no_exception(app)
    assert app.selectbox(key="trajectory.tensor").value == name
    assert figures(app)["coefficients"]["layout"]["title"]["text"] == f"Coefficient c₁ of {name}"


def test_the_url_holds_run_window_rank_and_fit_and_reopens_them(relex_cache, other_run):
    app = open_app()
    set_run_folder(app, other_run)
    app.sidebar.select_slider(key="sidebar.window").set_range(100, 250).run()
    app.sidebar.number_input(key="sidebar.rank").set_value(2).run()
    app.sidebar.radio(key="sidebar.fit").set_value("poly2").run()
    on_page(app, "spectra")
    link = dict(app.query_params)
    assert link == {"run": str(other_run), "window": "100:250", "rank": "2", "fit": "poly2"}

    reopened = open_app(query=link)  # a reload, or the link sent to a colleague: a new session
    assert_no_exception(reopened)
    assert not reopened.warning
    assert reopened.sidebar.text_input(key="sidebar.folder").value == str(other_run)
    assert (tuple(reopened.session_state[WINDOW]), reopened.session_state[RANK], reopened.session_state[FIT]) == \
        ((100, 250), 2, "poly2")
    assert shows_other_run(reopened)
    assert dict(open_app().query_params) == {"run": "sample", "window": "48:288", "rank": "1", "fit": "linear"}


def test_a_link_that_does_not_fit_falls_back_to_the_defaults_with_a_note(relex_cache, other_run, tmp_path):
    app = open_app(query={"run": str(other_run), "window": "48:100", "rank": "9", "fit": "cubic"})
    assert_no_exception(app)
    notes = [warning.value for warning in app.warning]
    assert any("The link's window '48:100' does not fit this run" in note for note in notes)
    assert any("The link's rank '9' must be a whole number from 1" in note for note in notes)
    assert any("The link's fit 'cubic' is not one of linear, poly2, poly3, sin; using linear." in note for note in notes)
    chosen = (tuple(app.session_state[WINDOW]), app.session_state[RANK], app.session_state[FIT])
    assert chosen == ((50, 100), 1, "linear")
    app.run()
    assert not app.warning  # said once, not forever

    missing = open_app(query={"run": str(tmp_path / "gone"), "window": "48:720"})
    assert missing.warning[0].value.startswith("The link's run could not be opened")
    assert missing.warning[0].value.endswith("showing the sample run instead.")
    assert missing.sidebar.radio(key="sidebar.source").value == "sample"
    assert tuple(missing.session_state[WINDOW]) == (48, 720)  # the rest of the link still applies


def test_fit_last_and_refit_every_reach_every_page_and_the_url(relex_cache, run_gram):
    app = open_app()
    app.sidebar.select_slider(key="sidebar.window").set_range(48, 576).run()
    app.sidebar.radio(key="sidebar.fit").set_value("poly2").run()
    app.sidebar.number_input(key="sidebar.fit_last").set_value(8).run()
    app.sidebar.number_input(key="sidebar.refit_every").set_value(4).run()
    assert_no_exception(app)
    assert dict(app.query_params) == {"run": "sample", "window": "48:576", "rank": "1", "fit": "poly2",
                                      "fit_last": "8", "refit_every": "4"}
    for page in PAGES:
        on_page(app, page)
        assert_no_exception(app)
        assert app.sidebar.number_input(key="sidebar.fit_last").value == 8, page
    on_page(app, "window")
    expected = WindowFit(run_gram, (48, 576), fit="poly2", fit_last=8, refit_every=4).backtest_frame()
    relex = expected[expected["method"] == "relex"]
    curve = [item for item in figures(app)["backtest_error"]["data"] if item["name"] == "relex (fitted trend)"][0]
    assert numbers(decode(curve["y"])) == pytest.approx(relex["rel_error"].to_numpy(), rel=1e-12)

    reopened = open_app(query=dict(app.query_params))
    assert_no_exception(reopened)
    assert (reopened.session_state["relex.fit_last"], reopened.session_state["relex.refit_every"]) == (8, 4)

    app.sidebar.select_slider(key="sidebar.window").set_range(48, 240).run()  # 5 checkpoints: fewer than 8
    assert_no_exception(app)
    assert any("fitting poly2 on the whole window" in warning.value for warning in app.warning)
    assert app.session_state["relex.fit_last"] == 0 and "fit_last" not in dict(app.query_params)


def test_run_roots_limit_what_the_picker_opens_and_refuse_alike(relex_cache, other_run, tmp_path, monkeypatch):
    monkeypatch.setenv("RELEX_RUN_ROOTS", str(other_run.parent))
    app = open_app()
    set_run_folder(app, other_run)
    assert shows_other_run(app)
    messages = []
    for outside in (SAMPLE_RUN, tmp_path / "no-such-run", other_run / ".." / ".." / "elsewhere"):
        app.sidebar.text_input(key="sidebar.folder").set_value(str(outside)).run()
        assert_no_exception(app)
        messages.append(app.error[0].value.replace(str(outside), "PATH"))
    assert len(set(messages)) == 1  # the same words whether the path exists or not
    assert messages[0] == (f"run folder 'PATH' is outside the folders this server may open "
                           f"(RELEX_RUN_ROOTS: {other_run.parent.resolve()})")
    linked = other_run.parent / "linked"
    linked.symlink_to(SAMPLE_RUN)
    app.sidebar.text_input(key="sidebar.folder").set_value(str(linked)).run()
    assert "outside the folders this server may open" in app.error[0].value


def test_a_new_run_is_analysed_once_with_visible_progress_and_then_served_from_memory(relex_cache, tmp_path,
                                                                                       monkeypatch):
    from relex_core.synthetic import make_run

    folder = make_run(tmp_path / "fresh-run", steps=(10, 20, 30, 40))
    passes = []

    def counted_compute_gram(run, **options):
        passes.append(run.source)
        return compute_gram(run, **options)

    monkeypatch.setattr(runs, "compute_gram", counted_compute_gram)
    app = open_app(**{"relex.source": "folder", "relex.folder": str(folder)})
    assert_no_exception(app)
    assert passes == [folder]
    assert "one Gram pass" in app.sidebar.caption[-1].value
    for page in ("window", "trajectory", "overview"):
        on_page(app, page)
    app.sidebar.select_slider(key="sidebar.window").set_range(10, 30).run()
    assert_no_exception(app)
    assert passes == [folder]  # page switches and a window change never ran the pass again
    run_gram = runs.registry().analyses[app.session_state["relex.opened"]["key"]].future.result()
    fit = runs.window_fit(run_gram, (10, 20))
    assert runs.window_fit(run_gram, (10, 20)) is fit  # WindowFits are cached per (run, window, rank, fit)


def test_a_slow_pass_blocks_no_other_session_and_is_shared_by_sessions_on_its_run(relex_cache, tmp_path, monkeypatch):
    """Session A opens a run whose (real) pass is held at its first progress report; session B on the sample run
    renders every page meanwhile; session C on A's run sees the same pass and progress; released, both finish."""
    from relex_core.synthetic import make_run

    folder = make_run(tmp_path / "slow-run", steps=(10, 20, 30, 40, 50))
    release, reported, passes = threading.Event(), threading.Event(), []

    def held_compute_gram(run, progress, **options):
        passes.append(run.source)

        def held(fraction, message):
            progress(fraction, message)
            reported.set()
            release.wait(timeout=300)  # the pass thread waits here, holding no lock

        return compute_gram(run, progress=held, **options)

    monkeypatch.setattr(runs, "compute_gram", held_compute_gram)
    try:
        session_a = open_app(wait=False, **{"relex.source": "folder", "relex.folder": str(folder)})
        assert reported.wait(timeout=60)
        session_a.run()
        assert analysing(session_a) and not figures(session_a)
        progress_a = session_a.get("progress")[0].proto.text

        session_b = open_app()
        for page in PAGES:
            on_page(session_b, page)
            assert figures(session_b) or page == "export", page
        analysis = runs.registry().analyses[session_a.session_state["relex.opened"]["key"]]
        assert not analysis.future.done()  # B rendered every page while A was still analysing

        session_c = open_app(wait=False, **{"relex.source": "folder", "relex.folder": str(folder)})
        assert analysing(session_c)
        assert session_c.get("progress")[0].proto.text.split(" · ")[0] == progress_a.split(" · ")[0]
        assert session_c.session_state["relex.opened"]["key"] == analysis.key
    finally:
        release.set()
    for session in (session_a, session_c):
        wait_for_analysis(session)
        assert_no_exception(session)
        assert tuple(session.session_state[WINDOW]) == (10, 20)
    assert passes == [folder]  # one pass for both sessions


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_first_from_its_own_url(relex_cache, other_run, page):
    app = open_app(query={"run": str(other_run), "window": "50:150"})
    on_page(app, page)
    assert shows_other_run(app) and tuple(app.session_state[WINDOW]) == (50, 150)


@pytest.mark.parametrize("fit, fit_last, refit_every, setting", [
    ("linear", 0, 0, "linear"), ("poly1", 0, 0, "linear"), ("poly3", 8, 0, "poly3-last8"),
    ("sin", 0, 4, "sin-every4"), ("poly2", 8, 4, "poly2-last8-every4")])
def test_a_fit_setting_names_the_trend_and_its_options_and_reads_back(fit, fit_last, refit_every, setting):
    assert runs.fit_setting(fit, fit_last, refit_every) == setting
    assert runs.fit_options(setting) == {"fit": setting.split("-")[0], "fit_last": fit_last or None,
                                         "refit_every": refit_every or None}
    assert runs.min_window(setting) == {"linear": 2, "poly2": 3, "poly3": 4, "sin": 5}[setting.split("-")[0]]


def test_a_pass_waits_for_the_live_watchers_update_of_its_run_and_then_reads_its_gram(relex_cache, tmp_path):
    """The live watcher and a session's analysis hold one lock per run: the analysis started while the
    watcher updates says it is waiting, reads nothing, and afterwards finds the watcher's Gram in the cache."""
    from relex_core.io.discover import open_run
    from relex_core.synthetic import make_run

    folder = make_run(tmp_path / "watched", steps=(10, 20, 30))
    run = open_run(folder)
    lock = runs.pass_lock(run)
    assert runs.pass_lock(open_run(str(folder) + "/")) is lock  # one lock per run folder, however it is written
    with lock:  # the watcher's update, in progress
        analysis = runs.registry().get_or_start(run, "watched-" + runs.run_key(run))
        waited = 0.0
        while analysis.progress[1] != "waiting for the live view's update of this run" and waited < 30:
            time.sleep(0.05)
            waited += 0.05
        assert analysis.progress[1] == "waiting for the live view's update of this run"
        assert not analysis.future.done()
        compute_gram(run, progress=False)  # what the watcher writes to the cache meanwhile
    run_gram = analysis.future.result(timeout=60)
    assert run_gram.from_cache  # no second read of the run
