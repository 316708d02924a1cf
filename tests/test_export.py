"""Export: extrapolated and reconstructed checkpoints equal a plain float64 SVD + lstsq brute force.

The brute force below reads the checkpoints with safetensors directly, stacks the window's
deltas, takes `np.linalg.svd`, fixes signs, fits each coefficient with `np.linalg.lstsq` (with
intercept) on the real steps and evaluates θ_0 + Σ_k p_k(s) v_k. relex gets there through the
Gram alone and a streamed weighted sum; the two must agree to within the output dtype's rounding.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from relex_core import RelexError, WindowFit, compute_gram, open_run
from relex_core.export import extrapolate, parse_size, reconstruct
from relex_core.io.dtypes import dtype_name
from relex_core.io.reader import CheckpointReader
from relex_core.io.writer import ShardedWriter
from relex_core.synthetic import make_run

from .brute_force import correctly_rounded, trajectory_svd

REPO = Path(__file__).resolve().parents[1]
STEPS = (10, 20, 30, 40, 50, 60)
WINDOW = (10, 50)


# ---------------------------------------------------------------- brute force


def load_folder(folder) -> dict:
    """Every tensor of an HF folder (single file or shards), read with safetensors itself."""
    state = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(file))
    return state


def brute_force(run, window_steps, target_steps, rank, degree=1, reconstruct_step=None) -> dict:
    """{step: {name: float64 array}}: θ_0 + Σ_k p_k(s) v_k per tensor, from np.linalg.svd and lstsq.

    With reconstruct_step, p_k = <Δ_step, v_k> instead (the rank-k projection of that checkpoint).
    """
    base = load_folder(Path(run) / "checkpoint-0")
    window = [load_folder(Path(run) / f"checkpoint-{step}") for step in window_steps]
    steps = np.asarray(window_steps, dtype=np.float64)
    design = np.vander(steps, degree + 1)  # [s², s, 1] or [s, 1]: the intercept is in
    observed = load_folder(Path(run) / f"checkpoint-{reconstruct_step}") if reconstruct_step is not None else None
    result = {target: {} for target in target_steps}
    for name, theta_0 in base.items():
        if not theta_0.is_floating_point():
            for target in target_steps:
                result[target][name] = theta_0.numpy()
            continue
        start = theta_0.to(torch.float64).reshape(-1).numpy()
        deltas = np.stack([checkpoint[name].to(torch.float64).reshape(-1).numpy() - start for checkpoint in window])
        sigma, directions = trajectory_svd(deltas)  # np.linalg.svd, signs so that c_k(last) ≥ 0
        updates = {target: np.zeros_like(start) for target in target_steps}
        for k in range(rank):
            if sigma[0] == 0 or sigma[k] <= 1e-6 * sigma[0]:
                continue
            direction = directions[k]
            if observed is not None:
                coefficient = (observed[name].to(torch.float64).reshape(-1).numpy() - start) @ direction
                updates[target_steps[0]] += coefficient * direction
                continue
            trend, *_ = np.linalg.lstsq(design, deltas @ direction, rcond=None)
            for target in target_steps:
                updates[target] += np.polyval(trend, target) * direction
        for target in target_steps:
            result[target][name] = (start + updates[target]).reshape(theta_0.shape)
    return result


def brute_force_rounding_loss(run, expected: dict, dtype=None) -> float:
    """sqrt(Σ‖round(θ̂) − θ_0 − δ̂‖²) / sqrt(Σ‖δ̂‖²) over every floating tensor."""
    base = load_folder(Path(run) / "checkpoint-0")
    erased, update = 0.0, 0.0
    for name, value in expected.items():
        if not base[name].is_floating_point():
            continue
        start = base[name].to(torch.float64).numpy()
        rounded = correctly_rounded(value, dtype or base[name].dtype)
        erased += float(((rounded - value) ** 2).sum())
        update += float(((value - start) ** 2).sum())
    return np.sqrt(erased / update)


def assert_within_rounding(actual: torch.Tensor, expected: np.ndarray, name: str) -> None:
    """|actual − expected| ≤ half a unit in the last place of actual's dtype (plus 1e-9 relative slack)."""
    spacing = torch.finfo(actual.dtype).eps * 2.0 ** np.floor(np.log2(np.maximum(np.abs(expected),
                                                                               torch.finfo(actual.dtype).tiny)))
    error = np.abs(actual.to(torch.float64).numpy() - expected)
    bound = 0.5 * spacing + 1e-9 * np.abs(expected)
    assert (error <= bound).all(), f"{name}: worst error {error.max():.3e}, {(error / bound).max():.2f}× the bound"


def assert_matches(folder, expected: dict, dtype=None) -> None:
    exported = load_folder(folder)
    assert list(exported) == list(expected) or set(exported) == set(expected)
    for name, value in expected.items():
        assert tuple(exported[name].shape) == value.shape, name
        if not np.issubdtype(value.dtype, np.floating):
            assert torch.equal(exported[name], torch.from_numpy(value)), name
            continue
        if dtype is not None:
            assert exported[name].dtype == dtype, name
        assert_within_rounding(exported[name], value, name)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A float32 run with large updates (5% of the weights), so fp32 rounding is small beside δ̂."""
    return make_run(tmp_path_factory.mktemp("export") / "run", steps=STEPS, relative_update=0.05, seed=3)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def window_fit(run, cache_dir, rank=1, degree=1, window=f"{WINDOW[0]}:{WINDOW[1]}"):
    run_gram = compute_gram(open_run(run), cache_dir=cache_dir, progress=False)
    return WindowFit(run_gram, window=window, rank=rank, fit=f"poly{degree}")


def window_steps(first=WINDOW[0], last=WINDOW[1]):
    return [step for step in STEPS if first <= step <= last]


# ---------------------------------------------------------------- extrapolation


@pytest.mark.parametrize("rank, shard_size, targets", [
    (1, None, [60]),
    (1, 20_000, [60]),
    (3, None, [45, 60, 100]),
    (3, 20_000, [60, 80]),
])
def test_extrapolation_equals_svd_lstsq_brute_force(run, cache_dir, tmp_path, rank, shard_size, targets):
    fit = window_fit(run, cache_dir, rank=rank)
    results = extrapolate(fit, targets, tmp_path / "out", shard_size=shard_size or "5GB", progress=False)
    expected = brute_force(run, window_steps(), targets, rank)
    assert [result.target_step for result in results] == targets
    for result, target in zip(results, targets):
        assert result.path == (tmp_path / "out" if len(targets) == 1 else tmp_path / "out" / f"step-{target}")
        assert_matches(result.path, expected[target], dtype=torch.float32)
        weight_files = sorted(path.name for path in result.path.glob("*.safetensors"))
        if shard_size is None:
            assert weight_files == ["model.safetensors"]
        else:
            assert len(weight_files) > 1 and weight_files[0] == f"model-00001-of-{len(weight_files):05d}.safetensors"
            index = json.loads((result.path / "model.safetensors.index.json").read_text())
            assert set(index["weight_map"]) == set(expected[target])


def test_poly2_fit_equals_quadratic_lstsq_brute_force(run, cache_dir, tmp_path):
    fit = window_fit(run, cache_dir, rank=2, degree=2)
    results = extrapolate(fit, [60, 90], tmp_path / "out", progress=False)
    expected = brute_force(run, window_steps(), [60, 90], rank=2, degree=2)
    for result in results:
        assert_matches(result.path, expected[result.target_step])
        assert result.provenance["fit"] == "poly2"


def test_linear_method_is_the_line_through_base_and_last(run, cache_dir, tmp_path, monkeypatch):
    fit = window_fit(run, cache_dir)
    locations, seen, original = set(), [], CheckpointReader.read

    def recording_read(self, name, start=0, stop=None, **options):
        locations.add(self.location.name)
        return original(self, name, start, stop, **options)

    monkeypatch.setattr(CheckpointReader, "read", recording_read)
    result, = extrapolate(fit, 75, tmp_path / "out", method="linear",
                          progress=lambda fraction, message: seen.append((fraction, message)))
    assert locations == {"checkpoint-0", f"checkpoint-{WINDOW[1]}"}  # only θ_0 and θ_L are needed
    fractions = [fraction for fraction, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    model_bytes = sum(tensor.numel() * tensor.element_size() for tensor in load_folder(run / "checkpoint-0").values())
    done, total = re.fullmatch(r"(\d+\.\d\d) / (\d+\.\d\d) MB read, \d+\.\d\d GB/s", seen[-1][1]).groups()
    assert done == total == f"{2 * model_bytes / 1e6:.2f}"  # progress counts the bytes of θ_0 and θ_L
    base, last = load_folder(run / "checkpoint-0"), load_folder(run / f"checkpoint-{WINDOW[1]}")
    expected = {name: (base[name].double() + 75 / WINDOW[1] * (last[name].double() - base[name].double())).numpy()
                for name in base}
    assert_matches(result.path, expected)
    assert result.provenance["method"] == "linear"


@pytest.mark.parametrize("rank, step", [(1, 30), (3, 30), (3, 60)])
def test_reconstruction_is_the_rank_k_projection_of_the_checkpoint(run, cache_dir, tmp_path, rank, step):
    fit = window_fit(run, cache_dir, rank=rank)
    result = reconstruct(fit, step, tmp_path / "out", progress=False)
    expected = brute_force(run, window_steps(), [step], rank, reconstruct_step=step)[step]
    assert result.target_step == step and result.provenance["method"] == "reconstruct"
    assert_matches(result.path, expected)


def test_reconstruction_at_full_rank_gives_back_the_checkpoint(run, cache_dir, tmp_path):
    fit = window_fit(run, cache_dir, rank=len(window_steps()))
    result = reconstruct(fit, 30, tmp_path / "out", progress=False)
    observed = {name: tensor.double().numpy() for name, tensor in load_folder(run / "checkpoint-30").items()}
    assert_matches(result.path, observed)


# ---------------------------------------------------------------- precision


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A bf16 run with RLVR-sized updates (0.1% of the weights): rounding to bf16 visibly erases δ̂."""
    return make_run(tmp_path_factory.mktemp("bf16") / "run", steps=STEPS, dtype=torch.bfloat16, seed=5)


def test_bf16_export_rounds_the_brute_force_and_reports_the_rounding_loss(bf16_run, cache_dir, tmp_path):
    fit = window_fit(bf16_run, cache_dir)
    results = extrapolate(fit, [60, 120], tmp_path / "out", progress=False)
    expected = brute_force(bf16_run, window_steps(), [60, 120], rank=1)
    for result in results:
        assert_matches(result.path, expected[result.target_step], dtype=torch.bfloat16)
        loss = brute_force_rounding_loss(bf16_run, expected[result.target_step])
        assert 0.01 < loss < 1  # bf16 keeps 8 bits; updates of 1e-3 lose a visible share
        assert result.rounding_loss == pytest.approx(loss, rel=1e-3)
        assert json.loads((result.path / "relex.json").read_text())["rounding_loss"] == result.rounding_loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rounding_loss_matches_a_direct_computation(run, cache_dir, tmp_path, dtype):
    fit = window_fit(run, cache_dir, rank=2)
    result, = extrapolate(fit, [70], tmp_path / "out", dtype=dtype, progress=False)
    expected = brute_force(run, window_steps(), [70], rank=2)[70]
    assert_matches(result.path, expected, dtype=dtype)
    assert result.rounding_loss == pytest.approx(brute_force_rounding_loss(run, expected, dtype), rel=1e-3)
    assert json.loads((result.path / "config.json").read_text())["torch_dtype"] == dtype_name(dtype)


# ---------------------------------------------------------------- tensors that are not extrapolated


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """A run whose checkpoints also store a tied lm_head, an int64 buffer and a frozen norm."""
    from relex_core.synthetic import TINY, qwen2_shapes

    shapes = {**qwen2_shapes(**TINY), "lm_head.weight": (TINY["vocab"], TINY["hidden"])}
    folder = make_run(tmp_path_factory.mktemp("odd") / "run", steps=(10, 20, 30, 40), shapes=shapes, seed=7,
                      relative_update=0.05)
    frozen = load_folder(folder / "checkpoint-0")["model.norm.weight"]
    for step in (0, 10, 20, 30, 40):
        path = folder / f"checkpoint-{step}" / "model.safetensors"
        state = load_file(path)
        state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
        state["model.position_ids"] = torch.arange(12, dtype=torch.int64).reshape(3, 4)
        state["model.norm.weight"] = frozen
        save_file(state, path, metadata={"format": "pt"})
    return folder


def header_order(file) -> list:
    """Tensor names of a safetensors file in the order their data lies in it."""
    with open(file, "rb") as handle:
        length = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return sorted(header, key=lambda name: header[name]["data_offsets"][0])


def test_untouched_tensors_are_the_base_and_a_tied_head_copies_the_embedding(odd_run, cache_dir, tmp_path):
    fit = WindowFit(compute_gram(open_run(odd_run), cache_dir=cache_dir, progress=False), window="10:30")
    assert fit.run_gram.tied == {"lm_head.weight": "model.embed_tokens.weight"}
    result, = extrapolate(fit, [50], tmp_path / "out", progress=False)
    exported, base = load_folder(result.path), load_folder(odd_run / "checkpoint-0")
    assert torch.equal(exported["model.position_ids"], base["model.position_ids"])
    assert torch.equal(exported["model.norm.weight"], base["model.norm.weight"])  # zero movement: exactly θ_0
    assert torch.equal(exported["lm_head.weight"], exported["model.embed_tokens.weight"])
    assert not torch.equal(exported["lm_head.weight"], base["lm_head.weight"])
    assert_matches(result.path, brute_force(odd_run, [10, 20, 30], [50], rank=1)[50])
    # same names, shapes, dtypes and order as the base
    assert header_order(result.path / "model.safetensors") == list(CheckpointReader(odd_run / "checkpoint-0").tensors)
    assert {name: (tensor.shape, tensor.dtype) for name, tensor in exported.items()} == {
        name: (tensor.shape, tensor.dtype) for name, tensor in base.items()}


def test_each_window_checkpoint_is_read_once_in_chunks_within_chunk_mb(run, cache_dir, tmp_path, monkeypatch):
    fit = window_fit(run, cache_dir, rank=2)
    whole, = extrapolate(fit, [60], tmp_path / "whole", progress=False)
    read = {}
    largest = [0]
    original = CheckpointReader.read

    def counting_read(self, name, start=0, stop=None, **options):
        rows = original(self, name, start, stop, **options)
        read[self.location.name] = read.get(self.location.name, 0) + rows.numel()
        largest[0] = max(largest[0], rows.numel())
        return rows

    monkeypatch.setattr(CheckpointReader, "read", counting_read)
    chunk_mb = 0.1
    chunked = extrapolate(fit, [60, 80, 100], tmp_path / "chunked", progress=False, chunk_mb=chunk_mb)
    numel = sum(tensor.numel() for tensor in load_folder(run / "checkpoint-0").values())
    assert {name: read.get(name, 0) for name in (f"checkpoint-{step}" for step in (0, *STEPS))} == {
        "checkpoint-0": numel, **{f"checkpoint-{step}": numel if step in window_steps() else 0 for step in STEPS}}
    assert largest[0] * 8 * (2 * (len(window_steps()) + 1) + 3 * 3) <= chunk_mb * 2**20
    assert all(torch.equal(load_folder(whole.path)[name], tensor) for name, tensor in load_folder(chunked[0].path).items())


# ---------------------------------------------------------------- what comes with the weights


def test_side_files_provenance_and_header_metadata(run, cache_dir, tmp_path):
    run = Path(shutil.copytree(run, tmp_path / "run"))
    (run / "checkpoint-0" / "tokenizer.json").write_text('{"from": "base"}')
    (run / "checkpoint-0" / "generation_config.json").write_text('{"from": "base"}')
    (run / "checkpoint-50" / "generation_config.json").write_text('{"from": "last window checkpoint"}')
    fit = window_fit(run, cache_dir, rank=1)
    result, = extrapolate(fit, [80], tmp_path / "out", progress=False)
    names = sorted(path.name for path in result.files)
    assert names == ["config.json", "generation_config.json", "model.safetensors", "relex.json", "tokenizer.json"]
    assert result.total_bytes == sum(path.stat().st_size for path in result.files)
    assert json.loads((result.path / "generation_config.json").read_text()) == {"from": "last window checkpoint"}
    assert json.loads((result.path / "tokenizer.json").read_text()) == {"from": "base"}
    assert (result.path / "config.json").read_text() == (run / "checkpoint-50" / "config.json").read_text()
    record = json.loads((result.path / "relex.json").read_text())
    assert record == result.provenance
    assert record["window_steps"] == window_steps() and record["target_step"] == 80
    assert (record["rank"], record["fit"], record["method"]) == (1, "linear", "relex")
    assert record["run"] == str(run.absolute()) and record["relex_version"]
    backtest = fit.backtest_frame()
    assert [(row["target_step"], row["method"]) for row in record["backtest"]] == list(
        zip(backtest.target_step, backtest.method))
    assert np.allclose([row["rel_error"] for row in record["backtest"]], backtest.rel_error)
    weights = fit.weights_frame(80)
    assert np.allclose([record["checkpoint_weights"][str(step)] for step in weights.step], weights.weight_model)
    with safe_open(str(result.path / "model.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "pt" and metadata["relex_target_step"] == "80"
    assert metadata["relex_window"] == "10:50" and metadata["relex_method"] == "relex"
    assert metadata["relex_rank"] == "1" and metadata["relex_fit"] == "linear"


# ---------------------------------------------------------------- safety


def snapshot(folder) -> dict:
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(Path(folder).rglob("*"))}


@pytest.mark.parametrize("fault", [RuntimeError, KeyboardInterrupt])
def test_an_interrupted_export_leaves_nothing_behind(run, cache_dir, tmp_path, monkeypatch, fault):
    fit = window_fit(run, cache_dir, rank=2)
    before = snapshot(run)
    original, calls, seen_on_disk = ShardedWriter.write_rows, [0], []

    def failing_write(self, name, first_row, data):
        calls[0] += 1
        if calls[0] == 40:  # well after the first shard of the first target is complete
            seen_on_disk.extend(path.name for path in self.folder.parent.rglob("model-00001-*"))
            raise fault("injected")
        return original(self, name, first_row, data)

    monkeypatch.setattr(ShardedWriter, "write_rows", failing_write)
    with pytest.raises(fault):
        extrapolate(fit, [60, 80], tmp_path / "out", shard_size=20_000, progress=False)
    assert seen_on_disk  # the failure came mid-way, after shards were written
    assert list(tmp_path.iterdir()) == []  # neither the destination nor a temporary folder
    assert snapshot(run) == before


def test_a_failed_forced_export_keeps_the_old_destination(run, cache_dir, tmp_path, monkeypatch):
    fit = window_fit(run, cache_dir)
    old, = extrapolate(fit, [60], tmp_path / "out", progress=False)
    old_files = snapshot(old.path)

    def failing_write(self, name, first_row, data):
        raise RuntimeError("injected")

    monkeypatch.setattr(ShardedWriter, "write_rows", failing_write)
    with pytest.raises(RuntimeError):
        extrapolate(fit, [90], tmp_path / "out", force=True, progress=False)
    assert snapshot(old.path) == old_files
    assert [path.name for path in tmp_path.iterdir()] == ["out"]


def test_force_replaces_an_existing_destination(run, cache_dir, tmp_path):
    fit = window_fit(run, cache_dir)
    extrapolate(fit, [60], tmp_path / "out", progress=False)
    with pytest.raises(RelexError, match="already exists"):
        extrapolate(fit, [90], tmp_path / "out", progress=False)
    result, = extrapolate(fit, [90], tmp_path / "out", force=True, progress=False)
    assert result.provenance["target_step"] == 90
    assert json.loads((tmp_path / "out" / "relex.json").read_text())["target_step"] == 90
    assert [path.name for path in tmp_path.iterdir()] == ["out"]


def test_destinations_inside_or_around_the_run_are_refused(run, cache_dir, tmp_path):
    fit = window_fit(run, cache_dir)
    before = snapshot(run)
    for destination in (run / "extrapolated", run / "checkpoint-50" / "x", run):
        with pytest.raises(RelexError, match="inside the run"):
            extrapolate(fit, [60], destination, force=True, progress=False)
    with pytest.raises(RelexError, match="holds the run"):
        extrapolate(fit, [60], run.parent, force=True, progress=False)
    assert snapshot(run) == before


def test_bad_requests_are_user_errors(run, cache_dir, tmp_path):
    fit = window_fit(run, cache_dir)
    for call, message in ((lambda: extrapolate(fit, [60, 60], tmp_path / "a"), "given twice"),
                          (lambda: extrapolate(fit, [60.5], tmp_path / "a"), "whole number"),
                          (lambda: extrapolate(fit, [60], tmp_path / "a", method="cubic"), "unknown method"),
                          (lambda: extrapolate(fit, [60], tmp_path / "a", dtype="int8"), "bf16, fp16 or fp32"),
                          (lambda: extrapolate(fit, [60], tmp_path / "a", shard_size="lots"), "shard size"),
                          (lambda: reconstruct(fit, 35, tmp_path / "a"), "not a checkpoint")):
        with pytest.raises(RelexError, match=message):
            call()
    assert list(tmp_path.iterdir()) == []


def test_shard_sizes_parse_like_huggingface():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("1.5 kb") == 1500
    assert parse_size(123) == parse_size("123") == 123
    for bad in ("", "GB", "5XB", "-1GB", 0):
        with pytest.raises(RelexError):
            parse_size(bad)


# ---------------------------------------------------------------- command line


def relex(*arguments, cache_dir):
    return subprocess.run([sys.executable, "-m", "relex_core", *map(str, arguments), "--cache-dir", str(cache_dir),
                           "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_extrapolate_several_targets_poly2_bf16_sharded(run, cache_dir, tmp_path):
    before = snapshot(run)
    done = relex("extrapolate", run, "--window", "10:50", "--target", "60,90", "--rank", "2", "--fit", "poly2",
                 "--dtype", "bf16", "--shard-size", "20KB", "--out", tmp_path / "out", cache_dir=cache_dir)
    assert done.returncode == 0, done.stderr
    expected = brute_force(run, window_steps(), [60, 90], rank=2, degree=2)
    for step in (60, 90):
        folder = tmp_path / "out" / f"step-{step}"
        assert_matches(folder, expected[step], dtype=torch.bfloat16)
        assert (folder / "model.safetensors.index.json").is_file()
        loss = json.loads((folder / "relex.json").read_text())["rounding_loss"]
        assert f"rounding loss {loss:.3%}" in done.stdout
        assert loss == pytest.approx(brute_force_rounding_loss(run, expected[step], torch.bfloat16), rel=1e-3)
    assert done.stdout.count("wrote ") == 2
    assert snapshot(run) == before


def test_cli_extrapolate_one_target_and_reconstruct(run, cache_dir, tmp_path):
    done = relex("extrapolate", run, "--window", "10:50", "--target", "60", "--method", "linear",
                 "--out", tmp_path / "line", cache_dir=cache_dir)
    assert done.returncode == 0, done.stderr
    base, last = load_folder(run / "checkpoint-0"), load_folder(run / "checkpoint-50")
    assert_matches(tmp_path / "line", {name: (base[name].double() + 60 / 50 * (last[name].double()
                                              - base[name].double())).numpy() for name in base})
    done = relex("reconstruct", run, "--window", "10:50", "--step", "60", "--rank", "3",
                 "--out", tmp_path / "rebuilt", cache_dir=cache_dir)
    assert done.returncode == 0, done.stderr
    assert_matches(tmp_path / "rebuilt", brute_force(run, window_steps(), [60], 3, reconstruct_step=60)[60])
    assert json.loads((tmp_path / "rebuilt" / "relex.json").read_text())["method"] == "reconstruct"


def test_cli_refuses_an_existing_destination(run, cache_dir, tmp_path):
    before = snapshot(run)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    done = relex("extrapolate", run, "--target", "60", "--out", tmp_path / "taken", cache_dir=cache_dir)
    assert done.returncode == 2 and "already exists" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    assert snapshot(run) == before
    assert sorted(os.listdir(tmp_path)) == ["taken"]
