"""The `relex` command line: a thin shell over the Python API.

User errors (RelexError) print one line on stderr and exit with code 2, never a traceback.
"""

import argparse
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .errors import RelexError
from .io.discover import open_run, refuse_inside
from .options import FIT_NAMES, parse_fit

# torch, pandas and the maths are imported inside the commands that use them: the run's folder
# and the output paths are checked first, and a mistake there is reported at once.


def _add_run_arguments(parser: argparse.ArgumentParser, window: bool = True) -> None:
    parser.add_argument("run", nargs="+", help="run folder (checkpoint-N, global_step_N, ...) or a step,path "
                        "manifest; several for a job resumed into new folders, in order")
    parser.add_argument("--base", help="base checkpoint (default: the run's step-0 checkpoint)")
    parser.add_argument("--prefer", choices=("native", "hf"), default="native",
                        help="where a checkpoint holds both: the trainer's fp32 shards (native, default) or "
                        "the HF copies (hf)")
    if window:
        parser.add_argument("--window", default=None, help="observation window A:B in steps, inclusive (default: all)")
    parser.add_argument("--rank", type=int, default=1, help="number of trajectory directions (default 1)")
    parser.add_argument("--cache-dir", default=None, help="Gram cache folder (default ~/.cache/relex)")
    parser.add_argument("--no-cache", action="store_true", help="ignore the cache and do a fresh pass")
    parser.add_argument("--chunk-mb", type=float, default=256, help="working set per chunk in MB (default 256)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda for the Gram products (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run the pass (and an export) as tasks on a Ray cluster: HOST:PORT, ray://HOST:PORT or "
                        "auto (alone: $RAY_ADDRESS, else auto); every node must see the run at the same path")


def _add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fit", default="linear", help=f"trend of the coefficients over steps: "
                        f"{', '.join(FIT_NAMES)} or any polyD (default linear)")
    parser.add_argument("--fit-last", type=int, default=None, metavar="W",
                        help="fit the trend to the window's last W checkpoints (the subspace still comes from "
                             "the whole window; the official --window W)")
    parser.add_argument("--refit-every", type=int, default=None, metavar="F",
                        help="autoregressive extrapolation, refitting every F checkpoint intervals (the official "
                             "--future_extrapolation_window F; needs evenly spaced window checkpoints)")


def _engine(args):
    """None (this process, on --device) or the RayEngine of --ray; Ray is imported only for --ray."""
    from .engines import engine_for

    if args.ray is not None and args.device != "cpu":
        raise RelexError("--device applies to the local engine; with --ray the tasks multiply on their nodes' CPUs")
    return engine_for(args.ray)


def _load_fit(args):
    fit = parse_fit(getattr(args, "fit", "linear"))  # a bad name fails before the pass
    run = open_run(args.run, base=args.base, prefer=args.prefer)
    run.refuse_inside(args.cache_dir, "cache folder")
    if getattr(args, "out", None) is not None:  # a bad --out must fail before the pass, not after it
        folder = _check_output_path(args.out, run)
        if getattr(args, "force", True) is False and folder.exists():  # an export replaces a folder only with --force
            raise RelexError("destination folder already exists (use --force to replace it)", path=folder)
    from .gram import compute_gram

    args.engine = _engine(args)
    run_gram = compute_gram(run, cache_dir=args.cache_dir, use_cache=not args.no_cache, chunk_mb=args.chunk_mb,
                            device=args.device, progress=not args.quiet, engine=args.engine)
    for note in (*run.notes, *run_gram.notes):  # after the pass: a failed run prints its one error line alone
        print(f"relex: note: {note}", file=sys.stderr)
    from .analysis import WindowFit

    return WindowFit(run_gram, window=getattr(args, "window", None), rank=args.rank, fit=fit,
                     fit_last=getattr(args, "fit_last", None), refit_every=getattr(args, "refit_every", None))


def _check_output_path(path, run) -> Path:
    run.refuse_inside(path, "output folder")  # nothing is ever written inside the run
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise RelexError("output path is an existing file, not a folder", path=folder)
    return folder


def _write_tables(tables: dict, folder: Path, report: bool = True) -> None:
    """Write {file name: DataFrame} as CSVs into `folder`, all of them or none.

    Every table is written to a hidden file beside its destination first; only when all are
    complete are they renamed into place, so a full disk never leaves a half-written or a
    missing table among good ones. A folder this call created is removed again on failure.
    """
    created = not folder.exists()
    staged, current = [], folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, frame in tables.items():
            current = folder / name
            staged.append(folder / f".{name}.relex-{os.getpid()}.tmp")
            frame.to_csv(staged[-1], index=False)
        for temporary, name in zip(staged, tables):
            current = folder / name
            os.replace(temporary, current)
    except OSError as error:
        for temporary in staged:
            temporary.unlink(missing_ok=True)
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise RelexError(f"cannot write ({error.strerror or error})", path=current) from None
    for name, frame in tables.items():
        if report:
            print(f"wrote {folder / name} ({len(frame)} rows)")


def _analyze_tables(fit) -> dict:
    """What `relex analyze` writes for a window fit ({file name: DataFrame}); `relex watch` refreshes the same."""
    from .analysis import changed_frame, principal_angles_frame, spectrum_frame, stability_frame

    window = (fit.window_steps[0], fit.window_steps[-1])
    return {"tensors.csv": fit.tensors_frame(), "layers.csv": fit.summary_frame("layer"),
            "modules.csv": fit.summary_frame("module"), "model.csv": fit.summary_frame("model"),
            "coefficients.csv": fit.coefficients_frame(), "spectra.csv": spectrum_frame(fit),
            "stability.csv": stability_frame(fit.run_gram, start=window[0], rank=fit.rank),
            "principal_angles.csv": principal_angles_frame(fit.run_gram, window, None, rank=fit.rank),
            "changed.csv": changed_frame(fit.run_gram, "dtype"), **_discarded_energy_tables(fit)}


def command_analyze(args) -> None:
    fit = _load_fit(args)
    out = _check_output_path(args.out, fit.run_gram.run)
    window = (fit.window_steps[0], fit.window_steps[-1])
    _write_tables(_analyze_tables(fit), out)
    model = fit.summary_frame("model").iloc[0]
    print(f"window {window[0]}:{window[1]} ({len(fit.window_steps)} checkpoints), {int(model.tensors)} tensors, "
          f"fit {fit.fit_name}: energy_rank1 {model.energy_rank1:.4f}, r2 {model.r2:.4f}, "
          f"r2 after the window {model.r2_after_window:.4f}; {model.changed_share:.1%} of the elements differ "
          f"from the base at step {window[1]}")


def _discarded_energy_tables(fit) -> dict:
    return {"discarded_energy.csv": fit.discarded_energy_frame(),
            "discarded_energy_by_layer.csv": fit.discarded_energy_frame("layer"),
            "discarded_energy_by_module.csv": fit.discarded_energy_frame("module"),
            "discarded_energy_by_tensor.csv": fit.discarded_energy_frame("tensor")}


def command_backtest(args) -> None:
    fit = _load_fit(args)
    out = _check_output_path(args.out, fit.run_gram.run)
    frame = fit.backtest_frame()
    if frame.empty:
        raise RelexError(f"no checkpoint after the window {args.window} to test against", path=fit.run_gram.run.source)
    _write_tables({"backtest.csv": frame, "backtest_by_layer.csv": fit.backtest_frame("layer"),
                   "backtest_by_module.csv": fit.backtest_frame("module"), **_discarded_energy_tables(fit)}, out)
    print(frame.pivot(index="target_step", columns="method", values="rel_error").to_string(float_format="%.4f"))
    model = fit.summary_frame("model").iloc[0]
    print(f"fit {fit.fit_name}: r2 {model.r2:.4f} in the window, {model.r2_after_window:.4f} after it")
    from .selection import backtest_verdict

    print(backtest_verdict(frame).text)


def _print_exports(results) -> None:
    from tqdm import tqdm

    for result in results:
        weights = [path.name for path in result.files if path.suffix == ".safetensors"]
        loss = "n/a (nothing moved)" if result.rounding_loss != result.rounding_loss else f"{result.rounding_loss:.3%}"
        print(f"wrote {result.path}: step {result.target_step}, {len(weights)} weight file(s) + "
              f"{len(result.files) - len(weights)} other(s), {tqdm.format_sizeof(result.total_bytes, 'B')}, "
              f"rounding loss {loss} of the update")


def command_extrapolate(args) -> None:
    from .options import parse_target_steps

    targets = parse_target_steps(args.target)
    fit = _load_fit(args)
    from . import export
    _print_exports(export.extrapolate(fit, targets, args.out, method=args.method, dtype=args.dtype,
                                      shard_size=args.shard_size, force=args.force, progress=not args.quiet,
                                      chunk_mb=args.chunk_mb, engine=args.engine))


def command_reconstruct(args) -> None:
    fit = _load_fit(args)
    from . import export
    _print_exports([export.reconstruct(fit, args.step, args.out, dtype=args.dtype, shard_size=args.shard_size,
                                       force=args.force, progress=not args.quiet, chunk_mb=args.chunk_mb,
                                       engine=args.engine)])


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="destination folder (must not exist, unless --force)")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                        help="output dtype of floating tensors (default: as in the base)")
    parser.add_argument("--shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB or 500MB")
    parser.add_argument("--force", action="store_true", help="replace an existing destination folder")


def command_spectra(args) -> None:
    from .spectra import update_spectra_frame

    fit = _load_fit(args)
    out = _check_output_path(args.out, fit.run_gram.run)
    frame = update_spectra_frame(fit.run_gram, args.step, k=args.k)
    _write_tables({f"update_spectra_step{args.step}.csv": frame}, out)
    print(f"step {args.step}: median σ1²/‖ΔW‖²_F over {len(frame)} matrices {frame.energy_rank1.median():.4f}, "
          f"median stable rank {frame.stable_rank.median():.2f}")


def _tolerance(text) -> float:
    """A tolerance as a fraction: '0.1' or '10%'."""
    cleaned = str(text).strip()
    try:
        value = float(cleaned[:-1]) / 100 if cleaned.endswith("%") else float(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a tolerance like 0.1 or 10%") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"tolerance '{text}' must not be negative")
    return value


def command_suggest(args) -> None:
    from . import selection

    fit = _load_fit(args)
    run_gram = fit.run_gram
    holdout = selection.default_holdout(run_gram.steps) if args.holdout_from is None else args.holdout_from
    backtests = selection.window_end_backtests(run_gram, args.start, rank=args.rank)
    suggestion = selection.suggest_window(backtests, args.start, holdout, tolerance=args.tolerance)
    print(f"suggested window {suggestion.window[0]}:{suggestion.window[1]}")
    print(suggestion.reason)


def command_dashboard(args) -> None:
    import importlib.util
    import subprocess

    try:
        streamlit = importlib.util.find_spec("streamlit")
    except ImportError:  # a broken or blocked installation counts as none
        streamlit = None
    if streamlit is None:
        raise RelexError("the dashboard needs streamlit and plotly: pip install 'relex[dashboard]'")
    package = importlib.util.find_spec("relex_dashboard")  # found, not imported: its modules import streamlit
    if package is None or package.origin is None:
        raise RelexError("the dashboard package (relex_dashboard) is not installed with this copy of relex")
    app = Path(package.origin).parent / "app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port)]
    if args.run is not None:
        command += ["--", str(args.run)]
    completed = subprocess.run(command)
    if completed.returncode:
        raise RelexError(f"streamlit exited with code {completed.returncode}")


def _scorer(args):
    """The scorer the flags ask for; a flag that belongs to another scorer is refused, not ignored."""
    from .evaluate import CommandScorer, LmEvalScorer, SampleScorer

    chosen = "--lm-eval" if args.lm_eval else "--command" if args.command else "--sample"
    allowed = {"--lm-eval": {"lm_eval_args", "lm_eval_include", "limit", "backend", "device"},
               "--command": {"timeout"}, "--sample": {"limit"}}[chosen]
    given = {"lm_eval_args": "--lm-eval-args", "lm_eval_include": "--lm-eval-include", "limit": "--limit",
             "backend": "--backend", "device": "--device", "timeout": "--timeout"}
    for dest, flag in given.items():
        if getattr(args, dest) is not None and dest not in allowed:
            raise RelexError(f"{flag} does not apply to {chosen}")
    if args.lm_eval:
        tasks = tuple(task.strip() for task in args.lm_eval.split(",") if task.strip())
        return LmEvalScorer(tasks=tasks, model_args=args.lm_eval_args or "", include=args.lm_eval_include,
                            limit=args.limit, backend=args.backend or "hf", device=args.device)
    if args.command:
        return CommandScorer(args.command, timeout=args.timeout)
    return SampleScorer(limit=args.limit)


def command_evaluate(args) -> None:
    from tqdm import tqdm

    from .evaluate import expand_paths, score_folders

    scorer = _scorer(args)
    folders = expand_paths(args.paths)
    if args.out is not None:  # nothing is ever written inside a folder being scored
        out = Path(args.out).expanduser().resolve()
        for folder in folders:
            if folder.resolve() in out.parents:
                raise RelexError("scores file must not be inside a folder being scored", path=out)
    failed, written = [], 0
    bar = tqdm(total=len(folders), desc="scoring", unit="folder", disable=args.quiet, file=sys.stderr)
    try:
        for outcome in score_folders(folders, scorer, out=args.out, force=args.force):
            bar.update(1)
            if outcome.status == "failed":
                failed.append(outcome.path)
                tqdm.write(f"relex: error: {outcome.error}", file=sys.stderr)
            elif outcome.status == "skipped":
                tqdm.write(f"{outcome.path}: already scored by {scorer.name}, unchanged: skipped (--force to redo)")
            written += len(outcome.rows) if args.out is not None else 0
            for row in outcome.rows:
                spread = "" if row["stderr"] is None else f" ± {row['stderr']:.4f}"
                tqdm.write(f"{row['path']}: {row['metric']} {row['value']:.4f}{spread} ({row['seconds']:.1f} s)")
    finally:
        bar.close()
    if written:
        print(f"appended {written} row(s) to {args.out}")
    if failed:
        raise RelexError(f"{len(failed)} of {len(folders)} folder(s) could not be scored (errors above); "
                         "the others' scores are kept")


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint or export folders; a folder without "
                        "weights stands for its sub-folders that have them (a run, a multi-target export)")
    parser.add_argument("--out", default=None, metavar="SCORES.CSV",
                        help="scores file to append to (default: print only)")
    parser.add_argument("--force", action="store_true", help="score again folders already in --out, unchanged")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def command_watch(args) -> None:
    from .live import AdviceRule, WatchOptions, watch

    target = args.target if args.target is not None else args.until_step
    if target is None:
        raise RelexError("give the step to predict with --target S (or --until-step S2, whose step is then the target)")
    for run_folder in args.run:
        if not Path(run_folder).expanduser().exists():
            raise RelexError("no such run folder or manifest", path=run_folder)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise RelexError("output path is an existing file, not a folder", path=out)
    for path, what in ((out, "output folder"), (args.cache_dir, "cache folder")):
        refuse_inside(path, args.run, what)  # the run may not be openable yet: its folders as given
    chosen = args.lm_eval or args.command or args.sample
    if args.evaluate and not chosen:
        raise RelexError("--evaluate needs a scorer: --lm-eval TASKS, --command CMD or --sample")
    if chosen and not args.evaluate:
        raise RelexError("--lm-eval, --command and --sample score only with --evaluate")
    scorer = _scorer(argparse.Namespace(**{**vars(args), "device": args.eval_device})) if args.evaluate else None
    from .gram import LocalEngine

    rule = AdviceRule(change_tolerance=args.change_tolerance, forecast_tolerance=args.forecast_tolerance,
                      updates=args.settle_updates, score_tolerance=args.score_tolerance,
                      basis="score" if scorer is not None and args.advice_from_scores else "gram")
    options = WatchOptions(
        run=args.run, out=out, target_step=int(target), window_start=args.window_start, interval=args.interval,
        until_step=args.until_step, max_updates=args.max_updates, base=args.base, prefer=args.prefer,
        fit_options={"rank": args.rank, "fit": parse_fit(args.fit), "fit_last": args.fit_last,
                     "refit_every": args.refit_every},
        cache_dir=args.cache_dir, use_cache=not args.no_cache, chunk_mb=args.chunk_mb,
        engine=_engine(args) or LocalEngine(device=args.device),
        lags=args.forecast_lags, rule=rule, export_latest=args.export_latest,
        export_options={"dtype": args.dtype, "shard_size": args.shard_size}, retain=args.retain, scorer=scorer,
        quiet=args.quiet)
    result = watch(options, _analyze_tables, lambda tables, folder: _write_tables(tables, folder, report=False))
    settled = (f"the advice fired at step {result.settled_at}" if result.settled_at is not None
               else "the advice has not fired")
    print(f"stopped after {result.updates} update(s): {result.reason}; {settled}; outputs in {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relex", description="Geometry of RLVR weight trajectories "
                                     "from one streaming Gram pass, and extrapolated checkpoints.")
    parser.add_argument("--version", action="version", version=f"relex {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    analyze = commands.add_parser("analyze", help="per-tensor geometry of a window: spectra, energies, fits")
    _add_run_arguments(analyze)
    _add_fit_arguments(analyze)
    analyze.add_argument("--out", required=True, help="folder for tensors.csv and summaries")
    analyze.set_defaults(handler=command_analyze)

    backtest = commands.add_parser("backtest", help="held-out error of relex/last/linear after the window")
    _add_run_arguments(backtest)
    _add_fit_arguments(backtest)
    backtest.add_argument("--out", required=True, help="folder for backtest.csv")
    backtest.set_defaults(handler=command_backtest)

    extrapolate = commands.add_parser("extrapolate", help="write θ_0 + δ̂(s) at target steps as HF checkpoints")
    _add_run_arguments(extrapolate)
    extrapolate.add_argument("--target", required=True,
                             help="target step, or several separated by commas (one sub-folder step-S each)")
    _add_fit_arguments(extrapolate)
    extrapolate.add_argument("--method", choices=("relex", "linear"), default="relex",
                             help="relex (fitted trend) or linear (θ_0 + s/s_L (θ_L − θ_0)); default relex")
    _add_export_arguments(extrapolate)
    extrapolate.set_defaults(handler=command_extrapolate)

    reconstruct = commands.add_parser("reconstruct", help="write the rank-k projection of an observed checkpoint")
    _add_run_arguments(reconstruct)
    reconstruct.add_argument("--step", type=int, required=True, help="the checkpoint step to reconstruct")
    _add_export_arguments(reconstruct)
    reconstruct.set_defaults(handler=command_reconstruct)

    spectra = commands.add_parser("spectra", help="per-matrix view: top singular values of ΔW = θ_step − θ_0 "
                                  "for every 2-D tensor, rank-1 energy and stable rank")
    _add_run_arguments(spectra)
    spectra.add_argument("--step", type=int, required=True, help="the checkpoint whose update ΔW is analysed")
    spectra.add_argument("--k", type=int, default=8, help="singular values per matrix (default 8)")
    spectra.add_argument("--out", required=True, help="folder for update_spectra_stepS.csv")
    spectra.set_defaults(handler=command_spectra)

    suggest = commands.add_parser("suggest", help="the shortest window from --start whose held-out error is "
                                  "within the tolerance of the best window's")
    _add_run_arguments(suggest, window=False)
    suggest.add_argument("--start", type=int, required=True, help="first step of every candidate window")
    suggest.add_argument("--tolerance", type=_tolerance, default=0.1,
                         help="how much worse than the best window's held-out error, e.g. 0.1 or 10%% (default 0.1)")
    suggest.add_argument("--holdout-from", type=int, default=None,
                         help="first held-out step (default: the first of the last quarter of the checkpoints)")
    suggest.set_defaults(handler=command_suggest)

    dashboard = commands.add_parser("dashboard", help="open the Streamlit dashboard (needs relex[dashboard])")
    dashboard.add_argument("run", nargs="?", default=None, help="run folder to open (default: the sample run)")
    dashboard.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    dashboard.set_defaults(handler=command_dashboard)

    evaluate = commands.add_parser("evaluate", help="score checkpoints and exports with lm-eval, your own "
                                   "command or the sample verifier, into scores.csv")
    _add_evaluate_arguments(evaluate)
    scorers = evaluate.add_mutually_exclusive_group(required=True)
    scorers.add_argument("--lm-eval", metavar="TASKS", help="lm-evaluation-harness task names, comma-separated")
    scorers.add_argument("--command", metavar="CMD", help="shell command scoring one folder, with {path} for it; "
                         "its last stdout line is a JSON object of metric -> number, or a number")
    scorers.add_argument("--sample", action="store_true", help="the sample model's verifier")
    evaluate.add_argument("--lm-eval-args", metavar="K=V,...", help="extra model arguments for the lm-eval backend "
                          "(its --model_args), e.g. dtype=bfloat16,batch_size=16")
    evaluate.add_argument("--lm-eval-include", metavar="PATH", help="folder of local lm-eval task YAMLs")
    evaluate.add_argument("--limit", type=int, default=None, metavar="N",
                          help="examples per task (--lm-eval), or the first N problems (--sample)")
    evaluate.add_argument("--backend", choices=("hf", "vllm"), default=None, help="lm-eval model backend (default hf)")
    evaluate.add_argument("--device", default=None,
                          help="device for lm-eval, e.g. cpu or cuda (default: cuda if there is one)")
    evaluate.add_argument("--timeout", type=float, default=None, metavar="SEC", help="seconds per folder for --command")
    evaluate.set_defaults(handler=command_evaluate)

    watch = commands.add_parser("watch", help="follow a run while it trains: grow the Gram as checkpoints land, "
                                "refresh the tables, and say when the prediction for step S has settled")
    _add_run_arguments(watch, window=False)
    _add_fit_arguments(watch)
    watch.add_argument("--out", required=True, help="folder for live.csv, the analyze tables and backtest.csv")
    watch.add_argument("--target", type=int, default=None, metavar="S", help="the step to predict "
                       "(default: --until-step)")
    watch.add_argument("--window-start", type=int, default=None, metavar="A",
                       help="first step of the window A:latest (default: the first checkpoint)")
    watch.add_argument("--interval", type=float, default=60.0, metavar="SEC", help="seconds between polls (default 60)")
    stops = watch.add_mutually_exclusive_group()
    stops.add_argument("--until-step", type=int, default=None, metavar="S2",
                       help="stop once a checkpoint at step ≥ S2 has been processed")
    stops.add_argument("--max-updates", type=int, default=None, metavar="N", help="stop after N updates")
    watch.add_argument("--forecast-lags", type=int, default=3, metavar="L", help="the advice's forecast check uses "
                       "the windows that ended 1…L checkpoints before the latest (default 3)")
    watch.add_argument("--change-tolerance", type=_tolerance, default=0.05, metavar="X",
                       help="advice: the prediction for S moves by less than X per update (default 5%%)")
    watch.add_argument("--forecast-tolerance", type=_tolerance, default=0.25, metavar="Y",
                       help="advice: earlier windows forecast the checkpoints since within Y (default 25%%)")
    watch.add_argument("--settle-updates", type=int, default=3, metavar="K",
                       help="advice: both hold at each of the last K updates (default 3)")
    watch.add_argument("--score-tolerance", type=float, default=0.005, metavar="D",
                       help="advice with --advice-from-scores: the predicted score rose by at most D over K updates")
    watch.add_argument("--advice-from-scores", action="store_true",
                       help="with --evaluate: the advice uses the predicted checkpoint's score instead of the Gram")
    watch.add_argument("--export-latest", action="store_true", help="keep DIR/predicted-S as the export of the "
                       "current window, replaced atomically at each update")
    watch.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                       help="dtype of the export (default: as in the base)")
    watch.add_argument("--shard-size", default="5GB", help="largest safetensors shard of the export")
    watch.add_argument("--retain", action="store_true", help="hard-link each analysed checkpoint into relex's cache "
                       "(copy across filesystems), so that rotation cannot take the window's weights")
    scorers_live = watch.add_mutually_exclusive_group()
    scorers_live.add_argument("--lm-eval", metavar="TASKS", help="--evaluate with lm-evaluation-harness tasks")
    scorers_live.add_argument("--command", metavar="CMD", help="--evaluate with a shell command, {path} for the folder")
    scorers_live.add_argument("--sample", action="store_true", help="--evaluate with the sample model's verifier")
    watch.add_argument("--evaluate", action="store_true", help="score the latest checkpoint and DIR/predicted-S at "
                       "each update into DIR/scores.csv (needs --lm-eval, --command or --sample; "
                       "implies --export-latest)")
    watch.add_argument("--lm-eval-args", default=None, metavar="K=V,...", help="extra lm-eval model arguments")
    watch.add_argument("--lm-eval-include", default=None, metavar="PATH", help="folder of local lm-eval task YAMLs")
    watch.add_argument("--limit", type=int, default=None, metavar="N", help="examples per task (lm-eval, sample)")
    watch.add_argument("--backend", choices=("hf", "vllm"), default=None, help="lm-eval model backend")
    watch.add_argument("--eval-device", default=None, help="device for lm-eval (default: cuda if there is one)")
    watch.add_argument("--timeout", type=float, default=None, metavar="SEC", help="seconds per folder for --command")
    watch.set_defaults(handler=command_watch)

    sample_eval = commands.add_parser("sample-eval", help="alias of `evaluate --sample`")
    _add_evaluate_arguments(sample_eval)
    sample_eval.add_argument("--problems", "--limit", dest="limit", type=int, default=None, metavar="N",
                             help="score only the first N problems")
    sample_eval.set_defaults(handler=command_evaluate, sample=True, lm_eval=None, command=None, lm_eval_args=None,
                             lm_eval_include=None, backend=None, device=None, timeout=None)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # `kill` and batch schedulers send SIGTERM, which would end Python without any cleanup: handled
    # like Ctrl-C, it lets a half-written export or cache be removed on the way out.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        args.handler(args)
    except RelexError as error:
        print(f"relex: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("relex: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
