"""What the dashboard needs on top of relex_core, kept out of the page scripts.

- frames.py: pandas shaping of RunGram / WindowFit results for the pages (no Streamlit, no plotting).
- files.py: the export root, the path check that keeps exports inside it, zipping small results.
- charts.py: Plotly figures from those frames (palette, axis titles, hover text).
- evaluate.py: scoring extrapolated and reconstructed checkpoints with the sample verifier.
- state.py: the Streamlit glue: run picker, shared window / rank / fit, caches, error display.

Pages hold no maths: every number they draw comes from relex_core through these modules.
"""
