"""Fixtures for the reader tests: real FSDP2 and DCP checkpoints, written once per test session."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def native(tmp_path_factory) -> Path:
    """The folder tests/io/native_checkpoints.py writes (shared by tests: `copy_run` before damaging).

    Written by torch itself in a subprocess (it forks the training ranks, which the pytest
    process should not do once it has run torch code on several threads).
    """
    folder = tmp_path_factory.mktemp("native")
    result = subprocess.run([sys.executable, "-m", "tests.io.native_checkpoints", str(folder)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def copy_run(native: Path, name: str, destination: Path) -> Path:
    """A writable copy of one fixture run (and of the base), for tests that damage it."""
    destination.mkdir(parents=True, exist_ok=True)
    for part in (name, "base"):
        if not (destination / part).exists():
            shutil.copytree(native / part, destination / part)
    return destination / name
