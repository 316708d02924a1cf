"""Helpers to drive relex_dashboard/app.py with streamlit.testing.v1.AppTest and read back its Plotly figures."""

import base64
import json
import time

import numpy as np
from streamlit.testing.v1 import AppTest

from .conftest import REPO_ROOT

APP = REPO_ROOT / "relex_dashboard" / "app.py"
PAGES = ("overview", "spectra", "trajectory", "window", "export", "evaluate")


def open_app(query: dict | None = None, wait: bool = True, **session_state) -> AppTest:
    """The dashboard after its first run: the sample run, unless the URL (`query`) or session_state picks
    another. wait: rerun until the run's analysis is done (it runs in the background)."""
    app = AppTest.from_file(str(APP), default_timeout=120)
    app.query_params.update(query or {})
    for key, value in session_state.items():
        app.session_state[key] = value
    app.run()
    return wait_for_analysis(app) if wait else app


def analysing(app: AppTest) -> bool:
    return any(status.label.startswith("Analysing") for status in app.status)


def wait_for_analysis(app: AppTest, timeout: float = 120) -> AppTest:
    """Rerun while the page shows a pass in progress (the browser does this with a fragment timer)."""
    deadline = time.monotonic() + timeout
    while analysing(app):
        assert time.monotonic() < deadline, "the analysis did not finish"
        time.sleep(0.2)
        app.run()
    return app


def on_page(app: AppTest, page: str) -> AppTest:
    app.switch_page(f"app_pages/{page}.py").run()
    assert_no_exception(app)
    return app


def set_run_folder(app: AppTest, folder) -> AppTest:
    """Pick "Folder on this server" in the sidebar and type the run's path, as a user does."""
    app.sidebar.radio(key="sidebar.source").set_value("folder").run()
    app.sidebar.text_input(key="sidebar.folder").set_value(str(folder)).run()
    return wait_for_analysis(app)


def widget(app: AppTest, kind: str, label: str):
    """The one widget of this kind with this label (keys of widgets that follow a default change with it)."""
    matches = [element for element in app.get(kind) if element.label == label]
    assert len(matches) == 1, f"{len(matches)} {kind} labelled {label!r}"
    return matches[0]


def assert_no_exception(app: AppTest) -> None:
    assert not app.exception, [element.value for element in app.exception]


def decode(value):
    """Plotly's JSON arrays: plain lists, or {'dtype', 'bdata' (base64), 'shape'} typed arrays."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            array = array.reshape([int(size) for size in str(shape).split(",")])
        return array
    return np.array(value, dtype=object)


def figures(app: AppTest) -> dict:
    """{chart key: figure dict} for every st.plotly_chart on the page."""
    charts = {}
    for element in app.get("plotly_chart"):
        charts[element.key] = json.loads(element.proto.spec)
    return charts


def trace(figure: dict, name: str) -> dict:
    """The trace called `name`, its arrays decoded."""
    matches = [item for item in figure["data"] if item.get("name") == name]
    assert len(matches) == 1, f"trace {name!r} not in {[item.get('name') for item in figure['data']]}"
    return {key: decode(value) if key in ("x", "y", "z", "customdata", "width") else value
            for key, value in matches[0].items()}


def numbers(values) -> np.ndarray:
    """Float array of decoded chart values, gaps (None) as NaN."""
    values = np.asarray(values, dtype=object)
    return np.where(values == None, np.nan, values).astype(np.float64)  # noqa: E711 (elementwise)


def texts(app: AppTest) -> str:
    """Every text the page shows (markdown, captions, notes, errors), one per line."""
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "subheader"):
        parts += [str(element.value) for element in app.get(kind)]
    return "\n".join(parts)
