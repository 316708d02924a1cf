"""Plotly figures for the dashboard, from the frames of relex_core (they compute nothing).

Conventions: Okabe-Ito colours (safe for the common colour-vision deficiencies) for
categories, cividis for heatmaps with a colour range fitted to the data, axis titles that
name the quantity, hover text naming the tensor, layer and step, log scales drawn as points
and lines (bars on a log axis exaggerate a flat spectrum). The observation window is a shaded
band. Plotly draws no LaTeX without MathJax, which Streamlit does not load, so titles use
Unicode (σ₁, c₁); the pages' captions carry the LaTeX.
"""

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from relex_core.selection import WindowSuggestion

from .frames import DISCARDED_PARTS, Grid

# Okabe & Ito (2008), "Color Universal Design": distinguishable with any common colour-vision deficiency.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
METHOD_COLORS = {"relex": "#0072B2", "last": "#E69F00", "linear": "#009E73"}
METHOD_NAMES = {"relex": "relex (fitted trend)", "last": "last observed checkpoint",
                "linear": "line through base and last"}
DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
HEATMAP_SCALE = "Cividis"
WINDOW_FILL = "rgba(86, 180, 233, 0.15)"  # Okabe-Ito sky blue, transparent

STEP_AXIS = "training step"
LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.25, xanchor="left", x=0.0)
LEGEND_RIGHT = dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02)  # for many series
SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
# Plotly draws <sub> and <sup>: the quantities' names as written in the paper.
THETA_T, THETA_0 = "θ<sub>t</sub>", "θ<sub>0</sub>"
DISTANCE = f"‖{THETA_T} − {THETA_0}‖"


def sub(number: int) -> str:
    """A number as Unicode subscript digits: sub(12) == '₁₂'."""
    return str(number).translate(SUBSCRIPTS)


def _figure(title: str, x_title: str, y_title: str, *, log_y: bool = False, height: int = 380,
            legend: dict = LEGEND_BELOW) -> go.Figure:
    figure = go.Figure()
    figure.update_layout(title=dict(text=title, x=0.0, xanchor="left"), height=height,
                         margin=dict(l=10, r=10, t=56, b=10), hovermode="closest", legend=legend,
                         colorway=OKABE_ITO)
    figure.update_xaxes(title_text=x_title, automargin=True)
    # Powers of ten, not SI prefixes: "µ" beside a weight-norm axis reads as a unit.
    figure.update_yaxes(title_text=y_title, type="log" if log_y else "linear", automargin=True,
                        exponentformat="power")
    return figure


def label_log_axis(figure: go.Figure) -> go.Figure:
    """Tick labels at 1, 2 and 5 times the powers of ten the data spans, written out (0.02, not '2')."""
    values = np.concatenate([np.asarray(trace.y, dtype=np.float64) for trace in figure.data if trace.y is not None]
                            or [np.ones(1)])
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        return figure
    low, high = np.floor(np.log10(values.min())), np.ceil(np.log10(values.max()))
    ticks = [mantissa * 10.0**power for power in np.arange(low, high + 1) for mantissa in (1, 2, 5)]
    ticks = [tick for tick in ticks if values.min() / 2 <= tick <= values.max() * 2]
    figure.update_yaxes(tickvals=ticks, ticktext=[f"{tick:.3g}" for tick in ticks])
    return figure


def _shade_window(figure: go.Figure, window, above: bool = False) -> None:
    """The observation window as a band; above the traces for bar charts, whose bars would hide it."""
    figure.add_vrect(x0=window[0], x1=window[1], fillcolor=WINDOW_FILL, line_width=0,
                     layer="above" if above else "below", annotation_text="window", annotation_position="top left")


def _style(index: int) -> dict:
    """Colour and dash for the index-th category: colours first, dashes once the 8 colours run out."""
    return dict(color=OKABE_ITO[index % len(OKABE_ITO)], dash=DASHES[(index // len(OKABE_ITO)) % len(DASHES)])


def color_range(values, robust: bool = False) -> tuple[float, float]:
    """The colour range of a heatmap: the data's min and max, or its 5th–95th percentiles when `robust`
    (so that a few extreme cells, such as two-checkpoint windows, do not wash out the rest)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return 0.0, 1.0
    low, high = (np.percentile(finite, [5, 95]) if robust else (finite.min(), finite.max()))
    if high <= low:  # one value everywhere (R² = 1 of a two-point window): a range just around it
        margin = 1e-9 * max(1.0, abs(low))
        low, high = low - margin, high + margin
    return float(low), float(high)


# --------------------------------------------------------------------------- overview


def update_norm_chart(frame: pd.DataFrame, window) -> go.Figure:
    figure = _figure("Whole-model distance from the base", STEP_AXIS, f"distance from the base {DISTANCE}")
    figure.add_trace(go.Scatter(
        x=frame["step"], y=frame["update_norm"], mode="lines+markers", name=DISTANCE,
        line=dict(color=OKABE_ITO[0]), customdata=frame[["relative_update"]],
        hovertemplate=f"step %{{x}}<br>{DISTANCE} = %{{y:.4g}}<br>relative to ‖{THETA_0}‖: %{{customdata[0]:.3g}}"
                      "<extra>all tensors</extra>"))
    _shade_window(figure, window)
    return figure


SPEED = "‖θ<sub>t</sub> − θ<sub>t−1</sub>‖ / Δstep"


def _interval_bars(frame: pd.DataFrame, column: str, name: str, color: str, width_share: float = 1.0,
                   legend: str = "") -> go.Bar:
    """One bar per interval between checkpoints, spanning it: a speed holds over the whole interval."""
    widths = (frame["step"] - frame["previous_step"]).to_numpy(dtype=float)
    return go.Bar(x=frame["previous_step"] + widths / 2, y=frame[column], width=widths * width_share, name=name,
                  marker=dict(color=color, line=dict(width=0.5, color="white")),
                  customdata=frame[["previous_step", "step"]],
                  hovertemplate=f"steps %{{customdata[0]}}–%{{customdata[1]}}<br>{name} = %{{y:.4g}}"
                                f"<extra>{legend}</extra>")


def speed_chart(frame: pd.DataFrame, window) -> go.Figure:
    figure = _figure("Whole-model speed between consecutive checkpoints", STEP_AXIS, f"speed {SPEED}")
    figure.add_trace(_interval_bars(frame, "speed", SPEED, OKABE_ITO[0], legend="all tensors"))
    figure.update_yaxes(rangemode="tozero")
    _shade_window(figure, window, above=True)
    return figure


def metrics_chart(metrics: pd.DataFrame, names, title: str = "Training metrics (trainer_state.json log_history)",
                  y_title: str = "value (as logged)") -> go.Figure:
    figure = _figure(title, STEP_AXIS, y_title, legend=LEGEND_RIGHT)
    for index, name in enumerate(names):
        rows = metrics[metrics["metric"] == name]
        figure.add_trace(go.Scatter(x=rows["step"], y=rows["value"], mode="lines+markers", name=name,
                                    line=_style(index),
                                    hovertemplate=f"{name}<br>step %{{x}}<br>value %{{y:.4g}}<extra></extra>"))
    return figure


# --------------------------------------------------------------------------- spectra


def tensor_spectrum_chart(spectrum: pd.DataFrame, tensor: str) -> go.Figure:
    rows = spectrum[spectrum["tensor"] == tensor]
    figure = _figure(f"Trajectory spectrum of {tensor}", "component k", "singular value σ<sub>k</sub>", log_y=True)
    figure.add_trace(go.Scatter(
        x=rows["index"], y=rows["sigma"], mode="lines+markers", name=tensor, line=dict(color=OKABE_ITO[0]),
        hovertemplate=f"tensor {tensor}<br>k = %{{x}}<br>σ<sub>k</sub> = %{{y:.4g}}<extra></extra>"))
    figure.update_xaxes(dtick=1)
    label_log_axis(figure)
    return figure


def module_spectrum_chart(frame: pd.DataFrame, relative: bool) -> go.Figure:
    y_title = "median σ<sub>k</sub> / σ<sub>1</sub>" if relative else "median singular value σ<sub>k</sub>"
    figure = _figure("Trajectory spectra, median per module type", "component k", y_title, log_y=True,
                     legend=LEGEND_RIGHT)
    for index, (module, rows) in enumerate(frame.groupby("module", sort=False)):
        figure.add_trace(go.Scatter(
            x=rows["index"], y=rows["sigma"], mode="lines+markers", name=str(module), line=_style(index),
            customdata=rows[["tensors"]],
            hovertemplate=f"module {module}<br>k = %{{x}}<br>median %{{y:.4g}} over %{{customdata[0]}} tensors"
                          "<extra></extra>"))
    figure.update_xaxes(dtick=1)
    label_log_axis(figure)
    return figure


def changed_share_chart(frame: pd.DataFrame, window) -> go.Figure:
    """Per checkpoint, the share of elements stored differently from the base, one line per stored dtype
    (`analysis.changed_frame(run_gram, "dtype")`): far below 1 means most steps vanished in rounding."""
    figure = _figure("Elements whose stored value differs from the base", STEP_AXIS,
                     "share of elements changed", legend=LEGEND_BELOW)
    for index, (dtype, rows) in enumerate(frame.groupby("dtype", sort=True)):
        figure.add_trace(go.Scatter(
            x=rows["step"], y=rows["changed_share"], mode="lines+markers", name=f"stored as {dtype}",
            line=_style(index), customdata=rows[["changed", "numel"]],
            hovertemplate=f"{dtype}<br>step %{{x}}<br>%{{y:.2%}} changed (%{{customdata[0]:,}} of "
                          "%{customdata[1]:,} elements)<extra></extra>"))
    figure.update_yaxes(range=[0, 1.02], tickformat=".0%")
    _shade_window(figure, window)
    return figure


def grid_heatmap(grid: Grid, title: str, value_name: str) -> go.Figure:
    """Layer × module heatmap, colours fitted to the data (5th–95th percentiles, so one outlier does not
    flatten the rest), and clickable: a click selects the cell's tensor.

    Plotly cannot select heatmap cells, so an invisible marker sits on each cell's centre and
    carries the hover text and the selection (hoverdistance −1: the nearest centre always wins).
    """
    values = grid.values.to_numpy(dtype=float)
    columns, layers = list(grid.values.columns), list(grid.values.index)
    low, high = color_range(values, robust=True)
    figure = _figure(title, "module type", "layer", height=max(380, 190 + 34 * len(layers)))
    figure.add_trace(go.Heatmap(
        z=values, x=columns, y=layers, colorscale=HEATMAP_SCALE, zmin=low, zmax=high, hoverinfo="skip",
        colorbar=dict(title=dict(text=f"{value_name}<br>(5–95% range)", side="right")), name=value_name))
    cells = [(column, layer, values[row, position], grid.tensors.iloc[row, position])
             for row, layer in enumerate(layers) for position, column in enumerate(columns)
             if isinstance(grid.tensors.iloc[row, position], str)]
    figure.add_trace(go.Scatter(
        x=[cell[0] for cell in cells], y=[cell[1] for cell in cells], mode="markers", name="tensors",
        customdata=[cell[3] for cell in cells], text=[f"{cell[2]:.4f}" for cell in cells], showlegend=False,
        marker=dict(size=18, symbol="square-open", color="rgba(0,0,0,0)", line=dict(width=0)),
        selected=dict(marker=dict(color="rgba(0,0,0,0)")), unselected=dict(marker=dict(opacity=0)),
        hovertemplate=f"tensor %{{customdata}}<br>layer %{{y}}, module %{{x}}<br>{value_name} = %{{text}}"
                      "<br>click: open on the Trajectory page<extra></extra>"))
    figure.update_layout(hoverdistance=-1, clickmode="event+select", dragmode=False)
    figure.update_yaxes(autorange="reversed", dtick=1)
    figure.update_xaxes(tickangle=-45)
    return figure


def delta_spectrum_chart(frame: pd.DataFrame) -> go.Figure:
    tensor, step = frame.attrs["tensor"], frame.attrs["step"]
    figure = _figure(f"Singular values of ΔW = θ<sub>{step}</sub> − {THETA_0} for {tensor}",
                     "singular value index j", "singular value σ<sub>j</sub>(ΔW)", log_y=True)
    figure.add_trace(go.Scatter(
        x=frame["index"], y=frame["sigma"], mode="lines+markers", name="σ<sub>j</sub>(ΔW)",
        line=dict(color=OKABE_ITO[0]),
        customdata=frame[["energy_share", "cumulative_share"]],
        hovertemplate=f"tensor {tensor}, step {step}<br>j = %{{x}}<br>σ<sub>j</sub> = %{{y:.4g}}<br>"
                      "σ<sub>j</sub>²/‖ΔW‖²<sub>F</sub> = %{customdata[0]:.3f} "
                      "(cumulative %{customdata[1]:.3f})<extra></extra>"))
    figure.update_xaxes(dtick=1 if len(frame) <= 20 else None)
    label_log_axis(figure)
    return figure


# --------------------------------------------------------------------------- trajectory

# Checkpoints by where they lie against the window: the fit sees only the first kind.
PLACES = (("in", "in the window (fitted)", "circle"), ("before", "before the window", "x-thin-open"),
          ("after", "after the window (held out)", "circle-open"))


def place(steps, window) -> np.ndarray:
    """'in', 'before' or 'after' the window for each step."""
    steps = np.asarray(steps)
    return np.where(steps < window[0], "before", np.where(steps > window[1], "after", "in"))


def coefficient_chart(coefficients: pd.DataFrame, trend: pd.DataFrame, window, target_step: int | None,
                      predicted: float | None, component: int = 1) -> go.Figure:
    tensor = coefficients["tensor"].iloc[0]
    c = f"c{sub(component)}"
    figure = _figure(f"Coefficient {c} of {tensor}", STEP_AXIS,
                     f"coefficient {c} = ⟨{THETA_T} − {THETA_0}, v{sub(component)}⟩")
    where = place(coefficients["step"], window)
    for key, name, symbol in PLACES:
        rows = coefficients[where == key]
        if len(rows):
            figure.add_trace(go.Scatter(
                x=rows["step"], y=rows["coefficient"], mode="markers", name=name,
                marker=dict(color=OKABE_ITO[0], symbol=symbol, size=8, line=dict(width=1.5, color=OKABE_ITO[0])),
                hovertemplate=f"tensor {tensor}<br>step %{{x}}<br>{c} = %{{y:.4g}}<extra>{name}</extra>"))
    for part, name, dash in (("window", "fit", "solid"), ("extrapolation", "extrapolation", "dash")):
        rows = trend[trend["part"] == part]
        if len(rows):
            figure.add_trace(go.Scatter(
                x=rows["step"], y=rows["fitted"], mode="lines", name=name, line=dict(color=OKABE_ITO[5], dash=dash),
                hovertemplate=f"tensor {tensor}<br>step %{{x:.0f}}<br>{name} %{{y:.4g}}<extra></extra>"))
    if target_step is not None:
        inside = window[0] <= target_step <= window[1]
        name = (f"fitted value at step {target_step} (inside the window)" if inside
                else f"prediction at step {target_step}")
        figure.add_trace(go.Scatter(
            x=[target_step], y=[predicted], mode="markers", name=name,
            marker=dict(color=OKABE_ITO[5], symbol="star", size=14),
            hovertemplate=f"tensor {tensor}<br>step %{{x}}<br>{name}: {c} = %{{y:.4g}}<extra></extra>"))
    _shade_window(figure, window)
    return figure


def residual_chart(coefficients: pd.DataFrame, window, component: int = 1) -> go.Figure:
    tensor = coefficients["tensor"].iloc[0]
    c = f"c{sub(component)}"
    figure = _figure(f"Residuals of the fit for {tensor}", STEP_AXIS, f"residual {c} − fit", height=320)
    where = place(coefficients["step"], window)
    for (key, name, _), color in zip(PLACES, (OKABE_ITO[0], OKABE_ITO[7], OKABE_ITO[1])):
        rows = coefficients[where == key]
        if len(rows):
            figure.add_trace(go.Bar(x=rows["step"], y=rows["residual"], name=name, marker_color=color,
                                    hovertemplate=f"tensor {tensor}<br>step %{{x}}<br>residual %{{y:.3g}}"
                                                  f"<extra>{name}</extra>"))
    _shade_window(figure, window, above=True)
    return figure


def tensor_speed_chart(frame: pd.DataFrame, tensor: str, window, component: int = 1) -> go.Figure:
    c, v = f"c{sub(component)}", f"v{sub(component)}"
    figure = _figure(f"Speed of {tensor}", STEP_AXIS, "per training step", height=360)
    figure.add_trace(_interval_bars(frame, "speed", f"{SPEED} (total)", "#BBBBBB", legend=tensor))
    figure.add_trace(_interval_bars(frame, "increment", f"Δ{c} / Δstep (along {v})", OKABE_ITO[5], 0.5, tensor))
    figure.update_layout(barmode="overlay")
    figure.add_hline(y=0, line_width=1, line_color="#999999")
    _shade_window(figure, window, above=True)
    return figure


def histogram_chart(tensors: pd.DataFrame, column: str, title: str, x_title: str) -> go.Figure:
    figure = _figure(title, x_title, "tensors (count)", height=320)
    figure.add_trace(go.Histogram(x=tensors[column], nbinsx=30, name=column, marker_color=OKABE_ITO[0],
                                  hovertemplate=f"{x_title} %{{x}}<br>%{{y}} tensors<extra></extra>"))
    return figure


# --------------------------------------------------------------------------- window


def backtest_chart(backtests: pd.DataFrame, column: str, y_title: str, title: str) -> go.Figure:
    figure = _figure(title, "target step (after the window, held out)", y_title)
    for method, rows in backtests.groupby("method", sort=False):
        figure.add_trace(go.Scatter(
            x=rows["target_step"], y=rows[column], mode="lines+markers", name=METHOD_NAMES[method],
            line=dict(color=METHOD_COLORS[method]),
            hovertemplate=f"{method}<br>target step %{{x}}<br>{column} %{{y:.4g}}<extra>all tensors</extra>"))
    return figure


def discarded_chart(frame: pd.DataFrame, window, group: str) -> go.Figure:
    """`frames.discarded_frame`: relex's error and what the projection drops, `last`'s error and its part
    outside the subspace, each ÷ ‖Δ_i‖, per checkpoint; the window shaded."""
    figure = _figure(f"What the rank-k projection discards ({group})", STEP_AXIS, "norm ÷ ‖Δ<sub>i</sub>‖",
                     legend=LEGEND_BELOW)
    styles = {"discarded": dict(color=METHOD_COLORS["relex"], dash="dot"),
              "relex_error": dict(color=METHOD_COLORS["relex"]),
              "last_error": dict(color=METHOD_COLORS["last"]),
              "last_error_outside": dict(color=METHOD_COLORS["last"], dash="dot")}
    for column, (_, name) in DISCARDED_PARTS.items():
        figure.add_trace(go.Scatter(
            x=frame["step"], y=frame[column], mode="lines+markers", name=name, line=styles[column],
            customdata=frame[["part"]],
            hovertemplate=f"{name}<br>step %{{x}} (%{{customdata[0]}} the window)<br>%{{y:.4g}} of ‖Δ‖"
                          f"<extra>{group}</extra>"))
    figure.update_yaxes(rangemode="tozero")
    _shade_window(figure, window)
    return figure


def window_end_heatmap(backtests: pd.DataFrame, start: int, method: str = "relex") -> go.Figure:
    table = (backtests[backtests["method"] == method]
             .pivot(index="window_end", columns="target_step", values="rel_error"))
    values = table.to_numpy(dtype=float)
    low, high = color_range(values, robust=True)
    figure = _figure(f"Held-out relative error of {method}, windows {start}:end", "target step",
                     "window end (step)", height=440)
    figure.add_trace(go.Heatmap(
        z=values, x=list(table.columns), y=list(table.index), colorscale=HEATMAP_SCALE, zmin=low, zmax=high,
        colorbar=dict(title=dict(text="rel. error<br>(5–95% range)", side="right")), name="rel_error",
        hovertemplate=f"window {start}:%{{y}}<br>target step %{{x}}<br>‖pred − Δ‖/‖Δ‖ = %{{z:.4f}}"
                      "<extra></extra>"))
    return figure


def stability_chart(stability: pd.DataFrame, reference_label: str, rank: int = 1) -> go.Figure:
    """|⟨v₁, v₁'⟩| of growing windows against a reference; at rank k > 1 also the median cosines of the
    principal angles between the rank-k subspaces (`stability_frame(rank=k)`)."""
    figure = _figure(f"Stability of the top direction v₁ against window {reference_label}", "window end (step)",
                     "overlap |⟨v₁(window), v₁(reference)⟩|" if rank == 1 else "overlap, cosine of principal angle",
                     legend=LEGEND_BELOW)
    lines = [("overlap_model", "whole model (σ-weighted)"), ("overlap_median", "median tensor"),
             ("overlap_min", "worst tensor")]
    lines += [(f"principal_cosine_{angle}", f"cos θ{sub(angle)}, rank-{rank} subspaces (median tensor)")
              for angle in range(2, rank + 1)]
    for index, (column, name) in enumerate(lines):
        figure.add_trace(go.Scatter(
            x=stability["window_end"], y=stability[column], mode="lines+markers", name=name, line=_style(index),
            hovertemplate=f"{name}<br>window end %{{x}}<br>%{{y:.4f}}<extra></extra>"))
    return figure


def suggestion_chart(suggestion: WindowSuggestion) -> go.Figure:
    scores = suggestion.scores
    start = suggestion.window[0]
    first, last = suggestion.holdout
    figure = _figure(f"Mean held-out error on steps {first}–{last} by window end", "window end (step)",
                     "mean relative error ‖pred − Δ‖/‖Δ‖", height=340)
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
                     f"weight w<sub>t</sub> in {THETA_0} + Σ w<sub>t</sub> ({THETA_T} − {THETA_0})", height=360)
    figure.add_trace(go.Bar(
        x=weights["step"], y=weights["weight_model"], name="size-weighted mean over tensors",
        marker_color=OKABE_ITO[0],
        error_y=dict(type="data", symmetric=False, array=weights["weight_max"] - weights["weight_model"],
                     arrayminus=weights["weight_model"] - weights["weight_min"], color=OKABE_ITO[7]),
        customdata=weights[["weight_median", "weight_min", "weight_max"]],
        hovertemplate="checkpoint step %{x}<br>mean weight %{y:.4g}<br>median %{customdata[0]:.4g}, "
                      "range %{customdata[1]:.4g} … %{customdata[2]:.4g} over tensors<extra></extra>"))
    figure.update_xaxes(tickvals=list(weights["step"]) if len(weights) <= 24 else None)
    return figure


SCORE_KINDS = {"relex": ("relex", "star", "solid"), "linear": ("line through base and last", "diamond", "dash"),
               "reconstruct": ("rank-k reconstruction", "square", "dot")}
WINDOW_COLORS = [OKABE_ITO[0], OKABE_ITO[5], OKABE_ITO[4], OKABE_ITO[1], OKABE_ITO[3], OKABE_ITO[2]]


def _score_trace(rows: pd.DataFrame, name: str, color: str, symbol: str, dash: str, step_name: str) -> go.Scatter:
    """Scores with ±1 standard error bars; hover: the series, step, score ± stderr and the folder."""
    return go.Scatter(
        x=rows["step"].astype(int), y=rows["value"], mode="lines+markers", name=name,
        line=dict(color=color, dash=dash, width=1.5),
        error_y=dict(type="data", array=rows["stderr"], color=color, thickness=1.2),
        marker=dict(color=color, symbol=symbol, size=11, line=dict(width=1, color="white")),
        customdata=np.stack([rows["stderr"].to_numpy(dtype=float), rows["folder"].to_numpy(dtype=object)], axis=-1),
        hovertemplate=f"{name}<br>{step_name} %{{x}}<br>%{{y:.3f}} ± %{{customdata[0]:.3f}}<br>folder "
                      "%{customdata[1]}<extra></extra>")


def scores_chart(scores: pd.DataFrame, window, metric_title: str) -> go.Figure:
    """One scorer's metric (±1 standard error) against the step: the run's checkpoints as the RL curve;
    for each window (and rank / fit setting) its exports against their target step (relex, linear, ...:
    one colour each), and `last`, the window's last checkpoint, as a flat dotted reference from the
    window's end to its furthest target (drawn where that checkpoint was scored). scores: rows of one
    scorer and metric with a step, `folder` naming each folder and `setting` (evaluate.of_measure)."""
    figure = _figure("Held-out score of the run's checkpoints and of relex exports", STEP_AXIS, metric_title,
                     height=460, legend=LEGEND_RIGHT)
    checkpoints = scores[scores["kind"] == "checkpoint"].sort_values("step")
    if len(checkpoints):
        figure.add_trace(_score_trace(checkpoints, "RL checkpoints", OKABE_ITO[7], "circle", "solid", "step"))
    exports = scores[scores["kind"] != "checkpoint"]
    settings = exports["setting"] if "setting" in exports else pd.Series("", index=exports.index)
    series = sorted(set(zip(exports["window"], settings)),
                    key=lambda pair: ([int(part) for part in str(pair[0]).split(":")], pair[1]))
    lasts = set()
    for index, (label, setting) in enumerate(series):
        color = WINDOW_COLORS[index % len(WINDOW_COLORS)]
        rows = exports[(exports["window"] == label) & (settings == setting)]
        for kind, kind_rows in rows.groupby("kind", sort=False):
            name, symbol, dash = SCORE_KINDS.get(kind, (kind, "circle", "solid"))
            name = f"{name} from window {label}" + (f" ({setting})" if setting else "")
            figure.add_trace(_score_trace(kind_rows.sort_values("step"), name, color, symbol, dash, "target step"))
        end = int(str(label).split(":")[1])
        last = checkpoints[checkpoints["step"] == end]
        if len(last) and label not in lasts:  # once per window, whatever its settings
            lasts.add(label)
            value, stderr = float(last["value"].iloc[-1]), float(last["stderr"].iloc[-1])
            name = f"last of window {label} (step {end})"
            figure.add_trace(go.Scatter(
                x=[end, int(rows["step"].max())], y=[value, value], mode="lines", name=name,
                line=dict(color=color, dash="dot", width=1.5),
                hovertemplate=f"{name}: keeping checkpoint {end} scores {value:.3f} ± {stderr:.3f}<extra></extra>"))
    _shade_window(figure, window)
    return figure
