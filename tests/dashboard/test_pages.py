"""Every page under AppTest on the sample run: no exception, its widgets, and charts holding relex_core's numbers."""

import json

import numpy as np
import pytest

from relex_core import WindowFit, compute_gram, spectrum_frame, stability_frame
from relex_core.spectra import delta_spectrum_frame
from relex_core import selection
from relex_dashboard import frames
from relex_dashboard.state import DEGREE, RANK, WINDOW

from .apptest import assert_no_exception, figures, numbers, on_page, open_app, trace
from .conftest import SAMPLE_RUN


@pytest.fixture
def app(relex_cache):
    app = open_app()
    assert_no_exception(app)
    return app


def shared(app):
    return tuple(app.session_state[WINDOW]), app.session_state[RANK], app.session_state[DEGREE]


def test_sidebar_offers_the_sample_run_a_folder_and_the_shared_window(app, run_gram):
    sidebar = app.sidebar
    assert sidebar.radio(key="relex.run_choice").value == "Sample run"
    assert sidebar.radio(key="relex.run_choice").options == ["Sample run", "Folder on this server"]
    assert sidebar.text_input(key="relex.base").value == ""
    window = sidebar.select_slider(key="sidebar:relex.window")
    assert window.value == frames.default_window(run_gram.steps)
    assert window.options == [str(step) for step in run_gram.steps]
    assert sidebar.number_input(key="sidebar:relex.rank").value == 1
    assert sidebar.radio(key="sidebar:relex.degree").value == 1


def test_overview_shows_the_run_and_its_distance_from_the_base(app, run_gram):
    labels = {metric.label: metric.value for metric in app.metric}
    assert labels["Parameters"] == f"{int(run_gram.numels.sum()):,}"
    assert labels["Tensors"] == str(len(run_gram.names)) and labels["Checkpoints"] == str(len(run_gram.steps))
    assert labels["Dtype"] == "bfloat16"
    charts = figures(app)
    distance = trace(charts["update_norm"], "‖θ_t − θ_0‖")
    assert list(numbers(distance["x"])) == [0, *run_gram.steps]
    diagonal = np.einsum("ntt->t", run_gram.gram)
    np.testing.assert_allclose(numbers(distance["y"]), np.sqrt(np.concatenate([[0.0], diagonal])), rtol=1e-12)
    assert charts["update_norm"]["layout"]["xaxis"]["title"]["text"] == "training step"
    history = json.loads((SAMPLE_RUN / f"checkpoint-{run_gram.steps[-1]}" / "trainer_state.json").read_text())
    for name in app.multiselect(key="overview.metrics").value:
        logged = [(entry["step"], entry[name]) for entry in history["log_history"] if name in entry]
        reward = trace(charts["metrics"], name)
        assert list(zip(numbers(reward["x"]), numbers(reward["y"]))) == logged


def test_spectra_page_draws_trajectory_spectra_energy_grid_and_one_update_matrix(app, run_gram):
    on_page(app, "spectra")
    window, rank, degree = shared(app)
    fit = WindowFit(run_gram, window, rank=rank, degree=degree)
    spectrum = spectrum_frame(fit)
    charts = figures(app)
    assert set(charts) == {"spectrum", "energy_grid", "delta_spectrum"}
    medians = frames.module_spectrum_frame(spectrum, relative=True)
    q_proj = trace(charts["spectrum"], "q_proj")
    np.testing.assert_allclose(numbers(q_proj["y"]), medians[medians["module"] == "q_proj"]["sigma"], rtol=1e-12)
    assert charts["spectrum"]["layout"]["yaxis"]["type"] == "log"

    grid = trace(charts["energy_grid"], "rank-1 energy")
    tensors = fit.tensors_frame().set_index("tensor")
    names, values = np.asarray(grid["customdata"], dtype=object), numbers(grid["z"])
    for name, value in zip(names.ravel(), values.ravel()):
        assert value == pytest.approx(tensors.loc[name, "energy_rank1"], rel=1e-12)

    matrix = app.selectbox(key="spectra.matrix").value
    step = app.select_slider(key="spectra.step").value
    expected = delta_spectrum_frame(run_gram, matrix, step, app.number_input(key="spectra.k").value)
    bars = trace(charts["delta_spectrum"], "σ_j(ΔW)")
    np.testing.assert_allclose(numbers(bars["y"]), expected["sigma"], rtol=1e-12)
    shown = {metric.label: metric.value for metric in app.metric}
    assert shown["σ₁²/‖ΔW‖²_F"] == f"{expected.attrs['energy_rank1']:.3f}"

    app.radio(key="spectra.view").set_value("one tensor").run()
    app.selectbox(key="spectra.tensor").set_value(run_gram.names[5]).run()
    single = trace(figures(app)["spectrum"], run_gram.names[5])
    np.testing.assert_allclose(numbers(single["y"]), spectrum[spectrum["tensor"] == run_gram.names[5]]["sigma"])


def test_trajectory_page_draws_coefficients_fit_extrapolation_and_residuals(app, run_gram):
    on_page(app, "trajectory")
    window, rank, degree = shared(app)
    fit = WindowFit(run_gram, window, rank=rank, degree=degree)
    tensor = app.selectbox(key="trajectory.tensor").value
    target = app.number_input(key="trajectory.target").value
    charts = figures(app)
    assert {"coefficients", "residuals", "r2_grid", "energy_histogram", "r2_histogram"} <= set(charts)
    coefficients = fit.coefficients_frame([tensor])
    inside = trace(charts["coefficients"], "observed (in window)")
    np.testing.assert_allclose(numbers(inside["y"]), coefficients[coefficients["in_window"]]["coefficient"])
    row = run_gram.names.index(tensor)
    line = trace(charts["coefficients"], "fit")
    np.testing.assert_allclose(numbers(line["y"]), fit.trend.predict(numbers(line["x"]))[row, 0], rtol=1e-12)
    star = trace(charts["coefficients"], f"prediction at step {target}")
    assert numbers(star["y"])[0] == pytest.approx(fit.projections([target])[row, 0, 0], rel=1e-12)
    held_out = trace(charts["residuals"], "held out")
    np.testing.assert_allclose(numbers(held_out["y"]), coefficients[~coefficients["in_window"]]["residual"])
    histogram = trace(charts["r2_histogram"], "r2")
    np.testing.assert_allclose(numbers(histogram["x"]), fit.tensors_frame()["r2"])

    beyond = 2 * int(run_gram.steps[-1])
    app.number_input(key="trajectory.target").set_value(beyond).run()
    extrapolation = trace(figures(app)["coefficients"], "extrapolation")
    assert numbers(extrapolation["x"]).min() == window[1] and numbers(extrapolation["x"]).max() == beyond


def test_window_page_backtests_heatmap_stability_and_suggestion(app, run_gram):
    on_page(app, "window")
    window, rank, degree = shared(app)
    assert app.select_slider(key="window:relex.window").value == window
    fit = WindowFit(run_gram, window, rank=rank, degree=degree)
    charts = figures(app)
    assert set(charts) == {"backtest_error", "backtest_cosine", "window_heatmap", "stability", "suggestion"}
    backtests = fit.backtest_frame()
    for method, name in (("relex", "relex (fitted trend)"), ("last", "last observed checkpoint")):
        rows = backtests[backtests["method"] == method]
        curve = trace(charts["backtest_error"], name)
        np.testing.assert_allclose(numbers(curve["x"]), rows["target_step"])
        np.testing.assert_allclose(numbers(curve["y"]), rows["rel_error"], rtol=1e-12)
        np.testing.assert_allclose(numbers(trace(charts["backtest_cosine"], name)["y"]), rows["cosine"], rtol=1e-12)

    heatmap = trace(charts["window_heatmap"], "rel_error")
    ends, targets, errors = numbers(heatmap["y"]), numbers(heatmap["x"]), numbers(heatmap["z"])
    for end in (ends[0], ends[len(ends) // 2]):
        expected = WindowFit(run_gram, (window[0], int(end)), rank=rank, degree=degree).backtest_frame()
        expected = expected[expected["method"] == "relex"].set_index("target_step")["rel_error"]
        row = errors[list(ends).index(end)]
        for target, value in zip(targets, row):
            assert np.isnan(value) if target not in expected.index else value == pytest.approx(expected[target])

    stability = stability_frame(run_gram, start=window[0])
    np.testing.assert_allclose(numbers(trace(charts["stability"], "median tensor")["y"]), stability["overlap_median"])
    suggestion = selection.suggest_window(selection.window_end_backtests(run_gram, window[0], rank, degree), window[0],
                                       selection.default_holdout(run_gram.steps), 0.10)
    assert suggestion.reason in app.success[0].value

    app.select_slider(key="window:relex.window").set_range(run_gram.steps[1], run_gram.steps[9]).run()
    assert_no_exception(app)
    moved = (int(run_gram.steps[1]), int(run_gram.steps[9]))
    assert shared(app)[0] == moved
    expected = WindowFit(run_gram, moved).backtest_frame()
    curve = trace(figures(app)["backtest_error"], "relex (fitted trend)")
    np.testing.assert_allclose(numbers(curve["y"]), expected[expected["method"] == "relex"]["rel_error"], rtol=1e-12)

    app.button(key="window.use_suggestion").click().run()
    assert_no_exception(app)
    chosen = app.success[0].value.split("**")[1]
    assert shared(app)[0] == tuple(int(step) for step in chosen.split(":"))


def test_rank_and_fit_changes_are_shared_by_all_pages(app, run_gram):
    app.sidebar.number_input(key="sidebar:relex.rank").set_value(2).run()
    app.sidebar.radio(key="sidebar:relex.degree").set_value(2).run()
    on_page(app, "window")
    assert app.number_input(key="window:relex.rank").value == 2 and app.radio(key="window:relex.degree").value == 2
    window = shared(app)[0]
    expected = WindowFit(run_gram, window, rank=2, degree=2).backtest_frame()
    curve = trace(figures(app)["backtest_error"], "relex (fitted trend)")
    np.testing.assert_allclose(numbers(curve["y"]), expected[expected["method"] == "relex"]["rel_error"], rtol=1e-12)


def test_a_bad_run_folder_is_one_error_line_and_the_app_keeps_working(relex_cache, tmp_path):
    app = open_app(**{"relex.run_choice": "Folder on this server", "relex.run_folder": str(tmp_path / "nowhere")})
    assert_no_exception(app)
    assert [error.value for error in app.error] == [f"{tmp_path / 'nowhere'}: no such run folder or manifest"]
    assert "Pick a run" in app.info[0].value
    app.sidebar.radio(key="relex.run_choice").set_value("Sample run").run()
    assert_no_exception(app)
    assert not app.error and figures(app)


@pytest.fixture
def export_root(tmp_path, monkeypatch):
    root = tmp_path / "exports"
    monkeypatch.setenv("RELEX_EXPORT_ROOT", str(root))
    return root


def test_export_page_shows_the_weights_and_writes_a_checkpoint_under_the_export_root(app, run_gram, export_root):
    on_page(app, "export")
    window, rank, degree = shared(app)
    assert app.select_slider(key="export:relex.window").value == window
    assert app.radio(key="export.mode").options == ["Extrapolate to target steps", "Reconstruct an observed checkpoint"]
    assert app.selectbox(key="export.dtype").options == ["as stored (per tensor)", "bf16", "fp16", "fp32"]
    target = int(app.text_input(key="export.targets").value)
    assert target == run_gram.steps[-1]
    fit = WindowFit(run_gram, window, rank=rank, degree=degree)
    weights = trace(figures(app)["weights"], "size-weighted mean over tensors")
    expected = fit.weights_frame(target)
    np.testing.assert_allclose(numbers(weights["x"]), expected["step"])
    np.testing.assert_allclose(numbers(weights["y"]), expected["weight_model"], rtol=1e-12)

    app.text_input(key="export.folder").set_value("from-apptest").run()
    app.selectbox(key="export.dtype").set_value("fp32").run()
    app.button(key="export.run").click().run()
    assert_no_exception(app)
    assert not app.error, [error.value for error in app.error]
    written = export_root / "from-apptest"
    assert (written / "config.json").is_file() and (written / "relex.json").is_file()
    provenance = json.loads((written / "relex.json").read_text())
    assert provenance["target_step"] == target and provenance["method"] == "relex"
    summary = app.dataframe[0].value
    assert list(summary["folder"]) == [str(written.resolve())] and list(summary["target_step"]) == [target]
    assert summary["rounding_loss"].iloc[0] == pytest.approx(provenance["rounding_loss"])
    assert app.get("download_button")


def test_export_page_refuses_a_folder_outside_the_export_root(app, export_root, tmp_path):
    on_page(app, "export")
    app.text_input(key="export.folder").set_value("first").run()
    app.button(key="export.run").click().run()
    assert app.success
    for requested in ("../escaped", str(tmp_path / "elsewhere")):
        app.text_input(key="export.folder").set_value(requested).run()
        app.button(key="export.run").click().run()
        assert_no_exception(app)
        assert "must be inside the export root" in app.error[0].value
        assert not app.success  # the earlier export's summary is gone
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "elsewhere").exists()


def test_export_page_writes_several_targets_and_reconstructions(app, run_gram, export_root):
    on_page(app, "export")
    steps = [int(step) for step in run_gram.steps]
    app.text_input(key="export.targets").set_value(f"{steps[-1]}, {2 * steps[-1]}").run()
    app.text_input(key="export.folder").set_value("two-targets").run()
    app.button(key="export.run").click().run()
    assert_no_exception(app)
    assert sorted(path.name for path in (export_root / "two-targets").iterdir()) == \
        sorted([f"step-{steps[-1]}", f"step-{2 * steps[-1]}"])

    app.radio(key="export.mode").set_value("Reconstruct an observed checkpoint").run()
    window_end = shared(app)[0][1]
    assert app.selectbox(key="export.reconstruct_step").value == window_end
    app.text_input(key="export.folder").set_value("reconstructed").run()
    app.button(key="export.run").click().run()
    assert_no_exception(app)
    provenance = json.loads((export_root / "reconstructed" / "relex.json").read_text())
    assert provenance["method"] == "reconstruct" and provenance["target_step"] == window_end


def test_export_page_shows_a_bad_target_as_one_error_line(app, export_root):
    on_page(app, "export")
    app.text_input(key="export.targets").set_value("soon").run()
    assert_no_exception(app)
    assert [error.value for error in app.error] == ["target step 'soon' must be a whole number, like 400 or 400,600"]


def test_a_new_run_is_analysed_once_with_visible_progress_and_then_served_from_memory(relex_cache, tmp_path,
                                                                                       monkeypatch):
    from relex_core.synthetic import make_run
    from relex_dashboard import state

    folder = make_run(tmp_path / "fresh-run", steps=(10, 20, 30, 40))
    passes = []

    def counted_compute_gram(run, **options):
        passes.append(run.source)
        return compute_gram(run, **options)

    monkeypatch.setattr(state, "compute_gram", counted_compute_gram)
    app = open_app(**{"relex.run_choice": "Folder on this server", "relex.run_folder": str(folder)})
    assert_no_exception(app)
    assert passes == [folder]
    bars = app.get("progress")
    assert bars and bars[-1].proto.value == 100  # the pass drew its progress bar to the end
    assert app.status[0].label == "Analysis ready (Gram pass done)"
    run_gram = state._gram_store().grams[(str(folder), "")]
    fit = state.window_fit(run_gram, (10, 20))
    for page in ("window", "trajectory", "overview"):
        on_page(app, page)
    app.sidebar.select_slider(key="sidebar:relex.window").set_range(10, 30).run()
    assert_no_exception(app)
    assert passes == [folder]  # page switches and a window change never ran the pass again
    assert not app.get("progress")
    assert state.window_fit(run_gram, (10, 20)) is fit  # and WindowFits are cached per (run, window, rank, degree)


def test_evaluate_page_draws_rl_reward_and_the_scores_of_relex_checkpoints(app, run_gram):
    from relex_core.sample.verifier import evaluate_checkpoint

    on_page(app, "evaluate")
    window = shared(app)[0]
    metrics = frames.trainer_metrics(run_gram.run)
    heldout = metrics[metrics["metric"] == "heldout_reward"]
    curve = trace(figures(app)["evaluation"], "RL actual: heldout_reward")
    np.testing.assert_allclose(numbers(curve["y"]), heldout["value"])
    assert figures(app)["evaluation"]["layout"]["title"]["text"] == f"RL actual vs RELEX from window {window[0]}:{window[1]}"

    target = int(run_gram.steps[-1])
    app.text_input(key="evaluate.targets").set_value(str(target)).run()
    app.multiselect(key="evaluate.reconstruct").set_value([]).run()
    app.button(key="evaluate.run").click().run()
    assert_no_exception(app)
    chart = figures(app)["evaluation"]
    real = trace(chart, "verifier on the real checkpoint")
    assert numbers(real["y"])[0] == evaluate_checkpoint(SAMPLE_RUN / f"checkpoint-{target}")["accuracy"]
    relex = trace(chart, f"RELEX from window {window[0]}:{window[1]}")
    assert list(numbers(relex["x"])) == [target] and 0 <= numbers(relex["y"])[0] <= 1
    assert list(app.dataframe[0].value["kind"]) == ["actual", "extrapolated"]


def test_evaluate_page_needs_the_sample_run(relex_cache, tmp_path):
    from relex_core.synthetic import make_run

    folder = make_run(tmp_path / "other-run", steps=(10, 20, 30))
    app = open_app(**{"relex.run_choice": "Folder on this server", "relex.run_folder": str(folder)})
    on_page(app, "evaluate")
    assert "sample run" in app.info[0].value and not figures(app)
