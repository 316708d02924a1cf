"""The relex dashboard: `streamlit run app.py` from the repository root.

This script is the shell: page setup and the navigation over the page scripts in app_pages/.
Every page starts with `state.page_setup()`, which draws the shared sidebar (run picker,
window / rank / fit) and returns the analysis; the sample run is found beside this file.

The folder is not called `pages/` on purpose: Streamlit treats a `pages/` folder beside the
main script as a legacy multipage app until st.navigation has run once in the server, so a
fresh server serves a bookmarked page URL with file-name navigation and without this shell.
The analysis is cached (relex_core/views/state.py), so switching pages or moving a slider
never re-reads checkpoints.
"""

import streamlit as st

from relex_core.errors import RelexError

st.set_page_config(page_title="relex", page_icon=":material/timeline:", layout="wide")

page = st.navigation([
    st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("app_pages/spectra.py", title="Spectra", icon=":material/bar_chart:"),
    st.Page("app_pages/trajectory.py", title="Trajectory", icon=":material/show_chart:"),
    st.Page("app_pages/window.py", title="Window", icon=":material/width:"),
    st.Page("app_pages/export.py", title="Export", icon=":material/save:"),
    st.Page("app_pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
])
try:
    page.run()
except RelexError as error:  # an input error a page did not catch itself: show it, keep the app alive
    st.error(str(error))
