"""Exports stay under the export root and runs under the run roots: `..`, absolute paths elsewhere and
symlinks out are refused, and a refusal does not tell whether the path exists."""

import io
import zipfile

import pytest

from relex_core import RelexError
from relex_core.synthetic import make_run
from relex_dashboard.files import (export_root, open_allowed_run, resolve_export_path, run_roots, sample_run,
                                   zip_folder)

from .conftest import SAMPLE_RUN


@pytest.fixture
def root(tmp_path):
    (tmp_path / "exports").mkdir()
    return tmp_path / "exports"


def test_relative_and_absolute_paths_inside_the_root_are_accepted(root):
    assert resolve_export_path(root, "grpo/step-600") == (root / "grpo" / "step-600").resolve()
    assert resolve_export_path(root, str(root / "a")) == (root / "a").resolve()
    assert resolve_export_path(root, "a/../b") == (root / "b").resolve()


@pytest.mark.parametrize("requested", ["..", "../elsewhere", "a/../../elsewhere", "/tmp/elsewhere", "/", ".", ""])
def test_paths_that_leave_the_root_or_are_the_root_are_refused(root, requested):
    with pytest.raises(RelexError, match="export root"):
        resolve_export_path(root, requested)


def test_symlinks_leading_out_of_the_root_are_refused(root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(RelexError, match="inside the export root"):
        resolve_export_path(root, "link/model")
    (root / "inside").mkdir()
    (root / "alias").symlink_to(root / "inside")
    assert resolve_export_path(root, "alias/model") == (root / "inside" / "model").resolve()


def test_a_root_reached_through_a_symlink_still_works(root, tmp_path):
    (tmp_path / "root-link").symlink_to(root)
    assert resolve_export_path(tmp_path / "root-link", "x") == (root / "x").resolve()


def test_export_root_is_relex_data_folder_unless_the_environment_says_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("RELEX_EXPORT_ROOT", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert export_root() == tmp_path / "data" / "relex" / "exports"  # outside the repository Streamlit watches
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert export_root() == tmp_path / "home" / ".local" / "share" / "relex" / "exports"
    monkeypatch.setenv("RELEX_EXPORT_ROOT", str(tmp_path / "elsewhere"))
    assert export_root() == tmp_path / "elsewhere"


def test_the_sample_run_is_found_from_the_package_or_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("RELEX_SAMPLE_RUN", raising=False)
    monkeypatch.chdir(tmp_path)  # not from the working folder: from where the package lies
    assert sample_run() == SAMPLE_RUN.resolve()
    monkeypatch.setenv("RELEX_SAMPLE_RUN", str(tmp_path / "nowhere"))
    assert sample_run() is None
    monkeypatch.setenv("RELEX_SAMPLE_RUN", str(SAMPLE_RUN))
    assert sample_run() == SAMPLE_RUN.resolve()


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Two run roots with a run each, and a run outside them."""
    top = tmp_path_factory.mktemp("run-roots")
    for name in ("lab", "team"):
        make_run(top / name / "grpo", steps=(10, 20))
    make_run(top / "private" / "secret", steps=(10, 20))
    return top


def refusal(roots_text, text, what="run folder"):
    return f"{what} '{text}' is outside the folders this server may open (RELEX_RUN_ROOTS: {roots_text})"


def test_without_run_roots_any_readable_run_opens(roots, monkeypatch):
    monkeypatch.delenv("RELEX_RUN_ROOTS", raising=False)
    assert run_roots() is None
    assert open_allowed_run(str(roots / "private" / "secret")).steps == [10, 20]


def test_run_roots_allow_runs_inside_and_relative_paths_from_the_first_root(roots, monkeypatch):
    monkeypatch.setenv("RELEX_RUN_ROOTS", f"{roots / 'lab'}:{roots / 'team'}")
    allowed = run_roots()
    assert allowed == [(roots / "lab").resolve(), (roots / "team").resolve()]
    assert open_allowed_run(str(roots / "team" / "grpo"), roots=allowed).steps == [10, 20]
    assert open_allowed_run("grpo", roots=allowed).source == roots / "lab" / "grpo"
    assert open_allowed_run(str(roots / "lab" / "grpo" / ".." / "grpo"), roots=allowed).steps == [10, 20]


@pytest.mark.parametrize("text", ["../private/secret", "../private/missing", "/etc", "/no/such/folder",
                                  "grpo/../../private/secret"])
def test_run_roots_refuse_paths_out_with_one_message_whether_they_exist_or_not(roots, text):
    allowed = [(roots / "lab").resolve()]
    with pytest.raises(RelexError) as refused:
        open_allowed_run(text, roots=allowed)
    assert str(refused.value) == refusal(allowed[0], text)


def test_run_roots_refuse_symlinks_out_a_base_out_and_checkpoints_listed_out(roots, tmp_path):
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "linked").symlink_to(roots / "private" / "secret")
    (lab / "dangling").symlink_to(roots / "private" / "missing")
    allowed = [lab.resolve()]
    for text in ("linked", "dangling"):
        with pytest.raises(RelexError) as refused:
            open_allowed_run(text, roots=allowed)
        assert str(refused.value) == refusal(allowed[0], text)
    (lab / "own").mkdir()
    for step in (0, 10, 20):
        (lab / "own" / f"checkpoint-{step}").symlink_to(roots / "private" / "secret" / f"checkpoint-{step}")
    with pytest.raises(RelexError) as refused:  # each checkpoint a symlink out
        open_allowed_run("own", roots=allowed)
    assert str(refused.value) == refusal(allowed[0], "own")
    for listed in ("secret", "missing"):  # a manifest inside whose checkpoints lie outside, existing or not
        (lab / f"{listed}.csv").write_text("step,path\n" + "".join(
            f"{step},{roots / 'private' / listed / f'checkpoint-{step}'}\n" for step in (0, 10, 20)))
        with pytest.raises(RelexError) as refused:
            open_allowed_run(f"{listed}.csv", roots=allowed)
        assert str(refused.value) == refusal(allowed[0], f"{listed}.csv")
    (lab / "mine").symlink_to(roots / "lab" / "grpo")
    both = [lab.resolve(), (roots / "lab").resolve()]
    assert open_allowed_run("mine", roots=both).steps == [10, 20]  # a symlink from one root into another is fine
    base = str(roots / "private" / "secret" / "checkpoint-0")
    with pytest.raises(RelexError) as refused:
        open_allowed_run("mine", base, roots=both)
    assert str(refused.value) == refusal(", ".join(map(str, both)), base, "base checkpoint")


def test_zip_folder_holds_every_file_under_the_folders_name(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 100)
    with zipfile.ZipFile(io.BytesIO(zip_folder(folder))) as archive:
        assert sorted(archive.namelist()) == ["model/config.json", "model/sub/weights.bin"]
        assert archive.read("model/sub/weights.bin") == b"\x00\x01" * 100
