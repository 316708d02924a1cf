"""The `relex` command line: a thin shell over the Python API.

User errors (RelexError) print one line on stderr and exit with code 2, never a traceback.
"""

import argparse
import sys
from pathlib import Path

from . import __version__
from .analysis import WindowFit, spectrum_frame, stability_frame
from .errors import RelexError
from .gram import compute_gram
from .io.discover import open_run


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (checkpoint-N, global_step_N, ...) or a step,path manifest")
    parser.add_argument("--base", help="base checkpoint (default: the run's step-0 checkpoint)")
    parser.add_argument("--window", default=None, help="observation window A:B in steps, inclusive (default: all)")
    parser.add_argument("--rank", type=int, default=1, help="number of trajectory directions (default 1)")
    parser.add_argument("--cache-dir", default=None, help="Gram cache folder (default ~/.cache/relex)")
    parser.add_argument("--no-cache", action="store_true", help="ignore the cache and do a fresh pass")
    parser.add_argument("--chunk-mb", type=float, default=256, help="working set per chunk in MB (default 256)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda for the Gram products (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _load_fit(args) -> WindowFit:
    run = open_run(args.run, base=args.base)
    _refuse_inside_run(args.cache_dir, run, "cache folder")
    if getattr(args, "out", None) is not None:  # a bad --out must fail before the pass, not after it
        _check_output_path(args.out, run)
    run_gram = compute_gram(run, cache_dir=args.cache_dir, use_cache=not args.no_cache, chunk_mb=args.chunk_mb,
                            device=args.device, progress=not args.quiet)
    for note in run_gram.notes:
        print(f"relex: note: {note}", file=sys.stderr)
    return WindowFit(run_gram, window=args.window, rank=args.rank)


def _refuse_inside_run(path, run, what: str) -> None:
    """Nothing is ever written inside the run's folder or its checkpoints."""
    if path is None:
        return
    target = Path(path).expanduser().resolve()
    roots = {run.source.resolve() if run.source.is_dir() else run.source.resolve().parent}
    roots |= {checkpoint.path.resolve() for checkpoint in (run.base, *run.checkpoints)}
    for root in roots:
        if target == root or root in target.parents:
            raise RelexError(f"{what} must not be inside the run's checkpoints ({root})", path=target)


def _check_output_path(path, run) -> Path:
    _refuse_inside_run(path, run, "output folder")
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise RelexError("output path is an existing file, not a folder", path=folder)
    return folder


def _output_folder(path, run) -> Path:
    folder = _check_output_path(path, run)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RelexError(f"cannot create the output folder ({error.strerror or error})", path=folder) from None
    return folder


def _write_csv(frame, path: Path) -> None:
    try:
        frame.to_csv(path, index=False)
    except OSError as error:
        raise RelexError(f"cannot write ({error.strerror or error})", path=path) from None
    print(f"wrote {path} ({len(frame)} rows)")


def command_analyze(args) -> None:
    fit = _load_fit(args)
    out = _output_folder(args.out, fit.run_gram.run)
    _write_csv(fit.tensors_frame(), out / "tensors.csv")
    for by in ("layer", "module", "model"):
        _write_csv(fit.summary_frame(by), out / f"{by}s.csv" if by != "model" else out / "model.csv")
    _write_csv(fit.coefficients_frame(), out / "coefficients.csv")
    _write_csv(spectrum_frame(fit), out / "spectra.csv")
    _write_csv(stability_frame(fit.run_gram, start=fit.window_steps[0]), out / "stability.csv")
    model = fit.summary_frame("model").iloc[0]
    print(f"window {fit.window_steps[0]}:{fit.window_steps[-1]} ({len(fit.window_steps)} checkpoints), "
          f"{model.tensors} tensors: energy_rank1 {model.energy_rank1:.4f}, r2 {model.r2:.4f}")


def command_backtest(args) -> None:
    fit = _load_fit(args)
    out = _output_folder(args.out, fit.run_gram.run)
    frame = fit.backtest_frame()
    if frame.empty:
        raise RelexError(f"no checkpoint after the window {args.window} to test against", path=args.run)
    _write_csv(frame, out / "backtest.csv")
    for by in ("layer", "module"):
        _write_csv(fit.backtest_frame(by), out / f"backtest_by_{by}.csv")
    print(frame.pivot(index="target_step", columns="method", values="rel_error").to_string(float_format="%.4f"))


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
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except RelexError as error:
        print(f"relex: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("relex: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
