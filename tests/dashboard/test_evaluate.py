"""The Evaluate page's logic (what to score, the stored table, the comparison), its background jobs, and
the page under AppTest scoring the sample run through a real lm-eval run and the sample verifier."""

import math
import os
import shutil
import time

import pandas as pd
import pytest
import torch

from relex_core import WindowFit
from relex_core.errors import RelexError
from relex_core.evaluate import CommandScorer, LmEvalScorer, SampleScorer, fingerprint, read_scores, score
from relex_core.export import extrapolate
from relex_dashboard import charts, evaluate, scoring

from .apptest import assert_no_exception, figures, numbers, on_page, open_app, texts, trace, widget
from .conftest import REPO_ROOT, SAMPLE_RUN

LIMIT = 20  # lm-eval examples / verifier problems per folder: seconds per folder, and the points still differ
TASKS = REPO_ROOT / "sample_data" / "lm_eval_tasks"


@pytest.fixture
def export_root(relex_cache, tmp_path, monkeypatch):
    """A fresh export root per test (AppTest runs in this process, so the page sees it), offline, one thread."""
    monkeypatch.setenv("RELEX_EXPORT_ROOT", str(tmp_path / "exports"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the model is tiny; on the shared 2-core machine more threads only contend
    yield tmp_path / "exports"
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- what to score


def test_every_kth_checkpoint_counts_from_the_kth():
    steps = list(range(48, 1441, 48))
    assert evaluate.every_kth(steps, 15) == [720, 1440]
    assert evaluate.every_kth(steps, 1) == steps
    assert evaluate.every_kth(steps, 7) == [336, 672, 1008, 1344]
    assert evaluate.default_k(steps) == 6 and len(evaluate.every_kth(steps, evaluate.default_k(steps))) == 5


def test_default_evaluation_steps_spread_over_the_checkpoints_after_the_window():
    steps = list(range(10, 310, 10))
    assert evaluate.default_evaluation_steps(steps, (10, 150)) == [160, 210, 250, 300]
    assert evaluate.default_evaluation_steps(steps, (10, 280)) == [290, 300]
    assert evaluate.default_evaluation_steps(steps, (10, 300)) == []


def test_the_plan_scores_picked_checkpoints_the_baselines_and_an_export_per_target(run_gram, tmp_path):
    fit = WindowFit(run_gram, (48, 480))
    items = evaluate.plan(fit, tmp_path, [0, 960], [1440, 2880], last=True, linear=True, real_at_targets=True)
    assert [(item.kind, item.step) for item in items] == [
        ("checkpoint", 0), ("checkpoint", 480), ("checkpoint", 960), ("checkpoint", 1440),  # no checkpoint at 2880
        ("relex", 1440), ("relex", 2880), ("linear", 1440), ("linear", 2880)]
    assert items[0].path == SAMPLE_RUN / "checkpoint-0" and items[3].path == SAMPLE_RUN / "checkpoint-1440"
    assert items[4].path == tmp_path / "run-w48-480-r1-s1440"  # named as the Export page names it
    assert items[7].path == tmp_path / "run-w48-480-r1-linear-s2880"
    alone = evaluate.plan(fit, tmp_path, [480], [])
    assert [(item.kind, item.step) for item in alone] == [("checkpoint", 480)]


def test_exports_of_another_rank_or_fit_get_their_own_folder_and_their_own_series(run_gram, tmp_path):
    fits = [WindowFit(run_gram, (48, 480)), WindowFit(run_gram, (48, 480), rank=2),
            WindowFit(run_gram, (48, 480), fit_last=3)]
    items = [evaluate.plan(fit, tmp_path, [480], [1440]) for fit in fits]
    assert [plan[1].path.name for plan in items] == ["run-w48-480-r1-s1440", "run-w48-480-r2-s1440",
                                                    "run-w48-480-r1-linear-last3-s1440"]  # the Export page's names
    for fit, plan in zip(fits, items):
        extrapolate(fit, [1440], plan[1].path, progress=False)
    out = tmp_path / "scores.csv"
    score([items[0][0].path] + [plan[1].path for plan in items], SampleScorer(limit=LIMIT), out=out)
    rows = evaluate.of_measure(evaluate.stored_scores(out)[0], f"sample limit={LIMIT}", "accuracy")
    assert rows["setting"].tolist() == ["", "", "rank 2, linear", "rank 1, linear-last3"]
    chart = charts.scores_chart(rows, (48, 480), "accuracy")
    assert [item.name for item in chart.data] == [
        "RL checkpoints", "relex from window 48:480", "last of window 48:480 (step 480)",
        "relex from window 48:480 (rank 1, linear-last3)", "relex from window 48:480 (rank 2, linear)"]
    comparison = evaluate.comparison_frame(rows)
    assert comparison["setting"].tolist() == ["", "rank 2, linear", "rank 1, linear-last3"]
    assert comparison["vs_last"].tolist() == pytest.approx((rows["value"][1:] - rows["value"][0]).tolist())


def test_an_export_is_reused_only_when_its_relex_json_is_this_fit_kind_and_target(run_gram, tmp_path):
    fit = WindowFit(run_gram, (48, 480))
    item = evaluate.plan(fit, tmp_path, [], [1440])[0]
    assert not evaluate.export_is_current(fit, item)  # not written yet
    extrapolate(fit, [1440], item.path, progress=False)
    assert evaluate.export_is_current(fit, item)
    assert not evaluate.export_is_current(WindowFit(run_gram, (48, 528)), item)
    assert not evaluate.export_is_current(WindowFit(run_gram, (48, 480), rank=2), item)
    assert not evaluate.export_is_current(fit, evaluate.Item("linear", 1440, item.path))
    assert not evaluate.export_is_current(fit, evaluate.Item("relex", 2880, item.path))


def test_the_scores_folder_is_per_run_folder_and_base_under_the_export_root(export_root, run_gram, other_gram):
    sample, other = evaluate.scores_folder(run_gram.run), evaluate.scores_folder(other_gram.run)
    assert sample.parent == other.parent == export_root
    assert sample.name.startswith("run-") and other.name.startswith("grpo-other-") and sample != other
    assert evaluate.scores_folder(run_gram.run) == sample  # the same on every visit


# --------------------------------------------------------------------------- the stored table


def row(path, step, kind, window, value, stderr, scorer="sample", metric="accuracy"):
    return {"path": path, "step": step, "kind": kind, "window": window, "target_step": step, "scorer": scorer,
            "metric": metric, "value": value, "stderr": stderr}


def test_the_comparison_is_against_the_checkpoint_at_the_same_step_and_the_windows_last():
    scores = pd.DataFrame([row("/r/checkpoint-480", 480, "checkpoint", "", 0.40, 0.03),
                           row("/r/checkpoint-1440", 1440, "checkpoint", "", 0.50, 0.04),
                           row("/e/w480-s1440", 1440, "relex", "48:480", 0.44, 0.05),
                           row("/e/w480-s2880", 2880, "relex", "48:480", 0.47, 0.05),
                           row("/e/w960/step-1440", 1440, "linear", "48:960", 0.46, float("nan"))])
    comparison = evaluate.comparison_frame(scores).set_index("folder")
    assert list(comparison.index) == ["w480-s1440", "w480-s2880", "w960/step-1440"]
    first = comparison.loc["w480-s1440"]
    assert first.vs_checkpoint == pytest.approx(-0.06)
    assert first.vs_checkpoint_stderr == pytest.approx(math.hypot(.05, .04))
    assert first.vs_last == pytest.approx(0.04) and first.vs_last_stderr == pytest.approx(math.hypot(.05, .03))
    assert math.isnan(comparison.loc["w480-s2880", "vs_checkpoint"])  # no real checkpoint at 2880
    assert comparison.loc["w480-s2880", "vs_last"] == pytest.approx(0.07)
    linear = comparison.loc["w960/step-1440"]
    assert linear.vs_checkpoint == pytest.approx(-0.04) and math.isnan(linear.vs_checkpoint_stderr)
    assert math.isnan(linear.vs_last)  # its last checkpoint (960) was not scored


def test_measures_newest_first_and_the_rows_of_one_with_a_step():
    scores = pd.DataFrame([row("/r/checkpoint-480", 480, "checkpoint", "", 0.4, 0.1),
                           row("/r/checkpoint-480", 480, "checkpoint", "", 0.3, 0.1, "lm-eval x", "x/exact_match"),
                           row("/r/final", None, "checkpoint", "", 0.2, 0.1, "lm-eval x", "x/exact_match")])
    scores["step"] = scores["step"].astype("Int64")
    assert evaluate.measures(scores) == [("lm-eval x", "x/exact_match"), ("sample", "accuracy")]
    rows = evaluate.of_measure(scores, "lm-eval x", "x/exact_match")
    assert rows["value"].tolist() == [0.3] and rows["folder"].tolist() == ["checkpoint-480"]


def test_stored_scores_leave_out_folders_changed_since_they_were_scored(tmp_path):
    folders = [tmp_path / "checkpoint-480", tmp_path / "checkpoint-1440"]
    for folder in folders:
        shutil.copytree(SAMPLE_RUN / folder.name, folder)
    out = tmp_path / "scores.csv"
    assert evaluate.stored_scores(out)[0].empty  # nothing scored yet: an empty table
    score(folders, SampleScorer(limit=LIMIT), out=out)
    scores, changed = evaluate.stored_scores(out)
    assert scores["path"].tolist() == [str(folder) for folder in folders] and changed == 0
    weights = folders[1] / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # rewritten since
    scores, changed = evaluate.stored_scores(out)
    assert scores["path"].tolist() == [str(folders[0])] and changed == 1
    assert len(read_scores(out)) == 2  # the file itself keeps every row


def test_a_task_folder_must_lie_inside_the_run_roots_when_the_server_has_them(tmp_path):
    assert evaluate.include_folder("  ", None) is None
    assert evaluate.include_folder(str(TASKS), None) == str(TASKS)
    assert evaluate.include_folder(str(TASKS), [REPO_ROOT]) == str(TASKS)
    with pytest.raises(RelexError, match="outside the folders this server may open"):
        evaluate.include_folder(str(TASKS), [tmp_path])


# --------------------------------------------------------------------------- background jobs


def wait_done(job, seconds: float = 120):
    deadline = time.monotonic() + seconds
    while job.running:
        assert time.monotonic() < deadline, f"the job did not finish: {job.progress}"
        time.sleep(0.1)
    return job.future.result()


def test_a_job_writes_the_exports_then_scores_every_folder_into_scores_csv(run_gram, tmp_path):
    fit = WindowFit(run_gram, (48, 480))
    out = tmp_path / "scores.csv"
    items = evaluate.plan(fit, tmp_path, [480], [1440], linear=True)
    job = scoring._Registry().start(fit, out, SampleScorer(limit=LIMIT), items)
    seen = []
    while job.running:
        seen.append(job.progress[0])
        time.sleep(0.02)
    outcomes = job.future.result()
    assert [outcome.status for outcome in outcomes] == ["scored"] * 3 and job.finished == 3
    assert seen == sorted(seen) and job.progress == (1.0, "done")
    stored = read_scores(out)
    assert stored["path"].tolist() == [str(item.path) for item in items]
    assert stored["kind"].tolist() == ["checkpoint", "relex", "linear"]
    assert stored["window"].tolist()[1:] == ["48:480", "48:480"]
    truth = [SampleScorer(limit=LIMIT).score(item.path)[0] for item in items]
    assert stored["value"].tolist() == [metric.value for metric in truth]  # each folder scores as it stands
    assert stored["stderr"].tolist() == [metric.stderr for metric in truth]

    again = scoring._Registry().start(fit, out, SampleScorer(limit=LIMIT), items)
    assert [outcome.status for outcome in wait_done(again)] == ["skipped"] * 3  # exports reused, not rewritten


def test_a_second_job_on_the_same_scores_file_waits_and_cancel_stops_a_running_command(run_gram, tmp_path):
    fit = WindowFit(run_gram, (48, 480))
    registry, out = scoring._Registry(), tmp_path / "scores.csv"
    slow = CommandScorer("sleep 60; echo 0.5 # {path}")
    job = registry.start(fit, out, slow, evaluate.plan(fit, tmp_path, [480, 960], []))
    while not job.progress[1].startswith("scoring"):
        time.sleep(0.05)
    with pytest.raises(RelexError, match="still running"):
        registry.start(fit, out, SampleScorer(limit=LIMIT), evaluate.plan(fit, tmp_path, [480], []))
    assert registry.get(out) is job
    started = time.monotonic()
    job.cancel.set()
    assert wait_done(job, 30) == [] and time.monotonic() - started < 10  # the command was ended, not waited for
    assert job.progress[1] == "cancelled" and not out.exists()
    done = registry.start(fit, out, SampleScorer(limit=LIMIT), evaluate.plan(fit, tmp_path, [480], []))
    assert [outcome.status for outcome in wait_done(done)] == ["scored"]


def test_a_job_whose_scorer_cannot_run_reports_it_and_writes_nothing(run_gram, tmp_path):
    fit = WindowFit(run_gram, (48, 480))
    unknown = LmEvalScorer(tasks=("no_such_task_here",), include=str(TASKS))
    job = scoring._Registry().start(fit, tmp_path / "scores.csv", unknown, evaluate.plan(fit, tmp_path, [480], [1440]))
    with pytest.raises(RelexError, match="unknown lm-eval task"):
        wait_done(job)
    assert list(tmp_path.iterdir()) == []  # checked before any export is written


# --------------------------------------------------------------------------- the page


def wait_for_scoring(app, seconds: float = 180):
    """Rerun while the page shows the job's progress (the browser does this with the fragment's timer)."""
    deadline = time.monotonic() + seconds
    while app.get("progress"):
        assert time.monotonic() < deadline, "scoring did not finish"
        time.sleep(0.3)
        app.run()
    assert_no_exception(app)
    return app


def score_on_page(app, targets: str):
    widget(app, "text_input", "relex exports from window "
           f"{app.session_state['relex.window'][0]}:{app.session_state['relex.window'][1]} at target steps"
           ).set_value(targets).run()
    app.button(key="evaluate.run").click().run()
    assert_no_exception(app)
    return wait_for_scoring(app)


def points(figure: dict) -> dict:
    """{(series, step): (score, stderr, folder)} of every drawn marker."""
    shown = {}
    for item in figure["data"]:
        if "markers" not in item["mode"]:
            continue
        drawn = trace(figure, item["name"])
        for step, value, (stderr, folder) in zip(numbers(drawn["x"]), numbers(drawn["y"]), drawn["customdata"]):
            shown[(item["name"], int(step))] = (value, float(stderr), folder)
    return shown


def test_evaluate_page_scores_two_checkpoints_and_an_export_with_lm_eval_and_keeps_them(export_root):
    app = open_app()
    on_page(app, "evaluate")
    training = figures(app)["training_reward"]
    assert [item["name"] for item in training["data"]] == ["train_reward"]  # not the held-out reward again
    assert training["layout"]["yaxis"]["title"]["text"] == "reward on training rollouts"
    assert "scores" not in figures(app) and "No scores for this run yet." in texts(app)

    app.sidebar.select_slider(key="sidebar.window").set_range(48, 720).run()
    app.radio(key="evaluate.scorer").set_value("lm-eval task").run()
    assert widget(app, "text_input", "lm-eval tasks").value == "relex_sample_addition"  # the sample's local task
    assert widget(app, "text_input", "Task folder (optional)").value == str(TASKS)
    app.number_input(key="evaluate.limit").set_value(LIMIT).run()
    app.number_input(key="evaluate.k").set_value(15).run()  # checkpoints 720 (the window's last) and 1440
    score_on_page(app, "1440")
    assert "3 scored, 0 already scored and unchanged, 0 failed" in texts(app)

    out = evaluate.scores_folder(open_app_run()) / "scores.csv"
    assert out.parent.parent == export_root
    stored = read_scores(out)
    assert stored["kind"].tolist() == ["checkpoint", "checkpoint", "relex"]
    assert stored["scorer"].str.startswith("lm-eval relex_sample_addition").all()
    export = out.parent / "run-w48-720-r1-s1440"
    assert stored["path"].tolist() == [str(SAMPLE_RUN / "checkpoint-720"), str(SAMPLE_RUN / "checkpoint-1440"),
                                       str(export)]
    # the local task is the sample verifier as an lm-eval task: the same problems give the same numbers
    truth = {path: SampleScorer(limit=LIMIT).score(path)[0] for path in stored["path"]}
    assert stored["value"].tolist() == [truth[path].value for path in stored["path"]]
    assert len(set(stored["value"])) > 1

    expected = {("RL checkpoints", 720): "checkpoint-720", ("RL checkpoints", 1440): "checkpoint-1440",
                ("relex from window 48:720", 1440): "run-w48-720-r1-s1440"}
    assert_chart_shows(app, stored, expected)
    last = trace(figures(app)["scores"], "last of window 48:720 (step 720)")  # the reference: a line, no marker
    assert last["mode"] == "lines" and numbers(last["y"]).tolist() == [stored["value"][0]] * 2
    comparison = app.dataframe[0].value
    assert comparison["folder"].tolist() == ["run-w48-720-r1-s1440"]
    assert comparison["vs_checkpoint"][0] == pytest.approx(stored["value"][2] - stored["value"][1])
    assert comparison["vs_last"][0] == pytest.approx(stored["value"][2] - stored["value"][0])

    # another window, scored too: the first one's scores stay beside it
    app.sidebar.select_slider(key="sidebar.window").set_range(48, 480).run()
    app.number_input(key="evaluate.k").set_value(30).run()  # checkpoint 1440 only, already scored
    app.checkbox(key="evaluate.last").uncheck().run()
    score_on_page(app, "1440")
    assert "1 scored, 1 already scored and unchanged, 0 failed" in texts(app)
    shown = points(figures(app)["scores"])
    assert ("relex from window 48:480", 1440) in shown and ("relex from window 48:720", 1440) in shown

    # a new session (a reload, another user) reads the same table back without scoring anything
    fresh = open_app()
    on_page(fresh, "evaluate")
    fresh.sidebar.select_slider(key="sidebar.window").set_range(48, 720).run()
    assert_chart_shows(fresh, read_scores(out), {**expected, ("relex from window 48:480", 1440):
                                                 "run-w48-480-r1-s1440"})
    assert "Last scoring" in texts(fresh)  # the server's job registry is shared by sessions


def open_app_run():
    from relex_core import open_run

    return open_run(SAMPLE_RUN)


def assert_chart_shows(app, stored, expected: dict) -> None:
    """The scores chart shows exactly the expected markers, each with its stored value, stderr and folder."""
    shown = points(figures(app)["scores"])
    assert set(shown) == set(expected), sorted(shown)
    by_folder = {path.rsplit("/", 1)[-1]: (value, stderr) for path, value, stderr in
                 zip(stored["path"], stored["value"], stored["stderr"])}
    for key, folder in expected.items():
        value, stderr, drawn_folder = shown[key]
        assert drawn_folder == folder and (value, stderr) == pytest.approx(by_folder[folder], abs=0, rel=1e-12)


def test_the_export_page_sends_its_folder_to_be_scored(export_root):
    app = open_app()
    on_page(app, "export")
    widget(app, "text_input", "Target step(s)").set_value("1440").run()
    widget(app, "text_input", "Output folder (inside the export root)").set_value("mine").run()
    app.button(key="export.run").click().run()
    app.button(key="export.score").click().run()
    assert_no_exception(app)
    assert app.title[0].value == "Evaluate"
    on_page(app, "evaluate")  # AppTest's next run would go back to the page it last switched to itself
    assert app.checkbox(key="evaluate.use_queued").value
    app.radio(key="evaluate.scorer").set_value("Sample verifier").run()
    app.number_input(key="evaluate.problems").set_value(50).run()
    app.number_input(key="evaluate.k").set_value(30).run()  # and checkpoint 1440
    app.checkbox(key="evaluate.last").uncheck().run()
    score_on_page(app, "")
    stored = read_scores(evaluate.scores_folder(open_app_run()) / "scores.csv")
    assert stored["path"].tolist() == [str(SAMPLE_RUN / "checkpoint-1440"), str(export_root / "mine")]
    assert stored["kind"].tolist() == ["checkpoint", "relex"] and stored["scorer"].tolist() == ["sample limit=50"] * 2
    assert stored["stderr"][1] == pytest.approx(math.sqrt(stored["value"][1] * (1 - stored["value"][1]) / 49))
    assert stored["fingerprint"][1] == fingerprint(export_root / "mine")
    assert ("relex from window 48:288", 1440) in points(figures(app)["scores"])
    assert "evaluate.use_queued" not in [box.key for box in app.checkbox]  # sent once, scored once


def test_evaluate_page_on_a_run_that_is_not_the_sample_offers_lm_eval_and_a_command(export_root, other_run):
    app = open_app(**{"relex.source": "folder", "relex.folder": str(other_run)})
    on_page(app, "evaluate")
    assert app.expander[0].label == "How to read this" and "last of window W" in app.expander[0].markdown[0].value
    assert app.radio(key="evaluate.scorer").options == ["lm-eval task", "Command"]
    assert widget(app, "text_input", "lm-eval tasks").value == "" and app.button(key="evaluate.run").disabled
    app.radio(key="evaluate.scorer").set_value("Command").run()
    assert_no_exception(app)
    widget(app, "text_input", "Command ({path} becomes the folder)").set_value("echo 1").run()
    assert "the command must contain {path}" in texts(app) and app.button(key="evaluate.run").disabled


def test_a_server_with_run_roots_runs_no_typed_command_and_no_task_folder_outside_them(export_root, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setenv("RELEX_RUN_ROOTS", str(tmp_path))
    app = open_app()  # the sample run is always allowed
    on_page(app, "evaluate")
    app.radio(key="evaluate.scorer").set_value("lm-eval task").run()
    assert_no_exception(app)
    assert [error.value for error in app.error] == [
        f"task folder '{TASKS}' is outside the folders this server may open (RELEX_RUN_ROOTS: {tmp_path})"]
    assert app.button(key="evaluate.run").disabled
    app.radio(key="evaluate.scorer").set_value("Command").run()
    assert any("runs no typed commands" in info.value for info in app.info)
    assert app.button(key="evaluate.run").disabled
    assert "Command ({path} becomes the folder)" not in [field.label for field in app.text_input]
