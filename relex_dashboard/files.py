"""Where the dashboard may write: exports go under one export root, never elsewhere.

The dashboard is a server: whoever reaches it types an output folder. Only folders strictly
inside the export root are accepted, after resolving `..` and symlinks, so a path cannot
escape it by either route.
"""

import io
import os
import zipfile
from pathlib import Path

from relex_core.errors import RelexError

# Results up to this size are offered as a zip download, built in memory.
ZIP_DOWNLOAD_LIMIT = 200 * 2**20


def export_root(repo_root) -> Path:
    """$RELEX_EXPORT_ROOT, or <repo>/exports."""
    configured = os.environ.get("RELEX_EXPORT_ROOT", "").strip()
    return Path(configured).expanduser() if configured else Path(repo_root) / "exports"


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
