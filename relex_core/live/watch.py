"""`relex watch`: follow a run while it trains, one update per batch of newly finished checkpoints.

Each poll re-opens the run (`open_run`: only checkpoints whose format's marker says the save is
finished); new checkpoints grow the Gram (`LiveGram`), and the outputs of the run so far are
refreshed: the tables `relex analyze` writes for the window A:latest, backtest.csv (every
earlier window A:s on the checkpoints after it), live.csv (one row per update, `row.live_row`),
checkpoints.csv (a step,path manifest of what was analysed: `relex analyze` of it is the one-shot
twin), optionally DIR/predicted-S (the export of the current window) and scores.

Stopping (--until-step, --max-updates, Ctrl-C or SIGTERM) never leaves a half-written output: the
tables of one update are staged and renamed together with signals held off, an export is
built beside DIR/predicted-S and swapped in (`io.writer.atomic_folder`), and an interrupted Gram
update writes nothing.
"""

import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..analysis import WindowFit
from ..errors import RelexError
from ..io.discover import open_run
from ..selection import window_end_backtests
from .advice import AdviceRule
from .growing import LiveGram
from .row import FORECAST_LAGS, live_row

# Messages of `open_run` that mean "not yet" for a run still being written, not a mistake.
_NOT_YET = ("no checkpoints found", "at least two are needed", "has no step-0 checkpoint")
RETRIES = 3  # consecutive failed polls tolerated after the first update (a checkpoint deleted mid-read)


@dataclass
class WatchOptions:
    run: list
    out: Path
    target_step: int
    window_start: int | None = None
    interval: float = 60.0
    until_step: int | None = None
    max_updates: int | None = None
    base: str | None = None
    prefer: str = "native"
    fit_options: dict = field(default_factory=dict)  # rank, fit, fit_last, refit_every of WindowFit
    cache_dir: Path | None = None
    use_cache: bool = True
    chunk_mb: float = 256
    engine: object = None
    lags: int = FORECAST_LAGS
    rule: AdviceRule = field(default_factory=AdviceRule)
    export_latest: bool = False
    export_options: dict = field(default_factory=dict)  # dtype, shard_size of export.extrapolate
    retain: bool = False
    scorer: object = None
    quiet: bool = False


@dataclass
class WatchResult:
    updates: int
    rows: list
    settled_at: int | None
    reason: str


def watch(options: WatchOptions, analysis_tables, write_tables) -> WatchResult:
    """Poll and update until a stop condition. analysis_tables(fit) → {name: DataFrame} (what `relex
    analyze` writes); write_tables(tables, folder) writes them all or none."""
    from ..cache import default_cache_dir

    out = Path(options.out).expanduser()
    live = LiveGram(cache_dir=options.cache_dir or default_cache_dir(), engine=options.engine,
                    chunk_mb=options.chunk_mb, retain=options.retain, progress=not options.quiet,
                    use_cache=options.use_cache)
    rows, settled_at, failures, waiting_said = [], None, 0, False
    say(f"advice rule: {options.rule.text}")
    while True:
        try:
            run = _open_when_ready(options)
            update = live.update(run) if run is not None else None
            failures = 0
        except (RelexError, OSError) as error:  # OSError: a checkpoint deleted while it was being read
            failures += 1
            if not rows or failures > RETRIES:
                if isinstance(error, OSError):
                    raise RelexError(f"cannot read the run ({error.strerror or error})", path=error.filename) from None
                raise
            say(f"relex: poll failed ({error}); retrying", err=True)
            run, update = None, None
        for note in live.notes:
            say(f"relex: {note}", err=True)
        live.notes.clear()
        if run is None and not waiting_said:
            say(f"waiting for the run to hold a base and two finished checkpoints: {options.run[0]}")
            waiting_said = True
        if update is not None:
            row, fit = _update_row(live, update, options, out, rows)
            if settled_at is None and options.rule.holds([*rows, row]):
                settled_at = row["latest_step"]
                row["advice"] = "settled"
            rows.append(row)
            tables = {**analysis_tables(fit), "backtest.csv": _backtests(fit, options),
                      "live.csv": pd.DataFrame(rows), "checkpoints.csv": _manifest(fit)}
            with _signals_held():
                write_tables(tables, out)
            say(_progress_line(row))
            if row.get("advice") == "settled":
                say(options.rule.message(row))
            reason = _stop_reason(options, row, len(rows))
            if reason:
                return WatchResult(len(rows), rows, settled_at, reason)
        time.sleep(options.interval)


def say(text: str, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def _open_when_ready(options: WatchOptions):
    return open_when_ready(options.run, base=options.base, prefer=options.prefer)


def open_when_ready(sources, base=None, prefer: str = "native"):
    """`open_run` of a run that may still be starting: None while it lacks a base and two finished
    checkpoints; any other problem (a missing folder included) is the user's error."""
    sources = list(sources) if isinstance(sources, (list, tuple)) else [sources]
    try:
        return open_run(sources if len(sources) > 1 else sources[0], base=base, prefer=prefer)
    except RelexError as error:
        if any(words in str(error) for words in _NOT_YET):
            return None
        raise


def _window_start(live: LiveGram, options: WatchOptions) -> int:
    return int(options.window_start) if options.window_start is not None else live.steps[0]


def _update_row(live: LiveGram, update, options: WatchOptions, out: Path, rows: list) -> tuple[dict, WindowFit]:
    run_gram = live.run_gram
    start = _window_start(live, options)
    previous_end = rows[-1]["latest_step"] if rows else None
    settle_end = rows[-options.rule.updates]["latest_step"] if len(rows) >= options.rule.updates else None
    row = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           **live_row(run_gram, start, options.target_step, previous_end, settle_end, options.lags,
                      **options.fit_options),
           "new_steps": ";".join(map(str, update.new_steps)),
           "dropped_steps": ";".join(map(str, update.dropped_steps)),
           "latest_score": math.nan, "predicted_score": math.nan, "advice": ""}
    fit = WindowFit(run_gram, (start, int(run_gram.steps[-1])), **options.fit_options)
    if options.export_latest or options.scorer is not None:
        exported = _export(fit, options, out)
        if exported is not None and options.scorer is not None:
            row.update(_scores(fit, exported, options, out))
    return row, fit


def _export(fit: WindowFit, options: WatchOptions, out: Path) -> Path | None:
    """Export the window's prediction for S to DIR/predicted-S, replacing the last one atomically (the export
    is built beside it and swapped in, as every export is). None (with a message) when window checkpoints
    were deleted since they were analysed."""
    from .. import export

    run = fit.run_gram.run
    gone = [int(fit.run_gram.steps[position]) for position in fit.window_positions
            if not run.checkpoints[position].path.exists()]
    if gone:
        say(f"relex: cannot export step {options.target_step}: the window's checkpoints at step(s) "
            f"{', '.join(map(str, gone))} are gone (deleted by the trainer); --retain keeps them", err=True)
        return None
    destination = out / f"predicted-{options.target_step}"
    export.extrapolate(fit, [options.target_step], destination, force=True, progress=False,
                       chunk_mb=options.chunk_mb, engine=options.engine, **options.export_options)
    return destination


def _scores(fit: WindowFit, exported: Path, options: WatchOptions, out: Path) -> dict:
    """Score the latest real checkpoint and the export into DIR/scores.csv; their first metric's values."""
    from ..evaluate import score_folders

    latest = fit.run_gram.run.checkpoints[fit.last_position]
    folder = latest.config_dir or latest.path
    values = {}
    metric = None
    for key, path in (("latest_score", folder), ("predicted_score", exported)):
        for outcome in score_folders([path], options.scorer, out=out / "scores.csv", force=True):
            if outcome.status == "failed":
                say(f"relex: error: {outcome.error}", err=True)
                continue
            chosen = [row for row in outcome.rows if metric is None or row["metric"] == metric]
            if chosen:
                metric = chosen[0]["metric"]
                values[key] = float(chosen[0]["value"])
    return values


def _backtests(fit: WindowFit, options: WatchOptions) -> pd.DataFrame:
    """Every earlier window A:s backtested on the checkpoints after it (`relex backtest --window A:s`'s rows)."""
    return window_end_backtests(fit.run_gram, int(fit.window_steps[0]), **options.fit_options)


def _manifest(fit: WindowFit) -> pd.DataFrame:
    """step,path of the base and every checkpoint analysed: `relex analyze` of this file is a one-shot twin."""
    run = fit.run_gram.run
    return pd.DataFrame({"step": [0, *(int(step) for step in fit.run_gram.steps)],
                         "path": [str(checkpoint.path.resolve()) for checkpoint in (run.base, *run.checkpoints)]})


def _progress_line(row: dict) -> str:
    change = "n/a" if not math.isfinite(row["prediction_change"]) else f"{row['prediction_change']:.2%}"
    forecast = "n/a" if not math.isfinite(row["forecast_error"]) else f"{row['forecast_error']:.2%}"
    scores = ""
    if math.isfinite(row["latest_score"]) or math.isfinite(row["predicted_score"]):
        scores = f", score latest {row['latest_score']:.4f}, predicted {row['predicted_score']:.4f}"
    return (f"took step(s) {row['new_steps'].replace(';', ', ')}; step {row['latest_step']} "
            f"({row['n_checkpoints']} checkpoints, window {row['window_start']}:"
            f"{row['latest_step']}): energy_rank1 {row['energy_rank1']:.4f}, r2 {row['r2']:.4f}, "
            f"|prediction at {row['target_step']}| {row['predicted_norm']:.4g}, change {change}, "
            f"forecast error {forecast}{scores}")


def _stop_reason(options: WatchOptions, row: dict, updates: int) -> str | None:
    if options.until_step is not None and row["latest_step"] >= options.until_step:
        return f"reached step {row['latest_step']} (--until-step {options.until_step})"
    if options.max_updates is not None and updates >= options.max_updates:
        return f"{updates} update(s) (--max-updates {options.max_updates})"
    return None


@contextmanager
def _signals_held():
    """Ctrl-C and SIGTERM wait until the block is done (outside the main thread: nothing to hold)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    handlers = {number: signal.signal(number, lambda signum, frame: received.append(signum))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        if received:
            raise KeyboardInterrupt
