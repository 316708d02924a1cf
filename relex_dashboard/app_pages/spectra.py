"""Spectra: how many directions the trajectory uses, per tensor and per module type, and per update matrix."""

import streamlit as st

from relex_dashboard import charts, frames, state

analysis = state.page_setup()
fit = analysis.fit
st.title("Spectra")
st.caption(f"Window {analysis.window_label}: singular values of the trajectory matrix [θ_t − θ_0] over the "
           "window's checkpoints. A fast drop after σ₁ means the run moves along one direction.")
spectrum = state.spectrum(analysis)
tensors = fit.tensors_frame()

controls = st.columns([2, 3])
view = controls[0].radio("Spectrum of", ["median per module type", "one tensor"], horizontal=True,
                         key="spectra.view")
if view == "one tensor":
    tensor = controls[1].selectbox("Tensor", analysis.run_gram.names, key="spectra.tensor")
    st.plotly_chart(charts.tensor_spectrum_chart(spectrum, tensor), key="spectrum")
else:
    relative = controls[1].toggle("Divide by σ₁", value=True, key="spectra.relative",
                                  help="Compare module types of different sizes by shape.")
    st.plotly_chart(charts.module_spectrum_chart(frames.module_spectrum_frame(spectrum, relative), relative),
                    key="spectrum")

left, right = st.columns([3, 2])
grid = frames.layer_module_grid(tensors, "energy_rank1")
left.plotly_chart(charts.grid_heatmap(grid, "Rank-1 energy σ₁²/Σσ² of each weight matrix", "rank-1 energy",
                                      zmin=0, zmax=1), key="energy_grid")
outside = tensors[tensors["layer"].isna()][["tensor", "energy_rank1", "r2"]]
if len(outside):
    right.caption("Tensors outside the layers")
    right.dataframe(outside, hide_index=True)

st.subheader("One update matrix ΔW = θ_t − θ_0")
st.caption("Top singular values of a single checkpoint's update (randomized SVD). ‖ΔW‖²_F comes from the Gram, "
           "so σ₁²/‖ΔW‖²_F and the stable rank ‖ΔW‖²_F/σ₁² need only σ₁.")
matrices = [name for name, shape in zip(analysis.run_gram.names, analysis.run_gram.shapes) if len(shape) == 2]
controls = st.columns([3, 2, 1])
tensor = controls[0].selectbox("2-D tensor", matrices, key="spectra.matrix")
step = controls[1].select_slider("Checkpoint step", options=analysis.steps, value=analysis.window[1],
                                 key="spectra.step")
k = controls[2].number_input("Top k", min_value=1, max_value=64, value=16, key="spectra.k")


with state.errors_shown():
    delta = state.delta_spectrum(analysis.run_gram, tensor, step, k)
    figures = st.columns([1, 2])
    figures[0].metric("σ₁²/‖ΔW‖²_F", f"{delta.attrs['energy_rank1']:.3f}",
                      help="Share of the update's squared Frobenius norm in its top singular direction.")
    figures[0].metric("Stable rank ‖ΔW‖²_F/σ₁²", f"{delta.attrs['stable_rank']:.2f}")
    figures[0].metric("‖ΔW‖_F", f"{delta.attrs['frobenius_sq'] ** 0.5:.4g}")
    with figures[1]:
        st.plotly_chart(charts.delta_spectrum_chart(delta), key="delta_spectrum")
