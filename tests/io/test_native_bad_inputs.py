"""Damaged native checkpoints, as a spec table: one line naming the file, exit code 2, nothing written.

Each case copies a real fixture run (verl FSDP shards or torchtitan DCP, written by torch) and
damages it the way crashed jobs, partial copies and mixed-up folders do; then `relex analyze`
runs on it (in this process) and must fail with a single `relex: error:` line naming the file,
leaving the run, the destination and the cache folder as they were.
"""

import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from relex_core.cli import main
from tests.io.conftest import copy_run
from tests.io.test_bad_inputs import RunsCode, snapshot


@dataclass
class Case:
    args: list                # the run arguments of `relex analyze`
    names: list               # fragments the error line must contain
    marker: Path | None = None


def missing_rank_file(native, folder):
    run = copy_run(native, "verl", folder)
    (run / "global_step_4/actor/model_world_size_3_rank_1.pt").unlink()
    return Case([run, "--base", folder / "base"], ["global_step_4/actor/model_world_size_3_rank_1.pt", "missing"])


def world_size_disagrees_with_fsdp_config(native, folder):
    run = copy_run(native, "verl", folder)
    (run / "global_step_2/actor/fsdp_config.json").write_text('{"FSDP_version": 2, "world_size": 4}')
    return Case([run, "--base", folder / "base"], ["global_step_2/actor/fsdp_config.json", "world_size 4"])


def rank_file_from_another_run(native, folder):
    run = copy_run(native, "verl", folder)
    target = run / "global_step_4/actor/model_world_size_3_rank_2.pt"
    shutil.copy(native / "other/actor/model_world_size_3_rank_2.pt", target)
    return Case([run, "--base", folder / "base"], ["global_step_4/actor/model_world_size_3_rank_2.pt", "tensor '",
                                                  "another step or run"])


def truncated_distcp(native, folder):
    run = copy_run(native, "titan", folder)
    file = run / "step-4/__1_0.distcp"
    os.truncate(file, file.stat().st_size // 2)
    return Case([run], ["step-4/__1_0.distcp", "truncated"])


def metadata_names_a_missing_file(native, folder):
    run = copy_run(native, "titan", folder)
    (run / "step-2/__2_0.distcp").unlink()
    return Case([run], ["step-2/__2_0.distcp", "named in .metadata but missing"])


def rank_file_pickle_runs_code(native, folder):
    run = copy_run(native, "verl", folder)
    marker = folder / "payload-ran"
    real = torch.load(run / "global_step_4/actor/model_world_size_3_rank_0.pt", weights_only=True)
    torch.save({**real, "payload": RunsCode(marker)}, run / "global_step_4/actor/model_world_size_3_rank_0.pt")
    return Case([run, "--base", folder / "base"], ["global_step_4/actor/model_world_size_3_rank_0.pt",
                                                  "weights_only", "mkdir"], marker=marker)


def metadata_pickle_runs_code(native, folder):
    run = copy_run(native, "titan", folder)
    marker = folder / "payload-ran"
    (run / "step-4/.metadata").write_bytes(pickle.dumps(RunsCode(marker)))
    return Case([run], ["step-4/.metadata", "refused to unpickle", "mkdir"], marker=marker)


CASES = [
    pytest.param(missing_rank_file, id="missing rank file"),
    pytest.param(world_size_disagrees_with_fsdp_config, id="world size disagrees with fsdp_config.json"),
    pytest.param(rank_file_from_another_run, id="rank file from another run, other shapes"),
    pytest.param(truncated_distcp, id="truncated .distcp"),
    pytest.param(metadata_names_a_missing_file, id=".metadata names a missing file"),
    pytest.param(rank_file_pickle_runs_code, id="model rank file whose pickle runs code"),
    pytest.param(metadata_pickle_runs_code, id=".metadata whose pickle runs code"),
]


@pytest.mark.parametrize("build", CASES)
def test_damaged_native_checkpoint_fails_cleanly(build, native, tmp_path, capsys):
    case = build(native, tmp_path)
    before = snapshot(tmp_path)
    code = main(["analyze", *map(str, case.args), "--out", str(tmp_path / "out"), "--cache-dir",
                 str(tmp_path / "cache"), "--quiet"])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    lines = stderr.strip().split("\n")
    assert len(lines) == 1 and lines[0].startswith("relex: error: "), stderr
    for fragment in case.names:
        assert fragment.lower() in lines[0].lower(), f"{fragment!r} not in {lines[0]!r}"
    if case.marker is not None:
        assert not case.marker.exists(), "the pickle's code ran"
    assert snapshot(tmp_path) == before  # no output, no cache, the run unchanged
