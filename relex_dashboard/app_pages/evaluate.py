"""Evaluate (sample run): does the extrapolated checkpoint score like the one RL actually reached?"""

import streamlit as st

from relex_core.options import parse_target_steps
from relex_dashboard import charts, frames, state
from relex_dashboard.evaluate import default_evaluation_steps, empty_scores, score_checkpoints

RESULT = "evaluate.result"

analysis = state.page_setup()
fit = analysis.fit
st.title("Evaluate")
if not analysis.is_sample:
    st.info("Scoring needs a verifier for the run's task; the built-in one scores the sample run. "
            "Pick “Sample run” in the sidebar.")
    st.stop()
from relex_core.sample.verifier import evaluate_checkpoint  # noqa: E402  (only the sample run needs it)

st.caption(f"Checkpoints extrapolated from window {analysis.window_label} (rank {analysis.rank}, "
           f"{state.DEGREE_NAMES[analysis.degree]}) and rank-k reconstructions, scored by the sample verifier "
           "on its held-out problems, against the reward RL logged.")
controls = st.columns(2)
targets_text = controls[0].text_input(
    "Extrapolate to steps", value=", ".join(map(str, default_evaluation_steps(analysis.steps, analysis.window))),
    key="evaluate.targets", help="Steps after the window; steps with a real checkpoint are scored too.")
window_steps = [int(step) for step in fit.window_steps]
reconstruct_steps = controls[1].multiselect("Reconstruct window checkpoints", window_steps,
                                            default=[window_steps[-1]], key="evaluate.reconstruct")

with state.errors_shown():
    target_steps = parse_target_steps(targets_text)
    settings = (analysis.run_gram.fingerprint, analysis.window, analysis.rank, analysis.degree, tuple(target_steps),
                tuple(reconstruct_steps))
    if st.button("Score checkpoints", type="primary", key="evaluate.run"):
        bar = st.progress(0.0, text="Scoring…")
        scores = score_checkpoints(fit, target_steps, reconstruct_steps, evaluate_checkpoint,
                                   progress=lambda fraction, message: bar.progress(min(1.0, fraction), text=message))
        st.session_state[RESULT] = (settings, scores)

    metrics = frames.trainer_metrics(analysis.run_gram.run)
    rewards = frames.reward_names(metrics)
    saved = st.session_state.get(RESULT)
    scores = saved[1] if saved and saved[0] == settings else empty_scores()
    if scores.empty:
        st.caption("Press “Score checkpoints” to export and score them (a few seconds each).")
    st.plotly_chart(charts.evaluation_chart(metrics, rewards, scores, analysis.window), key="evaluation")
    if len(scores):
        st.dataframe(scores, hide_index=True)
