"""Plotly figures for the dashboard, from the frames of relex_core (they compute nothing).

Conventions: Okabe-Ito colours (safe for the common colour-vision deficiencies) for
categories, cividis for heatmaps, axis titles with units, hover text naming the tensor,
layer and step, log scales for singular values. The observation window is a shaded band.
"""

import pandas as pd
import plotly.graph_objects as go

from relex_core.selection import WindowSuggestion
from .frames import Grid

# Okabe & Ito (2008), "Color Universal Design": distinguishable with any common colour-vision deficiency.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
METHOD_COLORS = {"relex": "#0072B2", "last": "#E69F00", "linear": "#009E73"}
METHOD_NAMES = {"relex": "relex (fitted trend)", "last": "last observed checkpoint", "linear": "line through base and last"}
DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
HEATMAP_SCALE = "Cividis"
WINDOW_FILL = "rgba(86, 180, 233, 0.15)"  # Okabe-Ito sky blue, transparent

STEP_AXIS = "training step"
NORM_UNITS = "L2 norm, weight units"


LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0)
LEGEND_RIGHT = dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02)  # for many series


def _figure(title: str, x_title: str, y_title: str, *, log_y: bool = False, height: int = 380,
            legend: dict = LEGEND_BELOW) -> go.Figure:
    figure = go.Figure()
    figure.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=50, b=10), hovermode="closest",
                         legend=legend, colorway=OKABE_ITO)
    figure.update_xaxes(title_text=x_title)
    figure.update_yaxes(title_text=y_title, type="log" if log_y else "linear")
    return figure


def _shade_window(figure: go.Figure, window) -> None:
    figure.add_vrect(x0=window[0], x1=window[1], fillcolor=WINDOW_FILL, line_width=0, layer="below",
                     annotation_text="window", annotation_position="top left")


def _style(index: int) -> dict:
    """Colour and dash for the index-th category: colours first, dashes once the 8 colours run out."""
    return dict(color=OKABE_ITO[index % len(OKABE_ITO)], dash=DASHES[(index // len(OKABE_ITO)) % len(DASHES)])


# --------------------------------------------------------------------------- overview


def update_norm_chart(frame: pd.DataFrame, window) -> go.Figure:
    figure = _figure("Whole-model distance from the base", STEP_AXIS, f"‖θ_t − θ_0‖ ({NORM_UNITS})")
    figure.add_trace(go.Scatter(
        x=frame["step"], y=frame["update_norm"], mode="lines+markers", name="‖θ_t − θ_0‖",
        line=dict(color=OKABE_ITO[0]), customdata=frame[["relative_update"]],
        hovertemplate="step %{x}<br>‖θ_t − θ_0‖ = %{y:.4g}<br>relative to ‖θ_0‖: %{customdata[0]:.3g}<extra>all tensors</extra>"))
    _shade_window(figure, window)
    return figure


def metrics_chart(metrics: pd.DataFrame, names) -> go.Figure:
    figure = _figure("Training metrics (trainer_state.json log_history)", STEP_AXIS, "value (as logged)",
                     legend=LEGEND_RIGHT)
    for index, name in enumerate(names):
        rows = metrics[metrics["metric"] == name]
        figure.add_trace(go.Scatter(x=rows["step"], y=rows["value"], mode="lines+markers", name=name,
                                    line=_style(index),
                                    hovertemplate=f"{name}<br>step %{{x}}<br>value %{{y:.4g}}<extra></extra>"))
    return figure


# --------------------------------------------------------------------------- spectra


def tensor_spectrum_chart(spectrum: pd.DataFrame, tensor: str) -> go.Figure:
    rows = spectrum[spectrum["tensor"] == tensor]
    figure = _figure(f"Trajectory spectrum of {tensor}", "component k", f"σ_k ({NORM_UNITS})", log_y=True)
    figure.add_trace(go.Scatter(
        x=rows["index"], y=rows["sigma"], mode="lines+markers", name=tensor, line=dict(color=OKABE_ITO[0]),
        hovertemplate=f"tensor {tensor}<br>k = %{{x}}<br>σ_k = %{{y:.4g}}<extra></extra>"))
    figure.update_xaxes(dtick=1)
    return figure


def module_spectrum_chart(frame: pd.DataFrame, relative: bool) -> go.Figure:
    y_title = "median σ_k / σ_1 (fraction)" if relative else f"median σ_k ({NORM_UNITS})"
    figure = _figure("Trajectory spectra, median per module type", "component k", y_title, log_y=True,
                     legend=LEGEND_RIGHT)
    for index, (module, rows) in enumerate(frame.groupby("module", sort=False)):
        figure.add_trace(go.Scatter(
            x=rows["index"], y=rows["sigma"], mode="lines+markers", name=str(module), line=_style(index),
            customdata=rows[["tensors"]],
            hovertemplate=f"module {module}<br>k = %{{x}}<br>median %{{y:.4g}} over %{{customdata[0]}} tensors"
                          "<extra></extra>"))
    figure.update_xaxes(dtick=1)
    return figure


def grid_heatmap(grid: Grid, title: str, value_name: str, zmin=None, zmax=None) -> go.Figure:
    figure = _figure(title, "module type", "layer", height=max(360, 160 + 36 * len(grid.values)))
    figure.add_trace(go.Heatmap(
        z=grid.values.to_numpy(dtype=float), x=list(grid.values.columns), y=list(grid.values.index),
        customdata=grid.tensors.to_numpy(dtype=object), colorscale=HEATMAP_SCALE, zmin=zmin, zmax=zmax,
        colorbar=dict(title=dict(text=value_name)), name=value_name,
        hovertemplate=f"tensor %{{customdata}}<br>layer %{{y}}, module %{{x}}<br>{value_name} = %{{z:.4f}}"
                      "<extra></extra>"))
    figure.update_yaxes(autorange="reversed", dtick=1)
    figure.update_xaxes(tickangle=-35)
    return figure


def delta_spectrum_chart(frame: pd.DataFrame) -> go.Figure:
    tensor, step = frame.attrs["tensor"], frame.attrs["step"]
    figure = _figure(f"Singular values of ΔW = θ_{step} − θ_0 for {tensor}", "singular value index j",
                     f"σ_j(ΔW) ({NORM_UNITS})", log_y=True)
    figure.add_trace(go.Bar(
        x=frame["index"], y=frame["sigma"], name="σ_j(ΔW)", marker_color=OKABE_ITO[0],
        customdata=frame[["energy_share", "cumulative_share"]],
        hovertemplate=f"tensor {tensor}, step {step}<br>j = %{{x}}<br>σ_j = %{{y:.4g}}<br>"
                      "σ_j²/‖ΔW‖²_F = %{customdata[0]:.3f} (cumulative %{customdata[1]:.3f})<extra></extra>"))
    return figure


# --------------------------------------------------------------------------- trajectory


def coefficient_chart(coefficients: pd.DataFrame, trend: pd.DataFrame, window, target_step: int,
                      predicted: float, component: int = 1) -> go.Figure:
    tensor = coefficients["tensor"].iloc[0]
    figure = _figure(f"Coefficient c_{component} of {tensor}", STEP_AXIS,
                     f"c_{component} = ⟨θ_t − θ_0, v_{component}⟩ ({NORM_UNITS})")
    for in_window, name, symbol in ((True, "observed (in window)", "circle"),
                                    (False, "observed (held out)", "circle-open")):
        rows = coefficients[coefficients["in_window"] == in_window]
        figure.add_trace(go.Scatter(
            x=rows["step"], y=rows["coefficient"], mode="markers", name=name,
            marker=dict(color=OKABE_ITO[0], symbol=symbol, size=8),
            hovertemplate=f"tensor {tensor}<br>step %{{x}}<br>c_{component} = %{{y:.4g}}<extra>{name}</extra>"))
    for part, name, color, dash in (("window", "fit", OKABE_ITO[5], "solid"),
                                    ("extrapolation", "extrapolation", OKABE_ITO[5], "dash")):
        rows = trend[trend["part"] == part]
        if len(rows):
            figure.add_trace(go.Scatter(
                x=rows["step"], y=rows["fitted"], mode="lines", name=name, line=dict(color=color, dash=dash),
                hovertemplate=f"tensor {tensor}<br>step %{{x:.0f}}<br>{name} %{{y:.4g}}<extra></extra>"))
    figure.add_trace(go.Scatter(
        x=[target_step], y=[predicted], mode="markers", name=f"prediction at step {target_step}",
        marker=dict(color=OKABE_ITO[5], symbol="star", size=14),
        hovertemplate=f"tensor {tensor}<br>target step %{{x}}<br>predicted c_{component} = %{{y:.4g}}<extra></extra>"))
    _shade_window(figure, window)
    return figure


def residual_chart(coefficients: pd.DataFrame, window, component: int = 1) -> go.Figure:
    tensor = coefficients["tensor"].iloc[0]
    figure = _figure(f"Residuals of the fit for {tensor}", STEP_AXIS,
                     f"c_{component} − fitted ({NORM_UNITS})", height=300)
    for in_window, name, color in ((True, "in window", OKABE_ITO[0]), (False, "held out", OKABE_ITO[1])):
        rows = coefficients[coefficients["in_window"] == in_window]
        figure.add_trace(go.Bar(x=rows["step"], y=rows["residual"], name=name, marker_color=color,
                                hovertemplate=f"tensor {tensor}<br>step %{{x}}<br>residual %{{y:.3g}}<extra>{name}</extra>"))
    _shade_window(figure, window)
    return figure


def histogram_chart(tensors: pd.DataFrame, column: str, title: str, x_title: str) -> go.Figure:
    figure = _figure(title, x_title, "tensors (count)", height=300)
    figure.add_trace(go.Histogram(x=tensors[column], nbinsx=30, name=column, marker_color=OKABE_ITO[0],
                                  hovertemplate=f"{x_title} %{{x}}<br>%{{y}} tensors<extra></extra>"))
    return figure


# --------------------------------------------------------------------------- window


def backtest_chart(backtests: pd.DataFrame, column: str, y_title: str, title: str) -> go.Figure:
    figure = _figure(title, "target step (held out, after the window)", y_title)
    for method, rows in backtests.groupby("method", sort=False):
        figure.add_trace(go.Scatter(
            x=rows["target_step"], y=rows[column], mode="lines+markers", name=METHOD_NAMES[method],
            line=dict(color=METHOD_COLORS[method]),
            hovertemplate=f"{method}<br>target step %{{x}}<br>{column} %{{y:.4g}}<extra>all tensors</extra>"))
    return figure


def window_end_heatmap(backtests: pd.DataFrame, start: int, method: str = "relex") -> go.Figure:
    table = (backtests[backtests["method"] == method]
             .pivot(index="window_end", columns="target_step", values="rel_error"))
    figure = _figure(f"Held-out relative error of {method}, windows {start}:end", "target step",
                     "window end (step)", height=420)
    figure.add_trace(go.Heatmap(
        z=table.to_numpy(dtype=float), x=list(table.columns), y=list(table.index), colorscale=HEATMAP_SCALE,
        colorbar=dict(title=dict(text="rel. error")), name="rel_error",
        hovertemplate=f"window {start}:%{{y}}<br>target step %{{x}}<br>‖pred − Δ‖/‖Δ‖ = %{{z:.4f}}<extra></extra>"))
    return figure


def stability_chart(stability: pd.DataFrame, reference_label: str) -> go.Figure:
    figure = _figure(f"Stability of the top direction v₁ against window {reference_label}", "window end (step)",
                     "|⟨v₁(window), v₁(reference)⟩| (cosine)")
    for index, (column, name) in enumerate((("overlap_model", "whole model (σ-weighted)"),
                                            ("overlap_median", "median tensor"), ("overlap_min", "worst tensor"))):
        figure.add_trace(go.Scatter(
            x=stability["window_end"], y=stability[column], mode="lines+markers", name=name, line=_style(index),
            hovertemplate=f"{name}<br>window end %{{x}}<br>overlap %{{y:.4f}}<extra></extra>"))
    return figure


def suggestion_chart(suggestion: WindowSuggestion) -> go.Figure:
    scores = suggestion.scores
    start = suggestion.window[0]
    first, last = suggestion.holdout
    figure = _figure(f"Mean held-out error on steps {first}–{last} by window end", "window end (step)",
                     "mean ‖pred − Δ‖/‖Δ‖ (relative error)", height=320)
    figure.add_trace(go.Scatter(
        x=scores["window_end"], y=scores["mean_rel_error"], mode="lines+markers", name="candidate windows",
        line=dict(color=OKABE_ITO[0]),
        hovertemplate=f"window {start}:%{{x}}<br>mean rel. error %{{y:.4f}}<extra></extra>"))
    figure.add_hline(y=suggestion.best_score * (1 + suggestion.tolerance), line_dash="dot", line_color=OKABE_ITO[7],
                     annotation_text=f"best + {suggestion.tolerance:.0%}")
    figure.add_trace(go.Scatter(
        x=[suggestion.window[1]], y=[suggestion.score], mode="markers", name="suggested",
        marker=dict(color=OKABE_ITO[5], symbol="star", size=16),
        hovertemplate=f"suggested window {start}:%{{x}}<br>mean rel. error %{{y:.4f}}<extra></extra>"))
    return figure


# --------------------------------------------------------------------------- export and evaluation


def weights_chart(weights: pd.DataFrame, target_step: int) -> go.Figure:
    figure = _figure(f"How much each window checkpoint counts in θ̂({target_step})", "window checkpoint (step)",
                     "weight w_t in θ_0 + Σ w_t (θ_t − θ_0)", height=340)
    figure.add_trace(go.Bar(
        x=weights["step"], y=weights["weight_model"], name="size-weighted mean over tensors",
        marker_color=OKABE_ITO[0],
        error_y=dict(type="data", symmetric=False, array=weights["weight_max"] - weights["weight_model"],
                     arrayminus=weights["weight_model"] - weights["weight_min"], color=OKABE_ITO[7]),
        customdata=weights[["weight_median", "weight_min", "weight_max"]],
        hovertemplate="checkpoint step %{x}<br>mean weight %{y:.4g}<br>median %{customdata[0]:.4g}, "
                      "range %{customdata[1]:.4g} … %{customdata[2]:.4g} over tensors<extra></extra>"))
    return figure


def evaluation_chart(metrics: pd.DataFrame, reward_names, scores: pd.DataFrame, window) -> go.Figure:
    label = f"{window[0]}:{window[1]}"
    figure = _figure(f"RL actual vs RELEX from window {label}", STEP_AXIS, "accuracy on held-out problems (fraction)",
                     height=440)
    for index, name in enumerate(reward_names):
        rows = metrics[metrics["metric"] == name]
        held_out = index == 0  # reward_names() puts the held-out reward, the verifier's own score, first
        figure.add_trace(go.Scatter(x=rows["step"], y=rows["value"], mode="lines", name=f"RL actual: {name}",
                                    line=dict(color=OKABE_ITO[7] if held_out else OKABE_ITO[4],
                                              dash="solid" if held_out else "dot"),
                                    hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.3f}}<extra>RL actual</extra>"))
    kinds = (("actual", "verifier on the real checkpoint", OKABE_ITO[1], "circle"),
             ("extrapolated", f"RELEX from window {label}", OKABE_ITO[0], "star"),
             ("reconstructed", "rank-k reconstruction", OKABE_ITO[2], "diamond"))
    for kind, name, color, symbol in kinds:
        rows = scores[scores["kind"] == kind]
        if len(rows):
            figure.add_trace(go.Scatter(
                x=rows["step"], y=rows["accuracy"], mode="markers", name=name,
                marker=dict(color=color, symbol=symbol, size=12, line=dict(width=1, color="white")),
                hovertemplate=f"{name}<br>step %{{x}}<br>accuracy %{{y:.3f}}<extra></extra>"))
    _shade_window(figure, window)
    return figure

