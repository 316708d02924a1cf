"""Faults and concurrency: a killed analysis, two analyses at once, a damaged cache.

The Gram cache is written to a temporary file and renamed, and checked when read, so no
interruption can leave a cache that a later analysis trusts: the later analysis does a fresh
pass and gets the same numbers as a clean one.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from relex_core import cache, compute_gram, open_run
from relex_core.cli import main
from relex_core.synthetic import make_run

REPO = Path(__file__).resolve().parents[1]
# Long thin tensors: with a tiny --chunk-mb the pass reads them in hundreds of chunks and takes
# seconds, while the files stay a few MB and are written in a fraction of a second.
SLOW_SHAPES = {f"model.layers.{layer}.mlp.up_proj.weight": (2048, 16) for layer in range(4)}
SLOW_CHUNK_MB = "0.01"


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("slow") / "run", steps=tuple(range(10, 90, 10)), shapes=SLOW_SHAPES)


@pytest.fixture(scope="module")
def reference(slow_run, tmp_path_factory):
    """A clean analysis of the slow run: its CSVs (in-process CLI) and its Gram (fresh pass)."""
    folder = tmp_path_factory.mktemp("reference")
    assert main(["analyze", str(slow_run), "--out", str(folder / "out"), "--cache-dir", str(folder / "cache"),
                 "--quiet"]) == 0
    gram = compute_gram(open_run(slow_run), cache_dir=folder / "cache", use_cache=False, progress=False).gram
    return folder / "out", gram


def as_in_a_terminal() -> None:
    """Ctrl-C reaches the child as it reaches a command run in a terminal. Started from a
    background job (`cmd &` in a script), the tests would inherit SIGINT ignored, and Python
    then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def analyze(run, out, cache_dir, *extra, env=None) -> subprocess.Popen:
    command = [sys.executable, "-m", "relex_core", "analyze", str(run), "--out", str(out),
               "--cache-dir", str(cache_dir), *extra]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=as_in_a_terminal)


def finish(process: subprocess.Popen, timeout=120) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def reads_weights(pid: int) -> bool:
    """True once the process holds a checkpoint file open for reading rows, i.e. the pass has begun
    (the reader opens its descriptors on the first read)."""
    try:
        return any(os.readlink(entry).endswith(".safetensors") for entry in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def same_csvs(folder: Path, reference_folder: Path) -> None:
    names = sorted(path.name for path in reference_folder.glob("*.csv"))
    assert names and sorted(path.name for path in folder.glob("*.csv")) == names
    for name in names:
        assert (folder / name).read_text() == (reference_folder / name).read_text(), name


def cache_files(cache_dir: Path) -> list[str]:
    return sorted(path.name for path in cache_dir.iterdir()) if cache_dir.is_dir() else []


def assert_trusted_cache_matches(run: Path, cache_dir: Path, gram: np.ndarray) -> str:
    """The cache a later analysis finds is valid and holds the clean Gram; returns its file name."""
    cached = compute_gram(open_run(run), cache_dir=cache_dir, progress=False)
    assert cached.from_cache
    np.testing.assert_allclose(cached.gram, gram, rtol=1e-12, atol=0)
    return cache.cache_path(cache_dir, cached.fingerprint).name


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to see when the pass starts")
def test_analysis_killed_mid_pass_leaves_no_trusted_cache(slow_run, reference, tmp_path):
    reference_out, reference_gram = reference
    cache_dir = tmp_path / "cache"
    process = analyze(slow_run, tmp_path / "killed", cache_dir, "--chunk-mb", SLOW_CHUNK_MB)
    deadline = time.monotonic() + 60
    while not reads_weights(process.pid):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the analysis never opened a checkpoint"
        time.sleep(0.01)
    time.sleep(0.2)
    assert process.poll() is None, "the pass finished before it could be killed; make SLOW_SHAPES bigger"
    process.send_signal(signal.SIGKILL)
    assert finish(process)[0] == -signal.SIGKILL
    assert not any(name.startswith("gram-") for name in cache_files(cache_dir)), "killed after the pass, not in it"

    returncode, stderr = finish(analyze(slow_run, tmp_path / "after", cache_dir, "--quiet"))
    assert returncode == 0, stderr
    same_csvs(tmp_path / "after", reference_out)
    assert_trusted_cache_matches(slow_run, cache_dir, reference_gram)


KILL_BEFORE_RENAME = """
import os, signal
def _killed_before_rename(fd):  # the cache is written and fsynced just before its rename
    os.kill(os.getpid(), signal.SIGKILL)
os.fsync = _killed_before_rename
"""


def test_analysis_killed_while_writing_the_cache_leaves_nothing_trusted(slow_run, reference, tmp_path):
    reference_out, reference_gram = reference
    injection = tmp_path / "inject"
    injection.mkdir()
    (injection / "sitecustomize.py").write_text(KILL_BEFORE_RENAME)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(injection), os.environ.get("PYTHONPATH", "")])}
    cache_dir = tmp_path / "cache"
    returncode, _ = finish(analyze(slow_run, tmp_path / "killed", cache_dir, "--quiet", env=env))
    assert returncode == -signal.SIGKILL
    left = cache_files(cache_dir)
    assert len(left) == 1 and left[0].startswith(".gram-") and left[0].endswith(".tmp"), left

    returncode, stderr = finish(analyze(slow_run, tmp_path / "after", cache_dir, "--quiet"))
    assert returncode == 0, stderr
    same_csvs(tmp_path / "after", reference_out)
    assert_trusted_cache_matches(slow_run, cache_dir, reference_gram)


def test_two_analyses_of_one_run_at_once_agree(slow_run, reference, tmp_path):
    _, reference_gram = reference
    cache_dir = tmp_path / "cache"
    first = analyze(slow_run, tmp_path / "first", cache_dir, "--chunk-mb", "0.2", "--quiet")
    second = analyze(slow_run, tmp_path / "second", cache_dir, "--chunk-mb", "0.2", "--quiet")
    for process in (first, second):
        returncode, stderr = finish(process)
        assert returncode == 0, stderr
    same_csvs(tmp_path / "second", tmp_path / "first")  # same chunking, so the same numbers to the last digit
    assert cache_files(cache_dir) == [assert_trusted_cache_matches(slow_run, cache_dir, reference_gram)]


# ---- a damaged cache file under the right name is a miss, never trusted and never an error

def truncated(data: bytes, arrays: dict) -> bytes:
    return data[: len(data) // 2]


def garbage(data: bytes, arrays: dict) -> bytes:
    return b"PK\x03\x04 not really a zip file" * 10


def _resaved(arrays: dict, **changes) -> bytes:
    import io
    buffer = io.BytesIO()
    np.savez(buffer, **{**arrays, **changes})
    return buffer.getvalue()


def nan_in_gram(data: bytes, arrays: dict) -> bytes:
    gram = arrays["gram"].copy()
    gram[0, 0, 0] = np.nan
    return _resaved(arrays, gram=gram)


def gram_of_wrong_shape(data: bytes, arrays: dict) -> bytes:
    return _resaved(arrays, gram=arrays["gram"][:, :-1, :-1])


def header_not_an_object(data: bytes, arrays: dict) -> bytes:
    return _resaved(arrays, header=np.frombuffer(b"[1, 2, 3]", dtype=np.uint8))


def steps_of_wrong_shape(data: bytes, arrays: dict) -> bytes:
    return _resaved(arrays, steps=np.stack([arrays["steps"], arrays["steps"]]))


@pytest.mark.parametrize("damage", [truncated, garbage, nan_in_gram, gram_of_wrong_shape, header_not_an_object,
                                    steps_of_wrong_shape])
def test_damaged_cache_is_recomputed_and_replaced(damage, tmp_path):
    run = make_run(tmp_path / "run", steps=(10, 20, 30), shapes={"model.layers.0.mlp.up_proj.weight": (8, 4),
                                                                 "model.norm.weight": (4,)})
    cache_dir = tmp_path / "cache"
    clean = compute_gram(open_run(run), cache_dir=cache_dir, progress=False)
    path = cache.cache_path(cache_dir, clean.fingerprint)
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    path.write_bytes(damage(path.read_bytes(), arrays))

    again = compute_gram(open_run(run), cache_dir=cache_dir, progress=False)
    assert not again.from_cache
    np.testing.assert_array_equal(again.gram, clean.gram)
    assert compute_gram(open_run(run), cache_dir=cache_dir, progress=False).from_cache  # replaced by a valid one


def test_stale_temporary_cache_files_are_swept(tmp_path):
    run = make_run(tmp_path / "run", steps=(10, 20), shapes={"model.norm.weight": (4,)})
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    stale, live = cache_dir / ".gram-stale.tmp", cache_dir / ".gram-live.tmp"
    stale.write_bytes(b"left by a killed writer")
    live.write_bytes(b"being written right now")
    an_hour_and_more = time.time() - cache.STALE_SECONDS - 60
    os.utime(stale, (an_hour_and_more, an_hour_and_more))
    compute_gram(open_run(run), cache_dir=cache_dir, progress=False)
    assert not stale.exists() and live.exists()


# ---- exports: a destination appears whole or not at all

@pytest.fixture(scope="module")
def clean_export(slow_run, reference, tmp_path_factory):
    """An uninterrupted export of the slow run (in-process CLI, Gram from the reference cache)."""
    destination = tmp_path_factory.mktemp("clean-export") / "exported"
    assert main(["extrapolate", str(slow_run), "--target", "120", "--out", str(destination),
                 "--cache-dir", str(reference[0].parent / "cache"), "--quiet"]) == 0
    return destination


def export(run, destination, cache_dir, *extra) -> subprocess.Popen:
    command = [sys.executable, "-m", "relex_core", "extrapolate", str(run), "--target", "120",
               "--out", str(destination), "--cache-dir", str(cache_dir), "--quiet", *extra]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_in_a_terminal)


def writing_weights(destination: Path) -> bool:
    """True once a shard in the export's temporary folder (beside the destination) has bytes in it."""
    try:
        return any(shard.stat().st_size for shard in destination.parent.glob(f".{destination.name}.relex-*/*"))
    except FileNotFoundError:  # the temporary folder was just renamed into place
        return False


def start_export_and_wait_for_weights(run, destination, cache_dir) -> subprocess.Popen:
    """Start a slow export (tiny chunks) and return once it has begun writing a shard."""
    process = export(run, destination, cache_dir, "--chunk-mb", SLOW_CHUNK_MB)
    deadline = time.monotonic() + 60
    while not writing_weights(destination):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the export never started writing"
        time.sleep(0.01)
    return process


def test_export_killed_mid_way_leaves_no_destination(slow_run, reference, clean_export, tmp_path):
    cache_dir = reference[0].parent / "cache"
    destination = tmp_path / "exported"
    process = start_export_and_wait_for_weights(slow_run, destination, cache_dir)
    process.send_signal(signal.SIGKILL)
    assert finish(process)[0] == -signal.SIGKILL
    assert not destination.exists()
    # SIGKILL allows no cleanup: only the hidden temporary folder is left; the next export sweeps it.
    left = [path.name for path in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".exported.relex-"), left

    returncode, stderr = finish(export(slow_run, destination, cache_dir))
    assert returncode == 0, stderr
    assert [path.name for path in tmp_path.iterdir()] == ["exported"]
    exported = sorted(path.name for path in destination.iterdir())
    assert exported == sorted(path.name for path in clean_export.iterdir())
    for name in exported:
        assert (destination / name).read_bytes() == (clean_export / name).read_bytes(), name


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM (kill, schedulers)", "SIGINT (Ctrl-C)"])
def test_export_stopped_mid_way_cleans_up_everything(stop, slow_run, reference, tmp_path):
    destination = tmp_path / "exported"
    process = start_export_and_wait_for_weights(slow_run, destination, reference[0].parent / "cache")
    process.send_signal(stop)
    returncode, stderr = finish(process)
    assert returncode == 130 and stderr.strip() == "relex: interrupted", stderr
    assert list(tmp_path.iterdir()) == []  # neither the destination nor a temporary folder
