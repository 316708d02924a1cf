"""Window: which observation window to trust, from backtests on the checkpoints after it."""

import streamlit as st

from relex_core import selection
from relex_dashboard import charts, state

analysis = state.page_setup()
st.title("Window")
state.window_rank_fit_controls(analysis.steps, "window", compact=True)
fit = analysis.fit
run_gram = analysis.run_gram

st.subheader(f"Backtest of window {analysis.window_label}")
backtests = fit.backtest_frame()
if backtests.empty:
    st.info("The window ends at the last checkpoint: no later checkpoint is left to test against.")
else:
    left, right = st.columns(2)
    left.plotly_chart(charts.backtest_chart(backtests, "rel_error", "‖pred − Δ‖/‖Δ‖ (relative error)",
                                            "Held-out relative error"), key="backtest_error")
    right.plotly_chart(charts.backtest_chart(backtests, "cosine", "cosine(pred, Δ)", "Held-out cosine"),
                       key="backtest_cosine")
    st.caption("Whole-model figures over every checkpoint after the window. The last checkpoint and the line "
               "through the base and it point the same way, so their cosines coincide.")

st.subheader("Every window end")
start = analysis.window[0]
all_ends = state.window_end_backtests(run_gram, start, analysis.rank, analysis.degree)
# Keyed containers keep charts that do not depend on the window's end mounted when it moves,
# so the browser redraws only the backtest charts.
left, right = st.container(key="window-ends").columns(2)
with left:
    if all_ends.empty:
        st.info(f"No window starting at step {start} leaves a later checkpoint to test against.")
    else:
        st.plotly_chart(charts.window_end_heatmap(all_ends, start), key="window_heatmap")
with right, state.errors_shown():
    reference = st.radio("Compare v₁ with", ["the whole run", "the current window"], horizontal=True,
                         key="window.reference")
    reference_window = None if reference == "the whole run" else analysis.window
    label = f"{analysis.steps[0]}:{analysis.steps[-1]}" if reference_window is None else analysis.window_label
    st.plotly_chart(charts.stability_chart(state.stability(run_gram, start, reference_window), label),
                    key="stability")

st.subheader("Suggested window")
controls = st.columns(2)
tolerance = controls[0].slider("Tolerance over the best held-out error (%)", 0, 50, 10, key="window.tolerance") / 100
holdout_from = controls[1].select_slider("Held-out checkpoints from step", options=analysis.steps,
                                         value=selection.default_holdout(analysis.steps), key="window.holdout")
with state.errors_shown():
    suggestion = selection.suggest_window(all_ends, start, holdout_from, tolerance)
    st.success(f"Suggested window **{suggestion.window[0]}:{suggestion.window[1]}**: {suggestion.reason}.")

    def use_suggestion():
        st.session_state[state.WINDOW] = suggestion.window

    st.button("Use the suggested window", on_click=use_suggestion, disabled=suggestion.window == analysis.window,
              key="window.use_suggestion")
    st.plotly_chart(charts.suggestion_chart(suggestion), key="suggestion")
