"""Export: write extrapolated (or reconstructed) checkpoints as HF folders, under the export root only."""

import streamlit as st

from relex_core import export, selection
from relex_core.options import parse_target_steps
from relex_dashboard import charts, files, frames, state, teaching
from relex_dashboard.report import PageFigures

DTYPES = {"as stored (per tensor)": None, "bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}
EXTRAPOLATE, RECONSTRUCT = "Extrapolate to target steps", "Reconstruct an observed checkpoint"
RESULT = "export.result"
EVALUATE_QUEUED = "evaluate.queued"  # read by the Evaluate page

analysis = state.page_setup()
figures = PageFigures("Export", analysis.context)
st.title("Export")
teaching.how_to_read("Export")
st.caption(f"From window {state.code(analysis.window_label)}, rank {analysis.rank}, fit {analysis.fit_name} "
           "(set in the sidebar).")
fit = analysis.fit
root = files.export_root()

mode = st.radio("What to write", [EXTRAPOLATE, RECONSTRUCT], horizontal=True, key="export.mode")
columns = st.columns([2, 2, 3])
window_steps = [int(step) for step in fit.window_steps]
if mode == EXTRAPOLATE:
    targets_key = state.follow_default("export.targets", str(analysis.steps[-1]))
    targets_text = columns[0].text_input("Target step(s)", key=targets_key,
                                         help="One step, or several separated by commas (one step-S folder each). "
                                              f"Default: the run's last step; twice it is {2 * analysis.steps[-1]}.")
else:
    step_key = state.follow_default("export.reconstruct_step", window_steps[-1])
    targets_text = str(columns[0].selectbox("Observed checkpoint", window_steps, key=step_key,
                                            help="Its rank-k projection on the window's directions is written."))
dtype = DTYPES[columns[1].selectbox("Output dtype", list(DTYPES), key="export.dtype")]

target_steps, allowed = [], False
with state.errors_shown():
    target_steps = parse_target_steps(targets_text)
    allowed = mode == RECONSTRUCT or state.confirm_targets(target_steps, analysis.window, "export.far")
kind = "" if mode == EXTRAPOLATE else "reconstruct"
folder_name = frames.default_export_name(analysis.run_gram, analysis.window, analysis.rank, analysis.fit_name,
                                         target_steps, kind)
folder_key = state.follow_default("export.folder", folder_name)
folder_text = columns[2].text_input("Output folder (inside the export root)", key=folder_key,
                                    help="Named after the window, rank, fit and target step(s) until you change it.")
force = st.checkbox("Replace the folder if it already exists", key="export.force")
st.caption(f"Export root: {state.code(root)} (set RELEX_EXPORT_ROOT to move it). Folders outside it are refused.")

verdict = None
if mode == EXTRAPOLATE and target_steps and allowed:
    left, right = st.columns([1, 3])
    left.metric("Largest checkpoint weight |w|", f"{frames.largest_weight(fit, target_steps):.2f}",
                help="θ̂ = θ₀ + Σ_t w_t (θ_t − θ₀). The weights grow with the target's distance past the "
                     "window; large weights of opposite signs amplify the noise the checkpoints carry. It "
                     "measures how far the export leans on extrapolation.")
    shown = target_steps[0] if len(target_steps) == 1 else left.selectbox("Weights for target step", target_steps,
                                                                           key="export.weights_step")
    with right:
        weights = fit.weights_frame(shown)
        figures.chart(charts.weights_chart(weights, shown), weights, "weights")
        st.caption(r"$\hat\theta = \theta_0 + \sum_t w_t (\theta_t - \theta_0)$: bars are the size-weighted mean "
                   "weight of each window checkpoint over tensors, whiskers the range over tensors.")
    backtests = fit.backtest_frame()
    if len(backtests):
        verdict = selection.backtest_verdict(backtests)
        (st.warning if verdict.loses_to_last_everywhere else st.info)(f"Backtest of this window: {verdict.text}")
    else:
        st.info("The window ends at the last checkpoint: no later checkpoint tells how well it extrapolates.")

if st.button("Export", type="primary", key="export.run", disabled=not (target_steps and allowed)):
    st.session_state.pop(RESULT, None)  # a failed export must not leave the previous one's summary up
    with state.errors_shown():
        out = files.resolve_export_path(root, folder_text)
        bar = st.progress(0.0, text="Exporting…")

        def progress(fraction, message):
            bar.progress(min(1.0, max(0.0, fraction)), text=message)

        if mode == EXTRAPOLATE:
            results = export.extrapolate(fit, target_steps, out, dtype=dtype, force=force, progress=progress)
        else:
            results = [export.reconstruct(fit, target_steps[0], out, dtype=dtype, force=force, progress=progress)]
        bar.progress(1.0, text="Done")
        total = sum(result.total_bytes for result in results)
        st.session_state[RESULT] = (out, frames.export_results_frame(results), total)

if st.session_state.get(RESULT):
    out, summary, total = st.session_state[RESULT]
    st.success(f"Wrote {len(summary)} checkpoint folder(s), {summary['files'].sum()} files, "
               f"{total / 2**20:,.1f} MiB, in {state.code(out)}.")
    st.dataframe(summary, hide_index=True, column_config={
        "rounding_loss": st.column_config.NumberColumn(
            "rounding loss", format="%.2e", help="Share of ‖δ̂‖ erased by rounding to the output dtype."),
        "size_mib": st.column_config.NumberColumn("size (MiB)", format="%.1f")})
    worst = summary["rounding_loss"].max()
    if worst > 0.01:
        st.warning(f"Rounding to the output dtype erased up to {worst:.1%} of the update δ̂ added to θ₀; "
                   "fp32 keeps it.")
    if total <= files.ZIP_DOWNLOAD_LIMIT:
        st.download_button("Download as zip", lambda: files.zip_folder(out), file_name=f"{out.name}.zip",
                           mime="application/zip", on_click="ignore", key="export.download")
    else:
        st.caption(f"Larger than {files.ZIP_DOWNLOAD_LIMIT / 2**20:.0f} MiB: copy it from the server.")
    if st.button("Score this export", key="export.score", help="Open the Evaluate page with this folder to score."):
        st.session_state[EVALUATE_QUEUED] = [str(out)]
        st.switch_page("app_pages/evaluate.py")
figures.offer_report()
