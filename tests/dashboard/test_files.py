"""Exports stay under the export root: `..`, absolute paths elsewhere and symlinks out are refused."""

import io
import zipfile

import pytest

from relex_core import RelexError
from relex_dashboard.files import export_root, resolve_export_path, zip_folder


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


def test_export_root_comes_from_the_environment_or_the_repo(monkeypatch, tmp_path):
    monkeypatch.delenv("RELEX_EXPORT_ROOT", raising=False)
    assert export_root(tmp_path) == tmp_path / "exports"
    monkeypatch.setenv("RELEX_EXPORT_ROOT", str(tmp_path / "elsewhere"))
    assert export_root(tmp_path) == tmp_path / "elsewhere"


def test_zip_folder_holds_every_file_under_the_folders_name(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 100)
    with zipfile.ZipFile(io.BytesIO(zip_folder(folder))) as archive:
        assert sorted(archive.namelist()) == ["model/config.json", "model/sub/weights.bin"]
        assert archive.read("model/sub/weights.bin") == b"\x00\x01" * 100
