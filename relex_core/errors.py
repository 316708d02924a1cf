"""The one exception type users see.

Anything wrong with the *input* (a folder, a file, a tensor, an option) is raised as
`RelexError` with a one-line message that names the file and, where there is one, the
tensor. The CLI prints that line and exits with code 2; the dashboard shows it with
`st.error`. Anything else is a bug in relex and keeps its traceback.
"""


class RelexError(Exception):
    """A user-facing error: bad input, never a bug. `str(error)` is one line."""

    def __init__(self, message: str, *, path=None, tensor: str | None = None):
        parts = []
        if path is not None:
            parts.append(str(path))
        if tensor is not None:
            parts.append(f"tensor '{tensor}'")
        prefix = ": ".join(parts)
        text = f"{prefix}: {message}" if prefix else message
        super().__init__(" ".join(text.split()))  # always a single line
        self.path = path
        self.tensor = tensor
