"""relex: geometry of RLVR weight trajectories from one streaming Gram pass, and extrapolation."""

__version__ = "0.1.0"

# Public names load on first use (PEP 562), so `relex --help` and input errors found before any
# tensor is read answer at once instead of after importing torch and pandas (~2 s).
_PUBLIC = {"WindowFit": "analysis", "parse_window": "analysis", "spectrum_frame": "analysis",
           "stability_frame": "analysis", "principal_angles_frame": "analysis",
           "FitSpec": "options", "RelexError": "errors", "RunGram": "gram", "compute_gram": "gram",
           "open_run": "io.discover"}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
