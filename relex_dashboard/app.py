"""The relex dashboard: `streamlit run relex_dashboard/app.py` from the repository root (`make dashboard`).

This script is the shell: page setup and the navigation over the page scripts in app_pages/.
Every page starts with `state.page_setup()`, which draws the shared sidebar (run picker,
window / rank / fit, all drawn from st.session_state) and returns the analysis.

The folder is not called `pages/` on purpose: Streamlit treats a `pages/` folder beside the
main script as a legacy multipage app until st.navigation has run once in the server, so a
fresh server serves a bookmarked page URL with file-name navigation and without this shell.
The analysis is shared by the sessions of the server (runs.py), so switching pages or moving
a slider never re-reads checkpoints.
"""

import sys
from pathlib import Path

# `streamlit run` puts this file's folder first on sys.path, where state.py, evaluate.py, ...
# would shadow top-level packages of the same names (Hugging Face's `evaluate`). The modules are
# imported as relex_dashboard.*, from the folder above when the package is not installed.
HERE, PACKAGE_PARENT = Path(__file__).resolve().parent, str(Path(__file__).resolve().parents[1])
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
if PACKAGE_PARENT not in sys.path:
    sys.path.append(PACKAGE_PARENT)

import streamlit as st  # noqa: E402

from relex_core.errors import RelexError  # noqa: E402

# No Material icons (page, navigation, buttons): Streamlit fetches their SVGs from Google Fonts, and the
# dashboard must work on a machine without a network.
st.set_page_config(page_title="relex", layout="wide")

page = st.navigation([
    st.Page(HERE / "app_pages" / "overview.py", title="Overview", default=True),
    st.Page(HERE / "app_pages" / "spectra.py", title="Spectra"),
    st.Page(HERE / "app_pages" / "trajectory.py", title="Trajectory"),
    st.Page(HERE / "app_pages" / "window.py", title="Window"),
    st.Page(HERE / "app_pages" / "export.py", title="Export"),
    st.Page(HERE / "app_pages" / "evaluate.py", title="Evaluate"),
])
try:
    page.run()
except RelexError as error:  # an input error a page did not catch itself: show it, keep the app alive
    st.error(str(error))
