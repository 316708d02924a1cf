"""The benchmark kit end to end on tiny shapes: every section runs and relex agrees with the naive SVD.

The full benchmark (bench/run_bench.py) takes minutes on real shapes; this runs the same code
path (generator, read floor, `relex analyze` and `relex extrapolate` subprocesses, naive SVD,
window latency, report) in seconds, so the kit cannot rot.
"""

import numpy as np

from bench.floor import read_floor
from bench.run_bench import BenchConfig, make_runs, run_benchmark, synthetic_run_gram
from relex_core.analysis import WindowFit
from relex_core.io.discover import open_run
from relex_core.io.reader import CheckpointReader


def test_benchmark_runs_end_to_end_and_relex_matches_the_naive_svd(tmp_path):
    config = BenchConfig.smoke(tmp_path / "data")
    report = tmp_path / "RESULTS.md"
    ray_section = "## Ray engine (`--ray`): written by bench/ray_engine.py\n\nkept as it is\n"
    report.write_text("## 1–2. an old report\n\n" + ray_section)

    results = run_benchmark(config, report, command="pytest smoke", log=lambda message: None)

    # relex's Gram-only numbers equal a float64 full SVD of the stacked deltas
    (naive,) = results["naive"]
    assert naive["dtype"] == "float64" and naive["tensors"] == 26
    for column, difference in naive["max_relative_difference"].items():
        assert difference < 1e-8, column
    # every measurement ran and was timed, with the bytes the floor read
    (row,) = results["scaling"]
    assert row["floor_s"] > 0 and row["relex_s"] > 0 and row["relex_peak_mb"] > 0
    assert row["GB"] * 1e9 == read_floor(config.data / "manifests" / "tiny-T4.csv")["bytes"]
    assert results["window"]["median_s"] > 0
    (export,) = results["export"]
    assert export["GB_written"] > 0 and export["relex_s"] > 0 and export["floor_s"] > 0
    text = report.read_text()
    for heading in ("## 1–2.", "## 3.", "## 4.", "## 5.", "## 6."):
        assert heading in text
    assert "Command: `pytest smoke`" in text
    assert text.endswith("\n" + ray_section) and "an old report" not in text  # another script's section stays
    assert report.with_suffix(".json").is_file()


def test_read_floor_reads_every_tensor_of_every_checkpoint_once(tmp_path):
    runs = make_runs(BenchConfig.smoke(tmp_path / "data"), log=lambda message: None)
    manifest = runs[("tiny", 4)]
    run = open_run(manifest)
    expected = 0
    for checkpoint in (run.base, *run.checkpoints):
        with CheckpointReader(checkpoint.path) as reader:
            expected += sum(info.numel * info.dtype.itemsize for info in reader.tensors.values())
    assert read_floor(manifest, chunk_mb=0.01)["bytes"] == expected


def test_synthetic_gram_for_the_latency_benchmark_is_a_valid_run_gram():
    run_gram = synthetic_run_gram(n_tensors=7, n_checkpoints=9)
    assert run_gram.gram.shape == (7, 9, 9)
    assert np.allclose(run_gram.gram, run_gram.gram.transpose(0, 2, 1))
    assert np.linalg.eigvalsh(run_gram.gram).min() > -1e-9 * run_gram.gram.max()
    fit = WindowFit(run_gram, f"{run_gram.steps[0]}:{run_gram.steps[5]}")
    assert len(fit.backtest_frame()) == 3 * 3  # three methods × three later checkpoints
