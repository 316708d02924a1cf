"""Window: which observation window to trust, from backtests on the checkpoints after it."""

import streamlit as st

from relex_core import selection
from relex_dashboard import charts, frames, live, runs, state, teaching
from relex_dashboard.report import PageFigures

analysis = state.page_setup()
figures = PageFigures("Window", analysis.context)
st.title("Window")
teaching.how_to_read("Window")
st.caption("The window, rank and fit are set in the sidebar; every page uses them.")
live.panel(analysis, "window")
fit = analysis.fit
run_gram = analysis.run_gram

st.subheader(f"Backtest of window {state.code(analysis.window_label)}")
backtests = fit.backtest_frame()
if backtests.empty:
    st.info("The window ends at the last checkpoint: no later checkpoint is left to test against.")
else:
    verdict = selection.backtest_verdict(backtests)
    (st.warning if verdict.loses_to_last_everywhere else st.info)(verdict.text)
    left, right = st.columns(2)
    with left:
        figures.chart(charts.backtest_chart(backtests, "rel_error", "relative error ‖pred − Δ‖/‖Δ‖",
                                            "Held-out relative error"), backtests, "backtest_error")
    with right:
        figures.chart(charts.backtest_chart(backtests, "cosine", "cosine(pred, Δ)", "Held-out cosine"),
                      backtests, "backtest_cosine")
    st.caption("Whole-model figures over every checkpoint after the window. The last checkpoint and the line "
               "through the base and it point the same way, so their cosines coincide.")

st.subheader("What the projection discards")
modules = frames.module_order(run_gram.modules)
group = st.selectbox("Tensors", ["whole model", *modules], key="window.discarded_group",
                     help="Squared norms are summed over the chosen tensors before the ratio is taken.")
discarded = frames.discarded_frame(fit, None if group == "whole model" else group)
figures.chart(charts.discarded_chart(discarded, analysis.window, group), discarded, "discarded")
st.caption("Per checkpoint, ÷ ‖Δᵢ‖: the part of Δᵢ outside the window's rank-k subspace (relex cannot predict it), "
           "relex's error (that part plus the fit's error inside the subspace), and the error of keeping the "
           "window's last checkpoint with its own part outside the subspace. Inside the window relex's curve is "
           "the fitted trend's error.")

st.subheader("Every window end")
start = analysis.window[0]
all_ends = runs.window_end_backtests(run_gram, start, analysis.rank, analysis.fit_name)
# Keyed containers keep charts that do not depend on the window's end mounted when it moves,
# so the browser redraws only the backtest charts.
left, right = st.container(key="window-ends").columns(2)
with left:
    if all_ends.empty:
        st.info(f"No window starting at step {start} leaves a later checkpoint to test against.")
    else:
        figures.chart(charts.window_end_heatmap(all_ends, start), all_ends, "window_heatmap")
        st.caption("Colours span the 5th–95th percentiles of the errors, so a few very short windows do not "
                   "wash out the rest; hover for the value.")
with right, state.errors_shown():
    reference = st.radio("Compare v₁ with", ["the whole run", "the current window"], horizontal=True,
                         key="window.reference")
    reference_window = None if reference == "the whole run" else analysis.window
    label = f"{analysis.steps[0]}:{analysis.steps[-1]}" if reference_window is None else analysis.window_label
    stability = runs.stability(run_gram, start, reference_window, analysis.rank)
    figures.chart(charts.stability_chart(stability, label, analysis.rank), stability, "stability")

st.subheader("Suggested window")
controls = st.columns(2)
tolerance = controls[0].slider("Tolerance over the best held-out error (%)", 0, 50, 10, key="window.tolerance") / 100
holdout_key = state.follow_default("window.holdout", selection.default_holdout(analysis.steps))
holdout_from = controls[1].select_slider("Held-out checkpoints from step", options=analysis.steps,
                                         key=holdout_key)
with state.errors_shown():
    suggestion = selection.suggest_window(all_ends, start, holdout_from, tolerance)
    st.success(f"Suggested window {state.code(f'{suggestion.window[0]}:{suggestion.window[1]}')}: {suggestion.reason}.")

    def use_suggestion():
        st.session_state[state.WINDOW] = suggestion.window

    st.button("Use the suggested window", on_click=use_suggestion, disabled=suggestion.window == analysis.window,
              key="window.use_suggestion")
    figures.chart(charts.suggestion_chart(suggestion), suggestion.scores, "suggestion")
figures.offer_report()
