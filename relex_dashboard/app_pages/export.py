"""Export: write extrapolated (or reconstructed) checkpoints as HF folders, under the export root only."""

import streamlit as st

from relex_core import export
from relex_core.options import parse_target_steps
from relex_dashboard import charts, files, frames, state

DTYPES = {"as stored (per tensor)": None, "bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}
EXTRAPOLATE, RECONSTRUCT = "Extrapolate to target steps", "Reconstruct an observed checkpoint"
RESULT = "export.result"

analysis = state.page_setup()
st.title("Export")
state.window_rank_fit_controls(analysis.steps, "export", compact=True)
fit = analysis.fit
root = files.export_root(analysis.repo_root)

mode = st.radio("What to write", [EXTRAPOLATE, RECONSTRUCT], horizontal=True, key="export.mode")
columns = st.columns([2, 2, 3])
if mode == EXTRAPOLATE:
    targets_text = columns[0].text_input("Target step(s)", value=str(analysis.steps[-1]), key="export.targets",
                                         help="One step, or several separated by commas (one step-S folder each).")
else:
    window_steps = [int(step) for step in fit.window_steps]
    targets_text = str(columns[0].selectbox("Observed checkpoint", window_steps, index=len(window_steps) - 1,
                                            key="export.reconstruct_step",
                                            help="Its rank-k projection on the window's directions is written."))
dtype = DTYPES[columns[1].selectbox("Output dtype", list(DTYPES), key="export.dtype")]
folder_text = columns[2].text_input(
    "Output folder (inside the export root)", key="export.folder",
    value=frames.default_export_name(analysis.run_gram, analysis.window, analysis.rank, analysis.degree))
force = st.checkbox("Replace the folder if it already exists", key="export.force")
st.caption(f"Export root: `{root}` (set RELEX_EXPORT_ROOT to move it). Folders outside it are refused.")

with state.errors_shown():
    target_steps = parse_target_steps(targets_text)
    if mode == EXTRAPOLATE:
        shown = target_steps[0] if len(target_steps) == 1 else st.selectbox("Weights for target step", target_steps,
                                                                            key="export.weights_step")
        st.plotly_chart(charts.weights_chart(fit.weights_frame(shown), shown), key="weights")
        st.caption("θ̂ = θ_0 + Σ_t w_t (θ_t − θ_0): bars are the size-weighted mean weight of each window checkpoint "
                   "over tensors, whiskers the range over tensors.")
    if st.button("Export", type="primary", key="export.run"):
        st.session_state.pop(RESULT, None)  # a failed export must not leave the previous one's summary up
        out = files.resolve_export_path(root, folder_text)
        bar = st.progress(0.0, text="Exporting…")

        def progress(fraction, message):
            bar.progress(min(1.0, fraction), text=message)

        if mode == EXTRAPOLATE:
            results = export.extrapolate(fit, target_steps, out, dtype=dtype, force=force, progress=progress)
        else:
            results = [export.reconstruct(fit, target_steps[0], out, dtype=dtype, force=force, progress=progress)]
        bar.progress(1.0, text="Done")
        total = sum(result.total_bytes for result in results)
        archive = files.zip_folder(out) if total <= files.ZIP_DOWNLOAD_LIMIT else None
        st.session_state[RESULT] = (out, frames.export_results_frame(results), total, archive)

if st.session_state.get(RESULT):
    out, summary, total, archive = st.session_state[RESULT]
    st.success(f"Wrote {len(summary)} checkpoint folder(s), {summary['files'].sum()} files, "
               f"{total / 2**20:,.1f} MiB, in `{out}`.")
    st.dataframe(summary, hide_index=True, column_config={
        "rounding_loss": st.column_config.NumberColumn("rounding loss", format="%.2e",
                                                       help="Share of ‖δ̂‖ erased by rounding to the output dtype."),
        "size_mib": st.column_config.NumberColumn("size (MiB)", format="%.1f")})
    worst = summary["rounding_loss"].max()
    if worst > 0.01:
        st.warning(f"Rounding to the output dtype erased up to {worst:.1%} of the update δ̂ added to θ_0; "
                   "fp32 keeps it.")
    if archive is not None:
        st.download_button("Download as zip", archive, file_name=f"{out.name}.zip", mime="application/zip",
                           on_click="ignore", key="export.download")
    else:
        st.caption(f"Larger than {files.ZIP_DOWNLOAD_LIMIT / 2**20:.0f} MiB: copy it from the server.")
