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
from .io.discover import open_run
from .options import FIT_NAMES

# torch, pandas and the maths are imported inside the commands that use them: the run's folder
# and the output paths are checked first, and a mistake there is reported at once.


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="+", help="run folder (checkpoint-N, global_step_N, ...) or a step,path "
                        "manifest; several for a job resumed into new folders, in order")
    parser.add_argument("--base", help="base checkpoint (default: the run's step-0 checkpoint)")
    parser.add_argument("--prefer", choices=("native", "hf"), default="native",
                        help="where a checkpoint holds both: the trainer's fp32 shards (native, default) or "
                        "the HF copies (hf)")
    parser.add_argument("--window", default=None, help="observation window A:B in steps, inclusive (default: all)")
    parser.add_argument("--rank", type=int, default=1, help="number of trajectory directions (default 1)")
    parser.add_argument("--cache-dir", default=None, help="Gram cache folder (default ~/.cache/relex)")
    parser.add_argument("--no-cache", action="store_true", help="ignore the cache and do a fresh pass")
    parser.add_argument("--chunk-mb", type=float, default=256, help="working set per chunk in MB (default 256)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda for the Gram products (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _load_fit(args, degree: int = 1):
    run = open_run(args.run, base=args.base, prefer=args.prefer)
    run.refuse_inside(args.cache_dir, "cache folder")
    if getattr(args, "out", None) is not None:  # a bad --out must fail before the pass, not after it
        folder = _check_output_path(args.out, run)
        if getattr(args, "force", True) is False and folder.exists():  # an export replaces a folder only with --force
            raise RelexError("destination folder already exists (use --force to replace it)", path=folder)
    from .gram import compute_gram

    run_gram = compute_gram(run, cache_dir=args.cache_dir, use_cache=not args.no_cache, chunk_mb=args.chunk_mb,
                            device=args.device, progress=not args.quiet)
    for note in (*run.notes, *run_gram.notes):  # after the pass: a failed run prints its one error line alone
        print(f"relex: note: {note}", file=sys.stderr)
    from .analysis import WindowFit

    return WindowFit(run_gram, window=args.window, rank=args.rank, degree=degree)


def _check_output_path(path, run) -> Path:
    run.refuse_inside(path, "output folder")  # nothing is ever written inside the run
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise RelexError("output path is an existing file, not a folder", path=folder)
    return folder


def _write_tables(tables: dict, folder: Path) -> None:
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
        print(f"wrote {folder / name} ({len(frame)} rows)")


def command_analyze(args) -> None:
    fit = _load_fit(args)
    from .analysis import spectrum_frame, stability_frame

    out = _check_output_path(args.out, fit.run_gram.run)
    _write_tables({"tensors.csv": fit.tensors_frame(), "layers.csv": fit.summary_frame("layer"),
                   "modules.csv": fit.summary_frame("module"), "model.csv": fit.summary_frame("model"),
                   "coefficients.csv": fit.coefficients_frame(), "spectra.csv": spectrum_frame(fit),
                   "stability.csv": stability_frame(fit.run_gram, start=fit.window_steps[0])}, out)
    model = fit.summary_frame("model").iloc[0]
    print(f"window {fit.window_steps[0]}:{fit.window_steps[-1]} ({len(fit.window_steps)} checkpoints), "
          f"{int(model.tensors)} tensors: energy_rank1 {model.energy_rank1:.4f}, r2 {model.r2:.4f}")


def command_backtest(args) -> None:
    fit = _load_fit(args)
    out = _check_output_path(args.out, fit.run_gram.run)
    frame = fit.backtest_frame()
    if frame.empty:
        raise RelexError(f"no checkpoint after the window {args.window} to test against", path=fit.run_gram.run.source)
    _write_tables({"backtest.csv": frame, "backtest_by_layer.csv": fit.backtest_frame("layer"),
                   "backtest_by_module.csv": fit.backtest_frame("module")}, out)
    print(frame.pivot(index="target_step", columns="method", values="rel_error").to_string(float_format="%.4f"))


def _print_exports(results) -> None:
    from tqdm import tqdm

    for result in results:
        weights = [path.name for path in result.files if path.suffix == ".safetensors"]
        loss = "n/a (nothing moved)" if result.rounding_loss != result.rounding_loss else f"{result.rounding_loss:.3%}"
        print(f"wrote {result.path}: step {result.target_step}, {len(weights)} weight file(s) + "
              f"{len(result.files) - len(weights)} other(s), {tqdm.format_sizeof(result.total_bytes, 'B')}, "
              f"rounding loss {loss} of the update")


def command_extrapolate(args) -> None:
    from .options import parse_fit, parse_target_steps

    targets = parse_target_steps(args.target)
    fit = _load_fit(args, degree=parse_fit(args.fit))
    from . import export
    _print_exports(export.extrapolate(fit, targets, args.out, method=args.method, dtype=args.dtype,
                                      shard_size=args.shard_size, force=args.force, progress=not args.quiet,
                                      chunk_mb=args.chunk_mb))


def command_reconstruct(args) -> None:
    fit = _load_fit(args)
    from . import export
    _print_exports([export.reconstruct(fit, args.step, args.out, dtype=args.dtype, shard_size=args.shard_size,
                                       force=args.force, progress=not args.quiet, chunk_mb=args.chunk_mb)])


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


def command_sample_eval(args) -> None:
    from .sample.verifier import evaluate_checkpoint

    rows = []
    for folder in args.checkpoints:
        try:
            result = evaluate_checkpoint(folder, n_problems=args.problems)
        except (OSError, ValueError, KeyError) as error:
            raise RelexError(f"not a checkpoint of the sample model ({error})", path=folder) from None
        rows.append(result)
        print(f"{folder}: accuracy {result['accuracy']:.3f} ({result['n_correct']}/{result['n_problems']}, "
              f"{result['seconds']:.1f} s)")
    if args.out:
        import pandas as pd

        path = Path(args.out).expanduser()
        _write_tables({path.name: pd.DataFrame(rows)}, path.parent)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relex", description="Geometry of RLVR weight trajectories "
                                     "from one streaming Gram pass, and extrapolated checkpoints.")
    parser.add_argument("--version", action="version", version=f"relex {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    analyze = commands.add_parser("analyze", help="per-tensor geometry of a window: spectra, energies, fits")
    _add_run_arguments(analyze)
    analyze.add_argument("--out", required=True, help="folder for tensors.csv and summaries")
    analyze.set_defaults(handler=command_analyze)

    backtest = commands.add_parser("backtest", help="held-out error of relex/last/linear after the window")
    _add_run_arguments(backtest)
    backtest.add_argument("--out", required=True, help="folder for backtest.csv")
    backtest.set_defaults(handler=command_backtest)

    extrapolate = commands.add_parser("extrapolate", help="write θ_0 + δ̂(s) at target steps as HF checkpoints")
    _add_run_arguments(extrapolate)
    extrapolate.add_argument("--target", required=True,
                             help="target step, or several separated by commas (one sub-folder step-S each)")
    extrapolate.add_argument("--fit", choices=list(FIT_NAMES.values()), default="linear",
                             help="trend of the coefficients over steps (default linear)")
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

    sample_eval = commands.add_parser("sample-eval", help="held-out accuracy of sample-model checkpoints "
                                      "(greedy, exact match), e.g. exports of the sample run")
    sample_eval.add_argument("checkpoints", nargs="+", help="checkpoint folders of the sample model")
    sample_eval.add_argument("--problems", type=int, default=None, help="score only the first N problems")
    sample_eval.add_argument("--out", default=None, help="also write the scores to this CSV file")
    sample_eval.set_defaults(handler=command_sample_eval)
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
