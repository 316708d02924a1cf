"""--retain: a checkpoint's files get a second name in relex's cache (a copy across filesystems)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from relex_core import open_run
from relex_core.live.retain import retain, retain_root

SAMPLE_RUN = Path(__file__).resolve().parents[2] / "sample_data" / "run"


@pytest.fixture
def run_folder(tmp_path):
    for step in (0, 48, 96):
        shutil.copytree(SAMPLE_RUN / f"checkpoint-{step}", tmp_path / "run" / f"checkpoint-{step}")
    return tmp_path / "run"


def retained_files(original: Path, copy: Path) -> list[tuple[Path, Path]]:
    return [(file, copy / file.relative_to(original)) for file in sorted(original.rglob("*")) if file.is_file()]


def test_a_retained_checkpoint_is_a_hard_link_that_outlives_the_trainers_delete(run_folder, tmp_path):
    run = open_run(run_folder)
    checkpoint = run.checkpoints[0]
    kept = retain(checkpoint, run, retain_root(tmp_path / "cache", run))
    assert kept.step == checkpoint.step and kept.format == checkpoint.format
    pairs = retained_files(checkpoint.path, kept.path)
    assert len(pairs) >= 5  # weights, config, tokenizer, trainer_state, ...
    assert all(os.path.samefile(original, copy) for original, copy in pairs)  # same inode: no extra disk
    contents = {copy: copy.read_bytes() for _, copy in pairs}
    shutil.rmtree(checkpoint.path)  # rotation
    assert all(copy.read_bytes() == data for copy, data in contents.items())
    assert retain(run.checkpoints[1], run, retain_root(tmp_path / "cache", run)).path.is_dir()
    assert sorted(path.name for path in run_folder.iterdir()) == ["checkpoint-0", "checkpoint-96"]  # run untouched


OTHER_FILESYSTEM = Path("/dev/shm").is_dir() and os.stat("/dev/shm").st_dev != os.stat(tempfile.gettempdir()).st_dev


@pytest.mark.skipif(not OTHER_FILESYSTEM, reason="needs a second filesystem (/dev/shm)")
def test_across_filesystems_the_files_are_copied(run_folder):
    run = open_run(run_folder)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as cache:
        kept = retain(run.checkpoints[0], run, retain_root(cache, run))
        pairs = retained_files(run.checkpoints[0].path, kept.path)
        assert pairs and all(not os.path.samefile(original, copy) and original.read_bytes() == copy.read_bytes()
                             for original, copy in pairs)
        again = retain(run.checkpoints[0], run, retain_root(cache, run))  # a second call keeps what is there
        assert again == kept
