"""The relex dashboard (Streamlit), apart from the engine in relex_core.

- app.py: the shell, `streamlit run relex_dashboard/app.py`; the page scripts are in app_pages/.
- state.py: one session's state: the run, window, rank and fit (canonical st.session_state keys
  mirrored in the URL), the sidebar, defaults when a run is opened, target checks.
- runs.py: what the sessions of a server share: one background Gram pass per run, and the Gram
  maths (WindowFit, backtests of every window end, stability, spectra) cached per run.
- files.py: where the server may read (RELEX_RUN_ROOTS) and write (the export root), the sample run.
- frames.py: pandas shaping of RunGram / WindowFit results for the pages (no Streamlit, no plotting).
- charts.py: Plotly figures from those frames (palette, axis titles, hover text, colour ranges).
- report.py: each chart's CSV and SVG, and a page as one offline HTML report.
- evaluate.py: what the Evaluate page scores (checkpoints, exports to write), where scores.csv lives,
  and the tables it shows from it; the scoring itself is relex_core.evaluate.
- scoring.py: the background scoring job of each run, shared by sessions (progress, cancel).

Pages hold no maths: every number they draw comes from relex_core through these modules.
"""
