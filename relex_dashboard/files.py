"""Which server folders the dashboard may read and write.

The dashboard is a server: whoever reaches it types paths. So
- exports go under one export root only ($RELEX_EXPORT_ROOT, default relex's data folder,
  outside any folder Streamlit watches: a run's exports once filled the watcher's inotify queue);
- runs are read only from under $RELEX_RUN_ROOTS when it is set (a path list, like PATH), the
  run's checkpoints and base included; unset, anything the server user can read is allowed.
Both checks resolve `..` and symlinks first. A refused run path gets the same message whether
or not it exists, so the picker cannot be used to probe the server's other folders.
"""

import io
import os
import zipfile
from pathlib import Path

from relex_core.errors import RelexError
from relex_core.io.discover import Run, open_run

# Results up to this size are offered as a zip download, built in memory.
ZIP_DOWNLOAD_LIMIT = 200 * 2**20


def data_folder() -> Path:
    """relex's data folder: $XDG_DATA_HOME/relex, or ~/.local/share/relex."""
    configured = os.environ.get("XDG_DATA_HOME", "").strip()
    return (Path(configured).expanduser() if configured else Path.home() / ".local" / "share") / "relex"


def export_root() -> Path:
    """$RELEX_EXPORT_ROOT, or <relex's data folder>/exports."""
    configured = os.environ.get("RELEX_EXPORT_ROOT", "").strip()
    return Path(configured).expanduser() if configured else data_folder() / "exports"


def resolve_export_path(root, requested) -> Path:
    """The absolute, symlink-free output folder for `requested` (relative to root, or absolute inside it).

    Refused with RelexError: empty, the root itself, or anything that resolves outside the root.
    """
    text = str(requested).strip()
    root = Path(root).expanduser().resolve()
    if not text:
        raise RelexError("choose an output folder inside the export root", path=root)
    candidate = Path(text).expanduser()
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise RelexError(f"output folder must be inside the export root {root}", path=text)
    return resolved


# --------------------------------------------------------------------------- runs


def sample_run() -> Path | None:
    """The shipped sample run: $RELEX_SAMPLE_RUN, else sample_data/run of the source checkout this
    package lies in, else sample_data/run under the working directory; None when none exists."""
    configured = os.environ.get("RELEX_SAMPLE_RUN", "").strip()
    candidates = ([Path(configured).expanduser()] if configured else
                  [Path(__file__).resolve().parents[1] / "sample_data" / "run", Path.cwd() / "sample_data" / "run"])
    return next((path.resolve() for path in candidates if path.is_dir()), None)


def run_roots() -> list[Path] | None:
    """The folders runs may be opened from ($RELEX_RUN_ROOTS, os.pathsep-separated), resolved; None: anywhere."""
    text = os.environ.get("RELEX_RUN_ROOTS", "")
    roots = [Path(part).expanduser().resolve() for part in text.split(os.pathsep) if part.strip()]
    return roots or None


def _inside(path: Path, roots) -> bool:
    resolved = Path(path).resolve()
    return any(resolved == root or resolved.is_relative_to(root) for root in roots)


def _refusal(text: str, roots, what: str) -> RelexError:
    # The same words for a missing and an existing path: nothing is said about what lies outside.
    allowed = ", ".join(str(root) for root in roots)
    return RelexError(f"{what} '{text}' is outside the folders this server may open (RELEX_RUN_ROOTS: {allowed})")


def user_path(text: str, roots=None) -> Path:
    """A typed path: `~` expanded; a relative one is taken from the first run root, else the working folder."""
    path = Path(text.strip()).expanduser()
    if path.is_absolute():
        return path
    return (roots[0] if roots else Path.cwd()) / path


def open_allowed_run(source_text: str, base_text: str = "", roots=None) -> Run:
    """open_run on typed paths, refused (one message, existing or not) when anything leaves the run roots.

    The run folder or manifest, the base, and every checkpoint the run lists (a manifest or a
    symlinked checkpoint can point elsewhere) must resolve inside one of `roots`.
    """
    source, base = user_path(source_text, roots), user_path(base_text, roots) if base_text.strip() else None
    if roots is not None:
        for text, path, what in ((source_text, source, "run folder"), (base_text, base, "base checkpoint")):
            if path is not None and not _inside(path, roots):
                raise _refusal(text.strip(), roots, what)
    try:
        run = open_run(source, base)
    except RelexError as error:
        if roots is not None and error.path is not None and not _inside(Path(str(error.path)), roots):
            raise _refusal(source_text.strip(), roots, "run folder") from None
        raise
    if roots is not None:
        for checkpoint in (run.base, *run.checkpoints):
            if not _inside(checkpoint.path, roots):
                raise _refusal(source_text.strip(), roots, "run folder")
    return run


# --------------------------------------------------------------------------- downloads


def folder_bytes(folder) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def zip_folder(folder) -> bytes:
    """The folder as an in-memory zip (stored, not deflated: weights barely compress), named after it."""
    folder = Path(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, Path(folder.name) / path.relative_to(folder))
    return buffer.getvalue()
