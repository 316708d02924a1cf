"""Trajectory: one tensor's coefficient on its top direction, the fitted trend and where it leads."""

import streamlit as st

from relex_dashboard import charts, frames, state

analysis = state.page_setup()
fit = analysis.fit
run_gram = analysis.run_gram
st.title("Trajectory")
st.caption(f"c_k(t) = ⟨θ_t − θ_0, v_k⟩ on the window's top directions, fitted "
           f"{state.DEGREE_NAMES[analysis.degree]} on the real step axis (window {analysis.window_label}).")

names = run_gram.names
first_matrix = next((index for index, shape in enumerate(run_gram.shapes) if len(shape) == 2), 0)
controls = st.columns([4, 1, 2])
tensor = controls[0].selectbox("Tensor", names, index=first_matrix, key="trajectory.tensor")
component = controls[1].selectbox("Component k", list(range(1, analysis.rank + 1)), key="trajectory.component")
target_step = controls[2].number_input("Extrapolate to step", min_value=analysis.window[0],
                                       value=max(analysis.steps[-1], analysis.window[1]), step=1,
                                       key="trajectory.target")

coefficients = fit.coefficients_frame([tensor])
coefficients = coefficients[coefficients["component"] == component]
trend = frames.trend_frame(fit, tensor, int(target_step), component)
predicted = frames.predicted_coefficient(fit, tensor, int(target_step), component)
st.plotly_chart(charts.coefficient_chart(coefficients, trend, analysis.window, int(target_step), predicted, component),
                key="coefficients")
st.plotly_chart(charts.residual_chart(coefficients, analysis.window, component), key="residuals")

tensors = fit.tensors_frame()
left, right = st.columns(2)
with left:
    st.plotly_chart(charts.grid_heatmap(frames.layer_module_grid(tensors, "r2"), "R² of the c₁ fit in the window",
                                        "R²", zmin=0, zmax=1), key="r2_grid")
with right:
    st.plotly_chart(charts.histogram_chart(tensors, "energy_rank1", "Rank-1 energy across tensors",
                                           "rank-1 energy σ₁²/Σσ² (fraction)"), key="energy_histogram")
    st.plotly_chart(charts.histogram_chart(tensors, "r2", "R² of the c₁ fit across tensors", "R² (fraction)"),
                    key="r2_histogram")
