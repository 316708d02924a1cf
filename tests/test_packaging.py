"""Packaging: an engine without the dashboard's stack, lower bounds in pyproject.toml, exact pins in
requirements*.txt (one list, checked both ways), and a wheel that carries what it must."""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RUN = REPO / "sample_data" / "run"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = PYPROJECT["optional-dependencies"]


def pins(path: Path) -> dict:
    """{name: version} of the `name==version` lines of a requirements file, its -r includes followed."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found.update(pins(path.parent / line[3:].strip()))
        elif line and not line.startswith("-"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{path.name}: {line} is not an exact pin"
            found[requirement.name] = specifier.version
    return found


def declared(requirements) -> dict:
    return {Requirement(text).name: Requirement(text) for text in requirements}


def test_the_engine_needs_no_dashboard_stack_and_pins_no_exact_version():
    core = declared(PYPROJECT["dependencies"])
    assert {"torch", "numpy", "safetensors", "pandas", "scipy", "scikit-learn", "tqdm", "threadpoolctl"} == set(core)
    for requirement in [*core.values(), *(Requirement(text) for extra in EXTRAS.values() for text in extra)]:
        assert requirement.specifier, f"{requirement.name} has no lower bound"
        assert all(specifier.operator == ">=" for specifier in requirement.specifier), requirement
    assert set(declared(EXTRAS["dashboard"])) == {"streamlit", "plotly"}
    assert {"dashboard", "eval", "ray", "tensorboard", "test"} <= set(EXTRAS)


def test_every_dependency_has_one_tested_pin_and_every_pin_is_a_dependency():
    runtime, development = pins(REPO / "requirements.txt"), pins(REPO / "requirements-dev.txt")
    every = {**declared(PYPROJECT["dependencies"]),
             **{name: requirement for extra in EXTRAS.values() for name, requirement in declared(extra).items()}}
    assert set(development) == set(every)  # one list: nothing pinned that pyproject.toml does not declare
    assert set(runtime) == set(declared(PYPROJECT["dependencies"])) | set(declared(EXTRAS["dashboard"]))
    for name, version in development.items():
        assert every[name].specifier.contains(version), f"pin {name}=={version} is below pyproject's {every[name]}"
        installed = Version(importlib.metadata.version(name)).base_version  # torch 2.13.0+cpu is 2.13.0
        assert installed == version, f"{name}: {installed} installed, {version} pinned"
    assert "-e .[dashboard]" in (REPO / "requirements.txt").read_text()
    assert "-e .[dashboard,eval,ray,tensorboard,test]" in (REPO / "requirements-dev.txt").read_text()


def build_wheel(source: Path, out: Path) -> list[str]:
    """Build relex's wheel from `source` with the installed setuptools (offline); the files it holds."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("relex-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_ships_the_engine_and_the_dashboard_with_its_page_scripts(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "relex_core", source / "relex_core", ignore=shutil.ignore_patterns("__pycache__"))
    without_dashboard = build_wheel(source, tmp_path / "plain")
    assert "relex_core/stream.py" in without_dashboard and "relex_core/io/reader.py" in without_dashboard
    assert not any(name.startswith(("relex_dashboard/", "tests/", "bench/")) for name in without_dashboard)
    # the layout the dashboard moves to: a package with its Streamlit page scripts beside it
    dashboard = source / "relex_dashboard"
    (dashboard / "app_pages").mkdir(parents=True)
    for name in ("__init__.py", "app.py", "state.py"):
        (dashboard / name).write_text("")
    (dashboard / "app_pages" / "overview.py").write_text("")
    files = build_wheel(source, tmp_path / "with-dashboard")
    assert {"relex_dashboard/app.py", "relex_dashboard/state.py", "relex_dashboard/app_pages/overview.py"} <= set(files)
    entry_points = next(name for name in files if name.endswith("entry_points.txt"))
    with zipfile.ZipFile(next((tmp_path / "with-dashboard").glob("*.whl"))) as archive:
        assert "relex = relex_core.cli:main" in archive.read(entry_points).decode()


# ---------------------------------------------------------------- the engine without streamlit and plotly

# On PYTHONPATH, this sitecustomize makes `import streamlit` and `import plotly` fail in the child,
# as they would where only `pip install relex` ran.
BLOCKER = '''
import sys

class NoDashboardStack:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("streamlit", "plotly"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, NoDashboardStack())
'''


@pytest.fixture(scope="module")
def without_dashboard_stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocker")
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return os.environ | {"PYTHONPATH": os.pathsep.join([str(folder), str(REPO)])}


def run_python(arguments, env, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *arguments], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, **options)


def test_the_blocker_really_blocks(without_dashboard_stack):
    done = run_python(["-c", "import streamlit"], without_dashboard_stack)
    assert done.returncode == 1 and "blocked by the test" in done.stderr


def test_analyze_and_extrapolate_run_without_streamlit_and_plotly(without_dashboard_stack, tmp_path):
    common = ["--cache-dir", str(tmp_path / "cache"), "--quiet"]
    analyzed = run_python(["-m", "relex_core", "analyze", str(SAMPLE_RUN), "--out", str(tmp_path / "tables"),
                           *common], without_dashboard_stack)
    assert analyzed.returncode == 0, analyzed.stderr
    assert (tmp_path / "tables" / "tensors.csv").is_file()
    exported = run_python(["-m", "relex_core", "extrapolate", str(SAMPLE_RUN), "--window", ":480", "--target",
                           "960", "--out", str(tmp_path / "export"), *common], without_dashboard_stack)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "export" / "model.safetensors").is_file()


def test_the_python_api_and_every_engine_module_import_without_streamlit_and_plotly(without_dashboard_stack,
                                                                                     tmp_path):
    script = f"""
import importlib, pkgutil, sys
import relex_core
from relex_core import (WindowFit, compute_gram, extrapolate, open_run, reconstruct, suggest_window,
                        update_spectra_frame, window_end_backtests)
from relex_core.selection import default_holdout

# every engine module imports without streamlit or plotly (__main__ would run the CLI)
for module in pkgutil.walk_packages(relex_core.__path__, "relex_core."):
    if not module.name.startswith("relex_core.__main__"):
        importlib.import_module(module.name)
run_gram = compute_gram(open_run({str(SAMPLE_RUN)!r}), cache_dir={str(tmp_path / "cache")!r}, progress=False)
fit = WindowFit(run_gram, window=":480", rank=2)
fit.tensors_frame(); fit.summary_frame("module"); fit.backtest_frame()
steps = [int(step) for step in run_gram.steps]
print(suggest_window(window_end_backtests(run_gram, steps[0]), steps[0], default_holdout(steps)).reason)
update_spectra_frame(run_gram, steps[3], k=2)
extrapolate(fit, [960, 1200], {str(tmp_path / "out")!r}, progress=False)
reconstruct(fit, steps[2], {str(tmp_path / "rebuilt")!r}, progress=False)
print(sorted(name for name in sys.modules if name.split(".")[0] in ("streamlit", "plotly")))
"""
    done = run_python(["-c", script], without_dashboard_stack)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "step-1200" / "model.safetensors").is_file()


def test_relex_dashboard_without_streamlit_says_what_to_install(without_dashboard_stack):
    done = run_python(["-m", "relex_core", "dashboard"], without_dashboard_stack)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "relex: error: the dashboard needs streamlit and plotly: pip install 'relex[dashboard]'"]
