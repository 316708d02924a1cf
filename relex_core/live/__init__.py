"""Live: follow a run while it trains, and say when the prediction for a target step has settled.

    growing.py  the Gram of the run so far, grown by new checkpoints (rotation, --retain)
    retain.py   hard links of analysed checkpoints into relex's cache
    row.py      the live row: pure functions of a RunGram
    advice.py   the rule that says "RL could stop here"
    watch.py    the polling loop behind `relex watch` (and the dashboard's watcher)
"""

from .advice import AdviceRule
from .growing import LiveGram, Update
from .row import forecast_error, live_row, predicted_norm, prediction_change, rows_for_updates
from .watch import WatchOptions, WatchResult, open_when_ready, watch

__all__ = ["AdviceRule", "LiveGram", "Update", "WatchOptions", "WatchResult", "forecast_error", "live_row",
           "open_when_ready", "predicted_norm", "prediction_change", "rows_for_updates", "watch"]
