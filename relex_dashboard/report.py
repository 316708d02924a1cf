"""Every chart with its data, and each page as one offline HTML report.

`PageFigures.chart` draws a figure with st.plotly_chart, offers the frame it was drawn from
as CSV, and turns the modebar's camera button into an SVG download (Plotly renders images in
the browser: the server needs no image engine). `PageFigures.offer_report` gives the page's
figures as one HTML file: plotly.js embedded (it opens offline, no CDN), SVG, PNG and CSV
buttons under each figure, and the run, window, rank, fit and relex version in its header.
Files are built only when a button is pressed.
"""

import base64
import html
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd
import plotly.graph_objects as go
import plotly.offline
import streamlit as st


def chart_config(name: str) -> dict:
    """Plotly config of every chart: the camera button downloads an SVG named after the chart."""
    return {"displaylogo": False, "toImageButtonOptions": {"format": "svg", "filename": name}}


def file_name(text: str) -> str:
    """A safe file name part: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "relex"


@dataclass
class Figure:
    key: str
    figure: go.Figure
    data: pd.DataFrame


def csv_bytes(data: pd.DataFrame) -> bytes:
    return data.to_csv(index=False).encode()


def page_html(title: str, context: dict, figures: list[Figure]) -> str:
    """One self-contained HTML page: the header facts, then every figure with SVG / PNG / CSV buttons."""
    facts = "".join(f"<dt>{html.escape(str(name))}</dt><dd>{html.escape(str(value))}</dd>"
                    for name, value in context.items())
    sections = []
    for item in figures:
        div = f"figure-{file_name(item.key)}"
        csv = base64.b64encode(csv_bytes(item.data)).decode()
        plot = item.figure.to_html(full_html=False, include_plotlyjs=False, div_id=div,
                                   config=chart_config(item.key), default_height=item.figure.layout.height or 420)
        buttons = "".join(
            f'<button onclick="Plotly.downloadImage(\'{div}\', {{format: \'{kind}\', scale: 2, filename: \'{div}\'}})">'
            f"{kind.upper()}</button> " for kind in ("svg", "png"))
        csv_link = f'<a download="{file_name(item.key)}.csv" href="data:text/csv;base64,{csv}">CSV of this figure</a>'
        sections.append(f'<section>{plot}<p class="buttons">{buttons}{csv_link}</p></section>')
    heading = html.escape(f"relex · {title}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{heading}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222}"
            "dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}"
            "section{margin:2rem 0;border-top:1px solid #ddd;padding-top:1rem}.buttons{font-size:.9rem}</style>"
            f"<script type=\"text/javascript\">{plotly.offline.get_plotlyjs()}</script></head><body>"
            f"<h1>{heading}</h1><dl>{facts}</dl>{''.join(sections)}</body></html>\n")


@dataclass
class PageFigures:
    """The figures one page draws, each with its data; context: the facts printed atop the report."""
    title: str
    context: dict
    figures: list = field(default_factory=list)

    def chart(self, figure: go.Figure, data: pd.DataFrame, key: str, where=None, **options):
        """st.plotly_chart(figure) plus a CSV download of `data`; returns what st.plotly_chart returns."""
        where = where or st
        event = where.plotly_chart(figure, key=key, config=chart_config(key), **options)
        where.download_button("CSV of this chart", data=lambda: csv_bytes(data), file_name=f"{file_name(key)}.csv",
                              mime="text/csv", key=f"{key}.csv", on_click="ignore", type="tertiary")
        self.figures.append(Figure(key=key, figure=figure, data=data))
        return event

    def offer_report(self, where=None) -> None:
        """A button for the page's figures as one offline HTML file."""
        where = where or st
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        context = {**self.context, "written": stamp}
        figures = list(self.figures)
        name = file_name(f"relex-{self.title.lower()}-{self.context.get('window', '')}") + ".html"
        where.download_button("Download this page as an HTML report",
                              data=lambda: page_html(self.title, context, figures), file_name=name,
                              mime="text/html", key=f"report.{self.title.lower()}", on_click="ignore",
                              help="Every figure of this page with its data, the run, window and relex version; "
                                   "opens offline (plotly.js is inside).")
