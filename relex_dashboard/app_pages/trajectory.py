"""Trajectory: one tensor's coefficient on its top directions, the fitted trend, where it leads, and its speed."""

import streamlit as st

from relex_core.errors import RelexError
from relex_core.options import parse_target_steps
from relex_dashboard import charts, frames, runs, state, teaching
from relex_dashboard.report import PageFigures

analysis = state.page_setup()
state.follow_tensor_click(on_trajectory=True)
figures = PageFigures("Trajectory", analysis.context)
fit = analysis.fit
run_gram = analysis.run_gram
st.title("Trajectory")
teaching.how_to_read("Trajectory")
st.caption(rf"$c_k(t) = \langle \theta_t - \theta_0, v_k \rangle$ on the window's top directions, fitted "
           f"{analysis.fit_name} on the real step axis (window {state.code(analysis.window_label)}).")

names = run_gram.names
first_matrix = next((name for name, shape in zip(names, run_gram.shapes) if len(shape) == 2), names[0])
controls = st.columns([4, 1, 2])
if st.session_state.get(state.TENSOR) not in names:
    st.session_state[state.TENSOR] = first_matrix
on_change = state.bind("trajectory.tensor", state.TENSOR)
tensor = controls[0].selectbox("Tensor", names, key="trajectory.tensor", on_change=on_change)
component = controls[1].selectbox("Component k", list(range(1, analysis.rank + 1)), key="trajectory.component")
target_key = state.follow_default("trajectory.target", str(analysis.steps[-1]))
target_text = controls[2].text_input("Extrapolate to step", key=target_key,
                                     help=f"Default: the run's last step. Twice it is {2 * analysis.steps[-1]}.")

target_step = None
with state.errors_shown():
    steps = parse_target_steps(target_text)
    if len(steps) != 1:
        raise RelexError("give one target step here (the Export page takes several)")
    if state.confirm_targets(steps, analysis.window, "trajectory.far"):
        target_step = steps[0]

coefficients = fit.coefficients_frame([tensor])
coefficients = coefficients[coefficients["component"] == component]
trend = frames.trend_frame(fit, tensor, target_step if target_step is not None else analysis.window[1], component)
predicted = frames.predicted_coefficient(fit, tensor, target_step, component) if target_step is not None else None
figures.chart(charts.coefficient_chart(coefficients, trend, analysis.window, target_step, predicted, component),
              coefficients, "coefficients")
figures.chart(charts.residual_chart(coefficients, analysis.window, component), coefficients, "residuals")

st.subheader("Speed")
st.caption(rf"Per interval between checkpoints: the tensor's distance travelled per step, and the change of "
           rf"$c_{{{component}}}$ per step. A line through the window is a good predictor only where "
           rf"$\Delta c_{{{component}}}/\Delta s$ stays constant.")
speed = frames.tensor_speed_frame(fit, tensor, component)
figures.chart(charts.tensor_speed_chart(speed, tensor, analysis.window, component), speed, "tensor_speed")

tensors = fit.tensors_frame()
left, right = st.columns(2)
with left:
    r2_grid = charts.grid_heatmap(frames.layer_module_grid(tensors, "r2"), "R² of the c₁ fit in the window", "R²")
    figures.chart(r2_grid, tensors[["tensor", "layer", "module", "r2"]], "r2_grid",
                  on_select=state.on_tensor_click("r2_grid"), selection_mode="points")
    exact = len(fit.window_steps) <= runs.min_window(analysis.fit_name)
    st.caption(("With this few window checkpoints the fit passes through every one: R² is 1 by construction. "
                if exact else "") + "Click a cell to show its tensor above.")
with right:
    figures.chart(charts.histogram_chart(tensors, "energy_rank1", "Rank-1 energy across tensors",
                                         "rank-1 energy σ₁²/Σσ²"), tensors[["tensor", "energy_rank1"]],
                  "energy_histogram")
    figures.chart(charts.histogram_chart(tensors, "r2", "R² of the c₁ fit across tensors", "R² of the c₁ fit"),
                  tensors[["tensor", "r2"]], "r2_histogram")
figures.offer_report()
