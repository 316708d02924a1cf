"""relex: geometry of RLVR weight trajectories from one streaming Gram pass, and extrapolation."""

__version__ = "0.1.0"

from .analysis import WindowFit, parse_window, spectrum_frame, stability_frame  # noqa: E402
from .errors import RelexError  # noqa: E402
from .gram import RunGram, compute_gram  # noqa: E402
from .io.discover import open_run  # noqa: E402

__all__ = ["RelexError", "RunGram", "WindowFit", "compute_gram", "open_run", "parse_window",
           "spectrum_frame", "stability_frame", "__version__"]
