"""Spectra: how many directions the trajectory uses, per tensor and per module type, and per update matrix."""

import streamlit as st

from relex_core.analysis import changed_frame

from relex_dashboard import charts, frames, runs, state, teaching
from relex_dashboard.report import PageFigures

analysis = state.page_setup()
state.follow_tensor_click()
figures = PageFigures("Spectra", analysis.context)
fit = analysis.fit
st.title("Spectra")
teaching.how_to_read("Spectra")
st.caption(f"Window {state.code(analysis.window_label)}: singular values of the trajectory matrix "
           r"$[\theta_t - \theta_0]_{t \in W}$. A fast drop after $\sigma_1$ means the run moves along one direction.")
spectrum = runs.spectrum(fit)
tensors = fit.tensors_frame()

controls = st.columns([2, 3])
view = controls[0].radio("Spectrum of", ["median per module type", "one tensor"], horizontal=True,
                         key="spectra.view")
if view == "one tensor":
    tensor = controls[1].selectbox("Tensor", analysis.run_gram.names, key="spectra.tensor")
    figures.chart(charts.tensor_spectrum_chart(spectrum, tensor), spectrum[spectrum["tensor"] == tensor], "spectrum")
else:
    relative = controls[1].toggle(r"Divide by $\sigma_1$", value=True, key="spectra.relative",
                                  help="Compare module types of different sizes by shape.")
    medians = frames.module_spectrum_frame(spectrum, relative)
    figures.chart(charts.module_spectrum_chart(medians, relative), medians, "spectrum")

left, right = st.columns([3, 2])
grid = frames.layer_module_grid(tensors, "energy_rank1")
with left:
    energy_grid = charts.grid_heatmap(grid, "Rank-1 energy σ₁²/Σσ² of each weight matrix", "rank-1 energy")
    figures.chart(energy_grid, tensors[["tensor", "layer", "module", "energy_rank1"]], "energy_grid",
                  on_select=state.on_tensor_click("energy_grid"), selection_mode="points")
    st.caption("Colours span the 5th–95th percentiles of the values; hover for each. Click a cell to open its "
               "tensor on the Trajectory page.")
outside = tensors[tensors["layer"].isna()][["tensor", "energy_rank1", "r2"]]
if len(outside):
    right.caption("Tensors outside the layers")
    right.dataframe(outside, hide_index=True)

st.subheader("How visible the updates are")
changed = changed_frame(analysis.run_gram, "dtype")
if changed.empty:
    st.caption("This analysis carries no counts of changed elements (rerun it to count them).")
else:
    st.caption("Per checkpoint, the share of elements whose stored value differs from the base's, counted in the "
               "Gram pass. At RLVR learning rates a step moves a weight by far less than bf16's spacing, so a bf16 "
               "trajectory can be mostly rounding: a low share means most of the run's steps were lost when the "
               "weights were saved, which fp32 shards (verl's `model_world_size_*` files) keep.")
    figures.chart(charts.changed_share_chart(changed, analysis.window), changed, "changed_share")

st.subheader(r"One update matrix $\Delta W = \theta_t - \theta_0$")
st.caption(r"Top singular values of a single checkpoint's update (randomized SVD). $\|\Delta W\|_F^2$ comes from the "
           r"Gram, so $\sigma_1^2/\|\Delta W\|_F^2$ and the stable rank $\|\Delta W\|_F^2/\sigma_1^2$ need only "
           r"$\sigma_1$.")
matrices = [name for name, shape in zip(analysis.run_gram.names, analysis.run_gram.shapes) if len(shape) == 2]
controls = st.columns([3, 2, 1])
tensor = controls[0].selectbox("2-D tensor", matrices, key="spectra.matrix")
step_key = state.follow_default("spectra.step", analysis.window[1])
step = controls[1].select_slider("Checkpoint step", options=analysis.steps, key=step_key)
k = controls[2].number_input("Top k", min_value=1, max_value=64, value=16, key="spectra.k")

with state.errors_shown():
    delta = runs.delta_spectrum(analysis.run_gram, tensor, step, k)
    numbers = st.columns([1, 2])
    numbers[0].metric("σ₁²/‖ΔW‖²_F", f"{delta.attrs['energy_rank1']:.3f}",
                      help="Share of the update's squared Frobenius norm in its top singular direction.")
    numbers[0].metric("Stable rank ‖ΔW‖²_F/σ₁²", f"{delta.attrs['stable_rank']:.2f}")
    numbers[0].metric("‖ΔW‖_F", f"{delta.attrs['frobenius_sq'] ** 0.5:.4g}")
    with numbers[1]:
        figures.chart(charts.delta_spectrum_chart(delta), delta, "delta_spectrum")
figures.offer_report()
