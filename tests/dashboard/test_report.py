"""Figures leave the dashboard as CSV of their data and as one offline HTML report per page."""

import base64
import io
import json
import re

import pandas as pd
import plotly.graph_objects as go
import plotly.offline

from relex_core import __version__
from relex_dashboard.report import Figure, chart_config, csv_bytes, file_name, page_html

from .apptest import decode, numbers


def figure_and_data():
    data = pd.DataFrame({"step": [48, 96, 144], "speed": [0.009, 0.0075, 0.0071]})
    figure = go.Figure(go.Scatter(x=data["step"], y=data["speed"], name="speed"))
    figure.update_layout(title="Whole-model speed", height=300)
    return figure, data


def test_a_charts_csv_is_the_frame_it_was_drawn_from():
    _, data = figure_and_data()
    pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(csv_bytes(data))), data)


def test_the_camera_button_downloads_svg_named_after_the_chart():
    assert chart_config("speed") == {"displaylogo": False,
                                     "toImageButtonOptions": {"format": "svg", "filename": "speed"}}
    assert file_name("relex-window-48:288") == "relex-window-48-288"


def test_the_html_report_is_offline_and_says_run_window_and_version():
    figure, data = figure_and_data()
    context = {"run": "/data/runs/grpo", "window": "48:288", "rank": 1, "fit": "linear", "relex version": __version__}
    text = page_html("Overview", context, [Figure("speed", figure, data)])
    library = plotly.offline.get_plotlyjs()
    assert library in text  # plotly.js inside: it opens without a network
    assert "http" not in text.replace(library, "")  # and nothing else is fetched (no CDN script, no link)
    for value in ("/data/runs/grpo", "48:288", "linear", f"<dd>{__version__}</dd>", "relex · Overview"):
        assert value in text
    plot = re.search(r'Plotly\.newPlot\(\s*"figure-speed",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{"displaylogo"', text, re.S)
    traces = json.loads(plot.group(1))
    assert list(numbers(decode(traces[0]["x"]))) == [48, 96, 144] and traces[0]["name"] == "speed"
    assert "format: 'svg'" in text and "format: 'png'" in text  # one button each, rendered in the browser
    link = re.search(r'download="speed.csv" href="data:text/csv;base64,([^"]+)"', text)
    pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(base64.b64decode(link.group(1)))), data)
