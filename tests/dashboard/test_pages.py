"""Every page under AppTest on the sample run: no exception, its widgets, and charts holding relex_core's numbers."""

import json

import numpy as np
import pytest

from relex_core import WindowFit, selection, spectrum_frame, stability_frame
from relex_core.spectra import delta_spectrum_frame
from relex_dashboard import charts, frames
from relex_dashboard.state import FIT, RANK, WINDOW

from .apptest import assert_no_exception, figures, numbers, on_page, open_app, trace, widget
from .conftest import SAMPLE_RUN, steps_and_weights


@pytest.fixture
def app(relex_cache):
    app = open_app()
    assert_no_exception(app)
    return app


def shared(app):
    return tuple(app.session_state[WINDOW]), app.session_state[RANK], app.session_state[FIT]


def test_sidebar_offers_the_sample_run_a_folder_and_the_shared_window(app, run_gram):
    sidebar = app.sidebar
    assert sidebar.radio(key="sidebar.source").value == "sample"
    assert sidebar.radio(key="sidebar.source").options == ["Sample run", "Folder on this server"]
    assert sidebar.text_input(key="sidebar.base").value == ""
    window = sidebar.select_slider(key="sidebar.window")
    assert window.value == (48, 288)  # the first fifth of the 30 checkpoints
    assert window.options == [str(step) for step in run_gram.steps]
    assert sidebar.number_input(key="sidebar.rank").value == 1
    assert sidebar.radio(key="sidebar.fit").value == "linear"
    assert "30 checkpoints after the base, steps 48–1440" in sidebar.caption[-1].value


def test_overview_shows_the_run_its_distance_from_the_base_and_its_speed(app, run_gram):
    labels = {metric.label: metric.value for metric in app.metric}
    assert labels["Parameters"] == f"{int(run_gram.numels.sum()):,}"
    assert labels["Tensors"] == str(len(run_gram.names)) and labels["Checkpoints"] == str(len(run_gram.steps))
    assert labels["Dtype"] == "bfloat16"
    charts_shown = figures(app)
    distance = trace(charts_shown["update_norm"], "‖θ<sub>t</sub> − θ<sub>0</sub>‖")
    assert list(numbers(distance["x"])) == [0, *run_gram.steps]
    diagonal = np.einsum("ntt->t", run_gram.gram)
    np.testing.assert_allclose(numbers(distance["y"]), np.sqrt(np.concatenate([[0.0], diagonal])), rtol=1e-12)
    assert charts_shown["update_norm"]["layout"]["xaxis"]["title"]["text"] == "training step"
    history = json.loads((SAMPLE_RUN / f"checkpoint-{run_gram.steps[-1]}" / "trainer_state.json").read_text())
    for name in app.multiselect(key="overview.metrics").value:
        logged = [(entry["step"], entry[name]) for entry in history["log_history"] if name in entry]
        reward = trace(charts_shown["metrics"], name)
        assert list(zip(numbers(reward["x"]), numbers(reward["y"]))) == logged
    speed = trace(charts_shown["speed"], charts.SPEED)
    steps, weights = steps_and_weights(run_gram)  # brute force: the weights themselves, in float64
    moved = [np.sqrt(sum(((weights[index][name] - weights[index - 1][name]) ** 2).sum() for name in run_gram.names))
             for index in range(1, len(steps))]
    np.testing.assert_allclose(numbers(speed["y"]), np.array(moved) / np.diff(steps), rtol=1e-9)
    widths = numbers(speed["width"])  # each bar spans its interval, from the previous checkpoint (the base's 0)
    np.testing.assert_allclose(numbers(speed["x"]) - widths / 2, [0, *run_gram.steps[:-1]])
    np.testing.assert_allclose(numbers(speed["x"]) + widths / 2, run_gram.steps)


def test_spectra_page_draws_trajectory_spectra_energy_grid_and_one_update_matrix(app, run_gram):
    on_page(app, "spectra")
    window, rank, fit_name = shared(app)
    fit = WindowFit(run_gram, window, rank=rank, fit=fit_name)
    spectrum = spectrum_frame(fit)
    shown = figures(app)
    assert set(shown) == {"spectrum", "energy_grid", "changed_share", "delta_spectrum"}
    medians = frames.module_spectrum_frame(spectrum, relative=True)
    q_proj = trace(shown["spectrum"], "q_proj")
    np.testing.assert_allclose(numbers(q_proj["y"]), medians[medians["module"] == "q_proj"]["sigma"], rtol=1e-12)
    assert shown["spectrum"]["layout"]["yaxis"]["type"] == "log"

    heatmap = trace(shown["energy_grid"], "rank-1 energy")
    cells = trace(shown["energy_grid"], "tensors")  # the clickable layer: one marker per cell, naming its tensor
    tensors = fit.tensors_frame().set_index("tensor")
    values = numbers(heatmap["z"])
    for name, value in zip(cells["customdata"], cells["text"]):
        assert float(value) == pytest.approx(tensors.loc[name, "energy_rank1"], abs=5e-5)
    # colours span the data (its 5th–95th percentiles), not 0–1, where every cell of a near-rank-1 run is yellow
    assert (heatmap["zmin"], heatmap["zmax"]) == tuple(np.percentile(values[np.isfinite(values)], [5, 95]))
    assert heatmap["zmin"] > 0.5
    assert heatmap["hoverinfo"] == "skip" and "%{text}" in cells["hovertemplate"]

    matrix = app.selectbox(key="spectra.matrix").value
    step = widget(app, "select_slider", "Checkpoint step").value
    assert step == window[1]
    expected = delta_spectrum_frame(run_gram, matrix, step, app.number_input(key="spectra.k").value)
    points = trace(shown["delta_spectrum"], "σ<sub>j</sub>(ΔW)")
    assert points["type"] == "scatter" and points["mode"] == "lines+markers"  # not bars on a log axis
    np.testing.assert_allclose(numbers(points["y"]), expected["sigma"], rtol=1e-12)
    shown_numbers = {metric.label: metric.value for metric in app.metric}
    assert shown_numbers["σ₁²/‖ΔW‖²_F"] == f"{expected.attrs['energy_rank1']:.3f}"

    # the share of elements stored differently from the base, counted from the weights themselves
    steps, weights = steps_and_weights(run_gram)
    changed = [sum(int((weights[index][name] != weights[0][name]).sum()) for name in run_gram.names)
               for index in range(1, len(steps))]
    share = trace(shown["changed_share"], "stored as bfloat16")
    assert list(numbers(share["x"])) == steps[1:]
    np.testing.assert_array_equal(numbers(share["y"]), np.array(changed) / run_gram.numels.sum())

    app.radio(key="spectra.view").set_value("one tensor").run()
    app.selectbox(key="spectra.tensor").set_value(run_gram.names[5]).run()
    single = trace(figures(app)["spectrum"], run_gram.names[5])
    np.testing.assert_allclose(numbers(single["y"]), spectrum[spectrum["tensor"] == run_gram.names[5]]["sigma"])


def test_trajectory_page_draws_coefficients_fit_extrapolation_residuals_and_speed(app, run_gram):
    app.sidebar.select_slider(key="sidebar.window").set_range(96, 480).run()
    on_page(app, "trajectory")
    window, rank, fit_name = shared(app)
    assert window == (96, 480)
    fit = WindowFit(run_gram, window, rank=rank, fit=fit_name)
    tensor = app.selectbox(key="trajectory.tensor").value
    target = int(widget(app, "text_input", "Extrapolate to step").value)
    assert target == 1440
    shown = figures(app)
    assert {"coefficients", "residuals", "tensor_speed", "r2_grid", "energy_histogram", "r2_histogram"} <= set(shown)
    coefficients = fit.coefficients_frame([tensor])
    inside = trace(shown["coefficients"], "in the window (fitted)")
    np.testing.assert_allclose(numbers(inside["y"]), coefficients[coefficients["in_window"]]["coefficient"])
    before = trace(shown["coefficients"], "before the window")  # step 48: not "held out"
    assert list(numbers(before["x"])) == [48]
    after = trace(shown["coefficients"], "after the window (held out)")
    assert numbers(after["x"]).min() == 528
    row = run_gram.names.index(tensor)
    line = trace(shown["coefficients"], "fit")
    np.testing.assert_allclose(numbers(line["y"]), fit.trend.predict(numbers(line["x"]))[row, 0], rtol=1e-12)
    star = trace(shown["coefficients"], f"prediction at step {target}")
    assert numbers(star["y"])[0] == pytest.approx(fit.projections([target])[row, 0, 0], rel=1e-12)
    assert shown["coefficients"]["layout"]["yaxis"]["title"]["text"].startswith("coefficient c₁")
    residuals = trace(shown["residuals"], "after the window (held out)")
    held_out = coefficients[coefficients["step"] > window[1]]
    np.testing.assert_allclose(numbers(residuals["y"]), held_out["residual"])
    speed = frames.tensor_speed_frame(fit, tensor)
    along = trace(shown["tensor_speed"], "Δc₁ / Δstep (along v₁)")
    np.testing.assert_allclose(numbers(along["y"]), speed["increment"], rtol=1e-12)
    histogram = trace(shown["r2_histogram"], "r2")
    np.testing.assert_allclose(numbers(histogram["x"]), fit.tensors_frame()["r2"])

    beyond = 2 * int(run_gram.steps[-1])
    widget(app, "text_input", "Extrapolate to step").set_value(str(beyond)).run()
    extrapolation = trace(figures(app)["coefficients"], "extrapolation")
    assert numbers(extrapolation["x"]).min() == window[1] and numbers(extrapolation["x"]).max() == beyond


def test_trajectory_targets_are_checked(app, run_gram):
    on_page(app, "trajectory")
    widget(app, "text_input", "Extrapolate to step").set_value("144").run()  # inside the window 48:288
    assert "Step 144 lies inside the window `48:288`: a fitted point, not an extrapolation." in \
        [info.value for info in app.info]
    trace(figures(app)["coefficients"], "fitted value at step 144 (inside the window)")

    widget(app, "text_input", "Extrapolate to step").set_value("6000").run()  # 24× the window's length past its end
    assert "Confirm to use it" in app.warning[0].value
    assert not [item for item in figures(app)["coefficients"]["data"] if "6000" in str(item.get("name"))]
    widget(app, "checkbox", "Extrapolate that far anyway").check().run()
    trace(figures(app)["coefficients"], "prediction at step 6000")

    widget(app, "text_input", "Extrapolate to step").set_value("12345678901").run()  # an 11-digit step is a typo
    assert [error.value for error in app.error] == ["target step 12345678901 is beyond any training run "
                                                    "(at most 1,000,000,000)"]
    assert_no_exception(app)


def test_window_page_backtests_verdict_heatmap_stability_and_suggestion(app, run_gram):
    on_page(app, "window")
    window, rank, fit_name = shared(app)
    assert not app.main.get("select_slider") or all("window" not in slider.label.lower()
                                                    for slider in app.main.select_slider)  # controls: sidebar only
    fit = WindowFit(run_gram, window, rank=rank, fit=fit_name)
    shown = figures(app)
    assert set(shown) == {"backtest_error", "backtest_cosine", "discarded", "window_heatmap", "stability",
                          "suggestion"}
    backtests = fit.backtest_frame()
    assert app.info[0].value == selection.backtest_verdict(backtests).text
    for method, name in (("relex", "relex (fitted trend)"), ("last", "last observed checkpoint")):
        rows = backtests[backtests["method"] == method]
        curve = trace(shown["backtest_error"], name)
        np.testing.assert_allclose(numbers(curve["x"]), rows["target_step"])
        np.testing.assert_allclose(numbers(curve["y"]), rows["rel_error"], rtol=1e-12)
        np.testing.assert_allclose(numbers(trace(shown["backtest_cosine"], name)["y"]), rows["cosine"], rtol=1e-12)

    heatmap = trace(shown["window_heatmap"], "rel_error")
    ends, targets, errors = numbers(heatmap["y"]), numbers(heatmap["x"]), numbers(heatmap["z"])
    for end in (ends[0], ends[len(ends) // 2]):
        expected = WindowFit(run_gram, (window[0], int(end)), rank=rank).backtest_frame()
        expected = expected[expected["method"] == "relex"].set_index("target_step")["rel_error"]
        row = errors[list(ends).index(end)]
        for target, value in zip(targets, row):
            assert np.isnan(value) if target not in expected.index else value == pytest.approx(expected[target])
    finite = errors[np.isfinite(errors)]  # a robust colour range: two-checkpoint windows do not wash out the rest
    assert (heatmap["zmin"], heatmap["zmax"]) == tuple(np.percentile(finite, [5, 95]))

    # what the projection discards, ÷ ‖Δ_i‖: relex's error after the window is the backtest's relative error
    energies = fit.discarded_energy_frame()
    discarded = trace(shown["discarded"], "outside the window's subspace (what relex drops)")
    assert list(numbers(discarded["x"])) == list(run_gram.steps)
    np.testing.assert_allclose(numbers(discarded["y"]) ** 2, energies["discarded_sq"] / energies["update_sq"],
                               rtol=1e-10)
    relex_error = numbers(trace(shown["discarded"], "relex error")["y"])
    after = np.isin(run_gram.steps, backtests["target_step"])
    np.testing.assert_allclose(relex_error[after], backtests[backtests["method"] == "relex"]["rel_error"], rtol=1e-9)
    last_error = numbers(trace(shown["discarded"], "last error")["y"])
    np.testing.assert_allclose(last_error[after], backtests[backtests["method"] == "last"]["rel_error"], rtol=1e-9)
    app.selectbox(key="window.discarded_group").set_value("q_proj").run()
    modules = fit.discarded_energy_frame("module")
    modules = modules[modules["module"] == "q_proj"]
    np.testing.assert_allclose(numbers(trace(figures(app)["discarded"], "last error outside the subspace")["y"]) ** 2,
                               modules["last_error_outside_sq"] / modules["update_sq"], rtol=1e-10)

    stability = stability_frame(run_gram, start=window[0])
    np.testing.assert_allclose(numbers(trace(shown["stability"], "median tensor")["y"]), stability["overlap_median"])
    suggestion = selection.suggest_window(selection.window_end_backtests(run_gram, window[0], rank), window[0],
                                          selection.default_holdout(run_gram.steps), 0.10)
    assert suggestion.reason in app.success[0].value

    app.sidebar.select_slider(key="sidebar.window").set_range(48, 720).run()
    assert_no_exception(app)
    expected = WindowFit(run_gram, (48, 720)).backtest_frame()
    curve = trace(figures(app)["backtest_error"], "relex (fitted trend)")
    np.testing.assert_allclose(numbers(curve["y"]), expected[expected["method"] == "relex"]["rel_error"], rtol=1e-12)
    verdict = selection.backtest_verdict(expected)
    assert verdict.loses_to_last_everywhere and app.warning[0].value == verdict.text  # said plainly, as a warning

    app.button(key="window.use_suggestion").click().run()
    assert_no_exception(app)
    chosen = app.success[0].value.split("`")[1]
    assert shared(app)[0] == tuple(int(step) for step in chosen.split(":"))
    assert app.sidebar.select_slider(key="sidebar.window").value == shared(app)[0]


def test_at_rank_2_the_stability_view_shows_the_second_principal_angle(app, run_gram):
    on_page(app, "window")
    app.sidebar.number_input(key="sidebar.rank").set_value(2).run()
    assert_no_exception(app)
    window = shared(app)[0]
    expected = stability_frame(run_gram, start=window[0], rank=2)
    second = trace(figures(app)["stability"], "cos θ₂, rank-2 subspaces (median tensor)")
    np.testing.assert_allclose(numbers(second["y"]), expected["principal_cosine_2"], rtol=1e-12)


def test_rank_and_fit_changes_are_shared_by_all_pages(app, run_gram):
    app.sidebar.number_input(key="sidebar.rank").set_value(2).run()
    app.sidebar.radio(key="sidebar.fit").set_value("poly2").run()
    on_page(app, "window")
    assert app.sidebar.number_input(key="sidebar.rank").value == 2
    assert app.sidebar.radio(key="sidebar.fit").value == "poly2"
    window = shared(app)[0]
    expected = WindowFit(run_gram, window, rank=2, fit="poly2").backtest_frame()
    curve = trace(figures(app)["backtest_error"], "relex (fitted trend)")
    np.testing.assert_allclose(numbers(curve["y"]), expected[expected["method"] == "relex"]["rel_error"], rtol=1e-12)


def test_a_bad_run_folder_is_one_error_line_and_the_app_keeps_working(relex_cache, tmp_path):
    app = open_app(**{"relex.source": "folder", "relex.folder": str(tmp_path / "nowhere")})
    assert_no_exception(app)
    assert [error.value for error in app.error] == [f"{tmp_path / 'nowhere'}: no such run folder or manifest"]
    assert "Pick a run" in app.info[0].value
    app.sidebar.radio(key="sidebar.source").set_value("sample").run()
    assert_no_exception(app)
    assert not app.error and figures(app)


def test_export_page_shows_the_weights_and_writes_a_checkpoint_under_the_export_root(app, run_gram, tmp_path,
                                                                                     monkeypatch):
    export_root = tmp_path / "exports"
    monkeypatch.setenv("RELEX_EXPORT_ROOT", str(export_root))
    on_page(app, "export")
    window, rank, fit_name = shared(app)
    assert not app.main.get("select_slider")  # the window is the sidebar's, drawn once
    assert app.radio(key="export.mode").options == ["Extrapolate to target steps", "Reconstruct an observed checkpoint"]
    assert app.selectbox(key="export.dtype").options == ["as stored (per tensor)", "bf16", "fp16", "fp32"]
    target = int(widget(app, "text_input", "Target step(s)").value)
    assert target == run_gram.steps[-1]
    assert widget(app, "text_input", "Output folder (inside the export root)").value == "run-w48-288-r1-s1440"
    fit = WindowFit(run_gram, window, rank=rank, fit=fit_name)
    weights = trace(figures(app)["weights"], "size-weighted mean over tensors")
    expected = fit.weights_frame(target)
    np.testing.assert_allclose(numbers(weights["x"]), expected["step"])
    np.testing.assert_allclose(numbers(weights["y"]), expected["weight_model"], rtol=1e-12)
    largest = {metric.label: metric.value for metric in app.metric}["Largest checkpoint weight |w|"]
    assert largest == f"{np.abs(fit.weights([target])).max():.2f}"
    assert app.info[-1].value == f"Backtest of this window: {selection.backtest_verdict(fit.backtest_frame()).text}"

    widget(app, "text_input", "Output folder (inside the export root)").set_value("from-apptest").run()
    app.selectbox(key="export.dtype").set_value("fp32").run()
    assert widget(app, "text_input", "Output folder (inside the export root)").value == "from-apptest"  # an edit holds
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


def test_export_page_says_plainly_when_relex_loses_and_asks_before_a_far_target(app, run_gram):
    app.sidebar.select_slider(key="sidebar.window").set_range(48, 720).run()
    on_page(app, "export")
    verdict = selection.backtest_verdict(WindowFit(run_gram, (48, 720)).backtest_frame())
    assert app.warning[0].value == f"Backtest of this window: {verdict.text}"
    assert "keeping the last checkpoint beats exporting an extrapolation" in app.warning[0].value
    folder = widget(app, "text_input", "Output folder (inside the export root)")
    assert folder.value == "run-w48-720-r1-s1440"  # the folder name follows the window

    widget(app, "text_input", "Target step(s)").set_value("20000").run()  # 29× the window's 672 steps past its end
    assert app.button(key="export.run").disabled and "Confirm to use it" in app.warning[0].value
    assert widget(app, "text_input", "Output folder (inside the export root)").value == "run-w48-720-r1-s20000"
    widget(app, "checkbox", "Extrapolate that far anyway").check().run()
    assert not app.button(key="export.run").disabled


def test_export_page_refuses_a_folder_outside_the_export_root(app, tmp_path, monkeypatch):
    monkeypatch.setenv("RELEX_EXPORT_ROOT", str(tmp_path / "exports"))
    on_page(app, "export")
    widget(app, "text_input", "Output folder (inside the export root)").set_value("first").run()
    app.button(key="export.run").click().run()
    assert app.success
    for requested in ("../escaped", str(tmp_path / "elsewhere")):
        widget(app, "text_input", "Output folder (inside the export root)").set_value(requested).run()
        app.button(key="export.run").click().run()
        assert_no_exception(app)
        assert "must be inside the export root" in app.error[0].value
        assert not app.success  # the earlier export's summary is gone
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "elsewhere").exists()


def test_export_page_writes_several_targets_and_reconstructions(app, run_gram, tmp_path, monkeypatch):
    export_root = tmp_path / "exports"
    monkeypatch.setenv("RELEX_EXPORT_ROOT", str(export_root))
    on_page(app, "export")
    steps = [int(step) for step in run_gram.steps]
    widget(app, "text_input", "Target step(s)").set_value(f"{steps[-1]}, {2 * steps[-1]}").run()
    widget(app, "text_input", "Output folder (inside the export root)").set_value("two-targets").run()
    app.button(key="export.run").click().run()
    assert_no_exception(app)
    assert sorted(path.name for path in (export_root / "two-targets").iterdir()) == \
        sorted([f"step-{steps[-1]}", f"step-{2 * steps[-1]}"])

    app.radio(key="export.mode").set_value("Reconstruct an observed checkpoint").run()
    window_end = shared(app)[0][1]
    assert widget(app, "selectbox", "Observed checkpoint").value == window_end
    widget(app, "text_input", "Output folder (inside the export root)").set_value("reconstructed").run()
    app.button(key="export.run").click().run()
    assert_no_exception(app)
    provenance = json.loads((export_root / "reconstructed" / "relex.json").read_text())
    assert provenance["method"] == "reconstruct" and provenance["target_step"] == window_end


def test_export_page_shows_a_bad_target_as_one_error_line(app):
    on_page(app, "export")
    widget(app, "text_input", "Target step(s)").set_value("soon").run()
    assert_no_exception(app)
    assert [error.value for error in app.error] == ["target step 'soon' must be a whole number, like 400 or 400,600"]
    assert app.button(key="export.run").disabled
