"""Bad inputs, as a spec table: every one gets exit code 2 and one line naming file and tensor.

Each case builds a tiny synthetic run in a temporary folder and damages it the way crashed
jobs, partial copies and mixed tooling do. Then the real CLI runs in a subprocess:

    python -m relex_core analyze RUN --out OUT --cache-dir CACHE
    python -m relex_core extrapolate RUN --target 40 --out OUT --cache-dir CACHE   (export rows)

and the test checks: exit code 2, a single `relex: error:` line on stderr naming the file
(and the tensor where there is one), no traceback, nothing in the case's folder created or
changed (the run, the destination, names, sizes, mtimes: no partial output anywhere), and a
cache folder that is empty or holds only a cache a later analysis trusts. Mixed dtypes are the
one case that is allowed: it succeeds and prints a note.

The subprocesses are started together by a module fixture (two at a time), because each one
spends ~2 s importing torch; the table below is still one test per case.
"""

import functools
import json
import os
import shutil
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from relex_core import cache, compute_gram, open_run
from relex_core.io.writer import save_state_dict
from relex_core.synthetic import make_run

REPO = Path(__file__).resolve().parents[2]
STEPS = (10, 20, 30)
TENSOR = "model.layers.1.mlp.up_proj.weight"  # the tensor most cases damage


@dataclass
class Setup:
    """What a case built: the run to analyse and what the error line must name."""
    run: Path
    names: list                      # fragments the one stderr line must contain
    args: list = field(default_factory=list)
    command: str = "analyze"         # or "extrapolate" for the export cases
    succeeds: bool = False           # the one allowed case: exit 0 with a note
    marker: Path | None = None       # a file whose existence would mean code ran
    drop_file_permissions: bool = False
    file_size_limit: int | None = None  # bytes any file may grow to: writes past it fail, like a full disk


# ---------------------------------------------------------------- damage helpers

def tiny_run(folder: Path, **options) -> Path:
    return make_run(folder / "run", steps=STEPS, **options)


def rewrite(checkpoint: Path, change) -> None:
    """Rewrite checkpoint/model.safetensors after `change(state)` edits the dict of tensors."""
    # clone: load_file maps the file, which is about to be overwritten
    state = {name: tensor.clone() for name, tensor in load_file(checkpoint / "model.safetensors").items()}
    change(state)
    save_state_dict(state, checkpoint)


def header_of(file: Path) -> tuple[int, dict]:
    raw = file.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    return size, json.loads(raw[8:8 + size])


def replace_header(file: Path, header_bytes: bytes) -> None:
    """Swap the JSON header for other bytes (length prefix updated, the data kept as it was)."""
    raw = file.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header_bytes += b" " * (-len(header_bytes) % 8)
    file.write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + raw[8 + size:])


def sharded_run(folder: Path) -> Path:
    return tiny_run(folder, shard_size=20_000)


class RunsCode:
    """Unpickling this calls os.mkdir(marker): a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def write_code_running_pickle(file: Path, marker: Path) -> None:
    """A real torch.save file whose pickle calls os.mkdir(marker) when loaded without weights_only."""
    torch.save({"model.embed_tokens.weight": torch.zeros(96, 32), "payload": RunsCode(marker)}, file)


# ---------------------------------------------------------------- the corpus

def truncated_shard(folder):
    run = tiny_run(folder)
    file = run / "checkpoint-20" / "model.safetensors"
    os.truncate(file, file.stat().st_size // 2)
    return Setup(run, ["checkpoint-20/model.safetensors", "truncated"])


def empty_shard(folder):
    run = tiny_run(folder)
    (run / "checkpoint-30" / "model.safetensors").write_bytes(b"")
    return Setup(run, ["checkpoint-30/model.safetensors", "empty"])


def header_not_json(folder):
    run = tiny_run(folder)
    replace_header(run / "checkpoint-20" / "model.safetensors", b'{"model.norm.weight": {"dtype": ')
    return Setup(run, ["checkpoint-20/model.safetensors", "json"])


def header_offsets_past_end(folder):
    run = tiny_run(folder)
    file = run / "checkpoint-20" / "model.safetensors"
    _, header = header_of(file)
    for name, entry in header.items():  # every tensor moved 1 GB on: sizes agree, the data is not there
        if name != "__metadata__":
            entry["data_offsets"] = [offset + 10**9 for offset in entry["data_offsets"]]
    replace_header(file, json.dumps(header, separators=(",", ":")).encode())
    return Setup(run, ["checkpoint-20/model.safetensors", "offset", "model.embed_tokens.weight"])


def header_size_huge(folder):
    run = tiny_run(folder)
    file = run / "checkpoint-10" / "model.safetensors"
    raw = file.read_bytes()
    file.write_bytes(struct.pack("<Q", 2**62) + raw[8:])
    return Setup(run, ["checkpoint-10/model.safetensors", "large"])


def index_missing_shard(folder):
    run = sharded_run(folder)
    weight_map = json.loads((run / "checkpoint-20" / "model.safetensors.index.json").read_text())["weight_map"]
    shard = weight_map[TENSOR]
    (run / "checkpoint-20" / shard).unlink()
    return Setup(run, [f"checkpoint-20/{shard}", "tensor '"])


def index_shard_lacks_tensor(folder):
    run = sharded_run(folder)
    index_path = run / "checkpoint-20" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shards = sorted(set(index["weight_map"].values()))
    wrong = next(shard for shard in shards if shard != index["weight_map"][TENSOR])
    index["weight_map"][TENSOR] = wrong
    index_path.write_text(json.dumps(index))
    return Setup(run, [f"checkpoint-20/{wrong}", TENSOR])


def tensor_missing(folder):
    run = tiny_run(folder)
    rewrite(run / "checkpoint-20", lambda state: state.pop(TENSOR))
    return Setup(run, ["checkpoint-20", TENSOR])


def tensor_extra(folder):
    run = tiny_run(folder)
    rewrite(run / "checkpoint-30", lambda state: state.update({"model.layers.1.extra.weight": torch.zeros(4)}))
    return Setup(run, ["checkpoint-30", "model.layers.1.extra.weight"])


def shape_mismatch(folder):
    run = tiny_run(folder)
    rewrite(run / "checkpoint-20", lambda state: state.update({TENSOR: state[TENSOR][:-1].clone()}))
    return Setup(run, ["checkpoint-20/model.safetensors", TENSOR])


def mixed_dtypes(folder):
    run = tiny_run(folder)
    rewrite(run / "checkpoint-20", lambda state: state.update({name: tensor.to(torch.bfloat16)
                                                               for name, tensor in state.items()}))
    return Setup(run, ["mix dtypes", "bfloat16", "float32", "float64"], succeeds=True)


def nan_values(folder):
    run = tiny_run(folder)
    rewrite(run / "checkpoint-30", lambda state: state[TENSOR].view(-1).__setitem__(7, float("nan")))
    return Setup(run, ["checkpoint-30/model.safetensors", TENSOR, "NaN"])


def inf_values(folder):
    run = tiny_run(folder)
    rewrite(run / "checkpoint-10", lambda state: state["model.norm.weight"].__setitem__(3, float("inf")))
    return Setup(run, ["checkpoint-10/model.safetensors", "model.norm.weight", "Inf"])


def nan_in_base(folder):
    run = tiny_run(folder)
    rewrite(run / "checkpoint-0", lambda state: state[TENSOR].view(-1).__setitem__(0, float("nan")))
    return Setup(run, ["checkpoint-0/model.safetensors", TENSOR, "NaN"])


def duplicate_steps(folder):
    run = tiny_run(folder)
    shutil.copytree(run / "checkpoint-10", run / "global_step_10")
    return Setup(run, ["duplicate step 10", "checkpoint-10", "global_step_10"])


def non_numeric_step(folder):
    run = tiny_run(folder)
    shutil.copytree(run / "checkpoint-30", run / "checkpoint-best")
    return Setup(run, ["checkpoint-best", "numeric step"])


def step_disagrees_with_trainer_state(folder):
    run = tiny_run(folder)
    shutil.copytree(run / "checkpoint-30", run / "checkpoint-40")  # copied under the wrong name
    return Setup(run, ["checkpoint-40/trainer_state.json", "global_step 30"])


def symlink_loop(folder):
    run = tiny_run(folder)
    (run / "checkpoint-40").symlink_to(run / "checkpoint-50")
    (run / "checkpoint-50").symlink_to(run / "checkpoint-40")
    return Setup(run, ["checkpoint-40"])


def empty_folder(folder):
    run = folder / "run"
    run.mkdir()
    return Setup(run, [str(run), "no checkpoints found"])


def base_only(folder):
    run = tiny_run(folder)
    for step in STEPS:
        shutil.rmtree(run / f"checkpoint-{step}")
    return Setup(run, [str(run), "no checkpoint after the base"])


def single_checkpoint(folder):
    run = tiny_run(folder)
    for step in STEPS[1:]:
        shutil.rmtree(run / f"checkpoint-{step}")
    return Setup(run, [str(run), "only one checkpoint (step 10)"])


def no_base(folder):
    run = tiny_run(folder)
    shutil.rmtree(run / "checkpoint-0")
    return Setup(run, [str(run), "--base"])


def manifest_missing_path(folder):
    run = tiny_run(folder)
    manifest = run / "manifest.csv"
    manifest.write_text("step,path\n0,checkpoint-0\n10,checkpoint-10\n20,checkpoint-twenty\n")
    return Setup(manifest, ["checkpoint-twenty", "step 20"])


def code_running_pickle(folder):
    run = tiny_run(folder)
    (run / "checkpoint-20" / "model.safetensors").unlink()
    marker = folder / "payload-ran"
    write_code_running_pickle(run / "checkpoint-20" / "pytorch_model.bin", marker)
    return Setup(run, ["checkpoint-20/pytorch_model.bin", "weights_only", "mkdir"], marker=marker)


def unreadable_file(folder):
    run = tiny_run(folder)
    (run / "checkpoint-20" / "model.safetensors").chmod(0)
    return Setup(run, ["checkpoint-20/model.safetensors", "Permission denied"], drop_file_permissions=True)


def weights_path_is_a_folder(folder):
    run = tiny_run(folder)
    file = run / "checkpoint-30" / "model.safetensors"
    file.unlink()
    file.mkdir()
    return Setup(run, ["checkpoint-30/model.safetensors", "Is a directory"])


def cache_inside_run(folder):
    run = tiny_run(folder)
    return Setup(run, [str(run / "checkpoint-10" / "cache"), "cache folder"],
                 args=["--cache-dir", str(run / "checkpoint-10" / "cache")])


def output_inside_run(folder):
    run = tiny_run(folder)
    return Setup(run, [str(run / "results"), "output folder"], args=["--out", str(run / "results")])


def output_is_a_file(folder):
    run = tiny_run(folder)
    (folder / "results.txt").write_text("keep me\n")
    return Setup(run, [str(folder / "results.txt"), "existing file"], args=["--out", str(folder / "results.txt")])


def export_destination_is_a_file(folder):
    run = tiny_run(folder)
    (folder / "exported").write_text("someone's notes\n")
    return Setup(run, [str(folder / "exported"), "existing file"], command="extrapolate",
                 args=["--out", str(folder / "exported")])


def export_destination_exists(folder):
    run = tiny_run(folder)
    (folder / "exported").mkdir()
    (folder / "exported" / "model.safetensors").write_bytes(b"an earlier export")
    return Setup(run, [str(folder / "exported"), "already exists", "--force"], command="extrapolate",
                 args=["--out", str(folder / "exported")])


def export_destination_inside_run(folder):
    run = tiny_run(folder)
    inside = run / "checkpoint-30" / "extrapolated"
    return Setup(run, [str(inside), "must not be inside"], command="extrapolate", args=["--out", str(inside)])


def export_disk_full(folder):
    run = tiny_run(folder)  # ~90 kB of weights: the export's shard outgrows the limit, the Gram cache does not
    return Setup(run, [str(folder / "out"), "cannot write the export", "File too large"], command="extrapolate",
                 file_size_limit=40_000)


def analysis_disk_full(folder):
    run = tiny_run(folder)  # the Gram cache (~5 kB) fits; tensors.csv (~7 kB) does not
    return Setup(run, [str(folder / "out" / "tensors.csv"), "cannot write", "File too large"],
                 file_size_limit=6_000)


CORPUS = [
    # ---- damaged safetensors files
    pytest.param(truncated_shard, id="truncated shard"),
    pytest.param(empty_shard, id="zero-byte shard"),
    pytest.param(header_not_json, id="header is not JSON"),
    pytest.param(header_offsets_past_end, id="header offsets past end of file"),
    pytest.param(header_size_huge, id="huge declared header size"),
    # ---- sharded checkpoints whose index lies
    pytest.param(index_missing_shard, id="index names a missing shard"),
    pytest.param(index_shard_lacks_tensor, id="index shard lacks a listed tensor"),
    # ---- checkpoints that disagree with each other
    pytest.param(tensor_missing, id="tensor missing from one checkpoint"),
    pytest.param(tensor_extra, id="tensor not in the base"),
    pytest.param(shape_mismatch, id="shape mismatch"),
    pytest.param(mixed_dtypes, id="mixed dtypes (allowed, with a note)"),
    pytest.param(nan_values, id="NaN in one checkpoint"),
    pytest.param(inf_values, id="Inf in one checkpoint"),
    pytest.param(nan_in_base, id="NaN in the base"),
    # ---- folder layout
    pytest.param(duplicate_steps, id="duplicate steps checkpoint-10 and global_step_10"),
    pytest.param(non_numeric_step, id="non-numeric step name"),
    pytest.param(step_disagrees_with_trainer_state, id="folder step disagrees with trainer_state.json"),
    pytest.param(symlink_loop, id="symlink loop"),
    pytest.param(empty_folder, id="empty folder"),
    pytest.param(base_only, id="base only"),
    pytest.param(single_checkpoint, id="single checkpoint after the base"),
    pytest.param(no_base, id="no step-0 base"),
    pytest.param(manifest_missing_path, id="manifest names a missing checkpoint"),
    # ---- files that must not be read
    pytest.param(code_running_pickle, id="pickle that runs code"),
    pytest.param(unreadable_file, id="unreadable file (permission denied)"),
    pytest.param(weights_path_is_a_folder, id="weights path is a folder"),
    # ---- where results go
    pytest.param(cache_inside_run, id="cache folder inside the run"),
    pytest.param(output_inside_run, id="output folder inside the run"),
    pytest.param(output_is_a_file, id="output path is an existing file"),
    pytest.param(analysis_disk_full, id="analysis tables on a full disk (write fails)"),
    # ---- exports (relex extrapolate)
    pytest.param(export_destination_is_a_file, id="export destination is an existing file"),
    pytest.param(export_destination_exists, id="export destination exists, no --force"),
    pytest.param(export_destination_inside_run, id="export destination inside the run"),
    pytest.param(export_disk_full, id="export on a full disk (write fails)"),
]


# ---------------------------------------------------------------- running the CLI

def snapshot(folder: Path) -> dict:
    """Every entry under `folder` (links not followed): kind, size and mtime."""
    entries = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            info = path.lstat()
            entries[str(path.relative_to(folder))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return entries


# Run as root, mode 000 denies nothing. This prefix drops root's right to read any file
# (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the bounding set, then execs the command, so the
# permission error the test sees is the real one a normal user would get.
DROP_ROOT_FILE_ACCESS = [sys.executable, "-c", """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for capability in (1, 2):
    if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        sys.exit("cannot drop root's file access: " + os.strerror(ctypes.get_errno()))
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""]


@functools.cache
def root_cannot_be_denied() -> bool:
    """True when running as root and root's file access cannot be dropped: mode 000 then denies nothing."""
    if os.geteuid() != 0:
        return False
    return subprocess.run([*DROP_ROOT_FILE_ACCESS, "-c", "pass"], capture_output=True).returncode != 0


# A full disk, for real: the kernel refuses writes past RLIMIT_FSIZE with EFBIG (Python ignores
# SIGXFSZ), mid-file, exactly where ENOSPC would hit. No tmpfs needs mounting for it.
LIMIT_FILE_SIZE = [sys.executable, "-c", """
import os, resource, sys
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""]


def relex(*args, drop_file_permissions=False, file_size_limit=None, timeout=120) -> subprocess.CompletedProcess:
    """Run `python -m relex_core ...` from the repository root (as a user mode 000 denies, if asked)."""
    command = [sys.executable, "-m", "relex_core", *map(str, args)]
    if drop_file_permissions and os.geteuid() == 0 and not root_cannot_be_denied():
        command = [*DROP_ROOT_FILE_ACCESS, *command[1:]]
    if file_size_limit is not None:
        command = [*LIMIT_FILE_SIZE, str(file_size_limit), *command[1:]]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@dataclass
class Outcome:
    setup: Setup
    result: subprocess.CompletedProcess
    before: dict
    after: dict
    out: Path
    cache_dir: Path


def analyse_case(build, folder: Path) -> Outcome:
    """Build the case in `folder`, snapshot the folder (run, destinations, everything), run the CLI."""
    setup = build(folder)
    args = {"--out": folder / "out", "--cache-dir": folder / "cache"}
    if setup.command == "extrapolate":
        args["--target"] = STEPS[-1] + 10
    args.update(zip(setup.args[::2], setup.args[1::2]))
    before = snapshot(folder)
    result = relex(setup.command, setup.run, *(item for pair in args.items() for item in pair),
                   drop_file_permissions=setup.drop_file_permissions, file_size_limit=setup.file_size_limit)
    return Outcome(setup, result, before, snapshot(folder), Path(args["--out"]), Path(args["--cache-dir"]))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Build every case and run the CLI on them, two subprocesses at a time."""
    builds = [param.values[0] for param in CORPUS]
    folders = [tmp_path_factory.mktemp(build.__name__) for build in builds]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(analyse_case, builds, folders))
    return {build: outcome for build, outcome in zip(builds, results)}


@pytest.mark.parametrize("build", CORPUS)
def test_bad_input_fails_cleanly(build, outcomes):
    outcome = outcomes[build]
    setup, result = outcome.setup, outcome.result
    if setup.drop_file_permissions and root_cannot_be_denied():
        pytest.skip("running as root without CAP_SETPCAP: mode 000 cannot deny reads here")
    assert "Traceback" not in result.stderr
    if setup.succeeds:
        assert result.returncode == 0, result.stderr
        notes = [line for line in result.stderr.splitlines() if line.startswith("relex: note:")]
        assert len(notes) == 1 and all(fragment in notes[0] for fragment in setup.names), result.stderr
        assert (outcome.out / "tensors.csv").is_file()
    else:
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().split("\n")
        assert len(lines) == 1, result.stderr
        line = lines[0]
        assert line.startswith("relex: error: "), line
        for fragment in setup.names:  # case-insensitive: some words come from safetensors or the OS
            assert fragment.lower() in line.lower(), f"{fragment!r} not in {line!r}"
    if setup.marker is not None:
        assert not setup.marker.exists(), "the pickle's code ran"
    # Nothing created or changed: not in the run, not at the destination, no half-written output
    # beside it. Only the cache folder may appear, and only the output folder of a success.
    def unchanged_part(snapshot_):
        allowed = ("cache", "out") if setup.succeeds else ("cache",)
        return {path: entry for path, entry in snapshot_.items() if Path(path).parts[0] not in allowed}
    assert unchanged_part(outcome.after) == unchanged_part(outcome.before)
    # The cache folder holds nothing, or one cache that a later analysis trusts.
    cache_files = sorted(outcome.cache_dir.iterdir()) if outcome.cache_dir.is_dir() else []
    if setup.succeeds or cache_files:
        rerun = compute_gram(open_run(setup.run), cache_dir=outcome.cache_dir, progress=False)
        assert rerun.from_cache and cache_files == [cache.cache_path(outcome.cache_dir, rerun.fingerprint)]


def test_the_pickle_payload_is_live(tmp_path):
    """The refused pickle really runs code when loaded without weights_only, so the test above means something."""
    marker = tmp_path / "payload-ran"
    write_code_running_pickle(tmp_path / "pytorch_model.bin", marker)
    torch.load(tmp_path / "pytorch_model.bin", weights_only=False)
    assert marker.is_dir()
