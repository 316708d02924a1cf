"""Older relex code beside the current one: the package `relex_core` at a git commit, importable
under another name in the same process (for side-by-side studies in bench/STUDIES.md).

    before = package_at("feb310b")                       # relex_before, from a temporary folder
    importlib.import_module("relex_before.export").extrapolate(...)

The whole package is taken from git, so the old modules import each other, never the current ones.
"""

import atexit
import importlib.util
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def extract_at(ref: str) -> Path:
    """A temporary folder holding relex_core/ as it was at `ref` (removed when the process ends)."""
    folder = Path(tempfile.mkdtemp(prefix="relex-before-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    archive = subprocess.run(["git", "archive", ref, "relex_core"], cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def package_at(ref: str, name: str = "relex_before"):
    """relex_core at git `ref` as the package `name` (its submodules load on import, as usual)."""
    if name in sys.modules:
        return sys.modules[name]
    source = extract_at(ref) / "relex_core"
    spec = importlib.util.spec_from_file_location(name, source / "__init__.py",
                                                  submodule_search_locations=[str(source)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package
