"""Evaluate (sample run): does the extrapolated checkpoint score like the one RL reached, and beat the last one?"""

import streamlit as st

from relex_core.options import parse_target_steps
from relex_dashboard import charts, evaluate, files, frames, state
from relex_dashboard.report import PageFigures

analysis = state.page_setup()
figures = PageFigures("Evaluate", analysis.context)
fit = analysis.fit
st.title("Evaluate")
if not analysis.is_sample:
    st.info("Scoring needs a verifier for the run's task; the built-in one scores the sample run. "
            "Pick “Sample run” in the sidebar.")
    st.stop()
from relex_core.sample.verifier import evaluate_checkpoint  # noqa: E402  (only the sample run needs it)

st.caption(f"Checkpoints extrapolated from window {state.code(analysis.window_label)} (rank {analysis.rank}, "
           f"{analysis.fit_name}), the window's last checkpoint and the run's own checkpoints, scored by the sample "
           "verifier on its held-out problems (greedy, exact match). Results of earlier windows stay, so windows "
           "can be compared.")
controls = st.columns([3, 3, 2])
default_targets = evaluate.default_evaluation_steps(analysis.steps, analysis.window)
targets_key = state.follow_default("evaluate.targets", ", ".join(map(str, default_targets)))
targets_text = controls[0].text_input("Extrapolate to steps", key=targets_key,
                                      help="Steps after the window; steps with a real checkpoint are scored too.")
window_steps = [int(step) for step in fit.window_steps]
reconstruct_steps = controls[1].multiselect("Also reconstruct window checkpoints (rank k)", window_steps,
                                            key="evaluate.reconstruct")
problems = controls[2].number_input("Problems", min_value=10, max_value=1000, value=1000, step=10,
                                    key="evaluate.problems", help="How many held-out problems each checkpoint "
                                    "is scored on; the standard error grows as this shrinks.")
options = st.columns(2)
last = options[0].checkbox("Also score the window's last checkpoint (the `last` baseline)", value=True,
                           key="evaluate.last")
linear = options[1].checkbox("Also score the line through base and last (`linear`)", key="evaluate.linear")

stored = st.session_state.setdefault(state.SCORES, {})
with state.errors_shown():
    target_steps = parse_target_steps(targets_text)
    allowed = state.confirm_targets(target_steps, analysis.window, "evaluate.far")
    if st.button("Score checkpoints", type="primary", key="evaluate.run", disabled=not allowed):
        jobs = evaluate.plan_jobs(fit, target_steps, reconstruct_steps, last=last, linear=linear)
        bar = st.progress(0.0, text="Scoring…")

        def folder_name(kind, step):
            return frames.default_export_name(analysis.run_gram, analysis.window, analysis.rank, analysis.fit_name,
                                              [step], "" if kind == "relex" else kind)

        scores = evaluate.score_checkpoints(
            fit, jobs, lambda path: evaluate_checkpoint(path, n_problems=int(problems)), folder_name,
            files.export_root() / "evaluate",
            progress=lambda fraction, message: bar.progress(min(1.0, fraction), text=message))
        stored[analysis.run_key] = evaluate.merge_scores(stored.get(analysis.run_key, evaluate.empty_scores()), scores)

scores = stored.get(analysis.run_key, evaluate.empty_scores())
if scores.empty:
    st.caption("Press “Score checkpoints” to export and score them (a few seconds each).")
else:
    figures.chart(charts.scores_chart(scores, analysis.window, "accuracy on held-out problems (±1 standard error)"),
                  scores, "scores")
    comparison = evaluate.comparison_frame(scores)
    st.markdown("**Against the real checkpoint at the same step, and against keeping the window's last checkpoint**")
    st.dataframe(comparison, hide_index=True, column_config={
        "value": st.column_config.NumberColumn("accuracy", format="%.3f"),
        "stderr": st.column_config.NumberColumn("± stderr", format="%.3f", help="sqrt(p(1 − p)/n), n problems."),
        "vs_checkpoint": st.column_config.NumberColumn("Δ vs RL checkpoint", format="%+.3f",
                                                       help="Minus the real checkpoint's score at the same step."),
        "vs_last": st.column_config.NumberColumn("Δ vs last", format="%+.3f",
                                                 help="Minus the score of the window's last checkpoint.")})
    buttons = st.columns([1, 1, 4])
    buttons[0].download_button("scores.csv", lambda: evaluate.scores_csv(scores), file_name="scores.csv",
                               mime="text/csv", on_click="ignore", key="evaluate.download")

    def clear():
        stored.pop(analysis.run_key, None)

    buttons[1].button("Clear results", on_click=clear, key="evaluate.clear")

with state.errors_shown():
    metrics = frames.trainer_metrics(analysis.run_gram.run)
    training = [name for name in frames.reward_names(metrics) if not frames.is_held_out(name)]
    if training:
        st.subheader("Training reward")
        st.caption("Mean reward of the policy's own rollouts at each step, as the trainer logged it: a different "
                   "quantity from held-out accuracy, so it has its own chart. (The logged held-out reward is this "
                   "verifier's score of the real checkpoints; it is on the Overview page.)")
        rows = metrics[metrics["metric"].isin(training)]
        chart = charts.metrics_chart(rows, training, "Training reward (as logged)", "reward on training rollouts")
        figures.chart(chart, rows, "training_reward")
figures.offer_report()
