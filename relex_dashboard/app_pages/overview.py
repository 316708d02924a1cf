"""Overview: what the run is, how far and how fast the model moved, and the metrics the trainer logged."""

import streamlit as st

from relex_dashboard import charts, frames, live, state, teaching
from relex_dashboard.report import PageFigures

analysis = state.page_setup()
figures = PageFigures("Overview", analysis.context)
st.title("Overview")
teaching.how_to_read("Overview")
live.panel(analysis, "overview")
summary = frames.run_summary(analysis.run_gram)

columns = st.columns(5)
columns[0].metric("Parameters", f"{summary['parameters']:,}", help="Floating-point parameters analysed "
                  "(a tied lm_head is counted once).")
columns[1].metric("Tensors", summary["tensors"])
columns[2].metric("Dtype", summary["dtypes"])
columns[3].metric("Checkpoints", summary["checkpoints"], help=f"Steps {summary['first_step']}–{summary['last_step']} "
                  "after the base.")
columns[4].metric("Weights on disk", f"{summary['disk_bytes'] / 2**20:,.1f} MiB", help="Base plus every checkpoint.")
st.caption(f"Run {state.code(summary['source'])} · base {state.code(summary['base'])} · steps "
           f"{summary['first_step']}–{summary['last_step']}"
           + (f" · tied: {', '.join(summary['tied'])}" if summary["tied"] else ""))
for note in summary["notes"]:
    st.info(note)

left, right = st.columns(2)
with left:
    distance = frames.update_norm_frame(analysis.run_gram)
    figures.chart(charts.update_norm_chart(distance, analysis.window), distance, "update_norm")
with right, state.errors_shown():
    metrics = frames.trainer_metrics(analysis.run_gram.run)
    if metrics.empty:
        st.info("No trainer_state.json with a log_history in the last checkpoint: no training metrics to show.")
    else:
        names = list(dict.fromkeys(metrics["metric"]))
        chosen = st.multiselect("Metrics", names, default=frames.reward_names(metrics) or names[:1],
                                key="overview.metrics")
        figures.chart(charts.metrics_chart(metrics, chosen), metrics[metrics["metric"].isin(chosen)], "metrics")

st.subheader("Speed")
st.caption(r"Distance between consecutive checkpoints per training step, $\|\theta_t - \theta_{t-1}\| / \Delta s$, "
           "from the Gram alone. A straight-line extrapolation assumes this is constant; where it is not "
           "(often early in a run), a window there predicts poorly.")
speed = frames.speed_frame(analysis.run_gram)
figures.chart(charts.speed_chart(speed, analysis.window), speed, "speed")

with st.expander("Per-tensor figures for the current window"):
    st.dataframe(analysis.fit.tensors_frame(), hide_index=True)
figures.offer_report()
