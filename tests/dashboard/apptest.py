"""Helpers to drive app.py with streamlit.testing.v1.AppTest and read back its Plotly figures."""

import base64
import json

import numpy as np
from streamlit.testing.v1 import AppTest

from .conftest import REPO_ROOT


def open_app(**session_state) -> AppTest:
    """The dashboard after its first run (the sample run, unless session_state picks another)."""
    app = AppTest.from_file(str(REPO_ROOT / "relex_dashboard" / "app.py"), default_timeout=120)
    for key, value in session_state.items():
        app.session_state[key] = value
    return app.run()


def on_page(app: AppTest, page: str) -> AppTest:
    app.switch_page(f"app_pages/{page}.py").run()
    assert_no_exception(app)
    return app


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
    return {key: decode(value) if key in ("x", "y", "z", "customdata") else value
            for key, value in matches[0].items()}


def numbers(values) -> np.ndarray:
    """Float array of decoded chart values, gaps (None) as NaN."""
    values = np.asarray(values, dtype=object)
    return np.where(values == None, np.nan, values).astype(np.float64)  # noqa: E711 (elementwise)
