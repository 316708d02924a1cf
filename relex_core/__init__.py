"""relex: geometry of RLVR weight trajectories from one streaming Gram pass, and extrapolation.

    from relex_core import open_run, compute_gram, WindowFit, extrapolate
    run_gram = compute_gram(open_run("runs/grpo"))     # one pass, or the cache
    fit = WindowFit(run_gram, window="0:400", rank=1)  # Gram-only maths
    extrapolate(fit, [600, 800], "exports/grpo")       # HF checkpoints at steps 600 and 800

The engine never imports the dashboard's stack (streamlit, plotly): `pip install relex` is enough.
"""

__version__ = "0.1.0"

# Public names load on first use (PEP 562), so `relex --help` and input errors found before any
# tensor is read answer at once instead of after importing torch and pandas.
_PUBLIC = {"WindowFit": "analysis", "parse_window": "analysis", "spectrum_frame": "analysis",
           "stability_frame": "analysis", "principal_angles_frame": "analysis", "changed_frame": "analysis",
           "FitSpec": "options",
           "RelexError": "errors", "RunGram": "gram", "compute_gram": "gram",
           "open_run": "io.discover", "extrapolate": "export", "reconstruct": "export", "ExportResult": "export",
           "window_end_backtests": "selection", "suggest_window": "selection",
           "delta_spectrum_frame": "spectra", "update_spectra_frame": "spectra"}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
