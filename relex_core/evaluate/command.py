"""The user's own benchmark as a scorer: a shell command run once per folder.

    CommandScorer("python my_eval.py --model {path}", timeout=3600)

`{path}` becomes the folder, shell-quoted. The last non-empty line the command prints on stdout is
the score: a JSON object of metric -> number, or a bare number (metric `score`). Everything before
it is chatter. A non-zero exit, a timeout, or a last line that is neither is one error naming the
folder and quoting the command's last line on stderr.
"""

import json
import math
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import RelexError
from .scorer import Cancelled, Metric, Scorer

PLACEHOLDER = "{path}"
# How often a running command is checked for the cancel event and its timeout.
_POLL_SECONDS = 0.2
_QUOTED_CHARACTERS = 200


@dataclass(frozen=True)
class CommandScorer(Scorer):
    """command: a shell command line with {path}; timeout: seconds per folder (None: no limit)."""
    command: str
    timeout: float | None = None

    def __post_init__(self):
        if PLACEHOLDER not in self.command:
            raise RelexError(f"the command must contain {PLACEHOLDER}, where the checkpoint folder goes: "
                             f"{self.command!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise RelexError(f"timeout must be a positive number of seconds, not {self.timeout}")

    @property
    def name(self) -> str:
        # The timeout is left out: it decides whether a score comes back, not what the score is.
        return f"command {self.command}"

    def score(self, folder, cancel=None) -> list[Metric]:
        line = self.command.replace(PLACEHOLDER, shlex.quote(str(Path(folder))))
        # A session of its own, so a timeout or Ctrl-C ends the command's children too (sh -c, python, ...).
        process = subprocess.Popen(line, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
        try:
            stdout, stderr = self._wait(process, cancel)
        except subprocess.TimeoutExpired:
            stdout, stderr = _stop(process)
            raise RelexError(f"scoring command timed out after {self.timeout:g} s{_last_stderr(stderr)}",
                             path=folder) from None
        except BaseException:  # Ctrl-C, cancel: the command must not outlive relex
            _stop(process)
            raise
        if process.returncode != 0:
            raise RelexError(f"scoring command failed with exit code {process.returncode}{_last_stderr(stderr)}",
                             path=folder)
        return parse_score_line(_last_line(stdout), folder, stderr)

    def _wait(self, process, cancel):
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled
            wait = _POLL_SECONDS if deadline is None else min(_POLL_SECONDS, max(0.0, deadline - time.monotonic()))
            try:
                return process.communicate(timeout=wait)  # retrying after a timeout loses no output
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


def parse_score_line(line: str, folder, stderr: str = "") -> list[Metric]:
    """The metrics in a command's last stdout line: {"metric": number, ...} or a bare number."""
    try:
        parsed = json.loads(line)
    except ValueError:
        parsed = None
    if _is_number(parsed):
        return [Metric("score", float(parsed))]
    if isinstance(parsed, dict) and parsed and all(isinstance(key, str) and _is_number(value)
                                                   for key, value in parsed.items()):
        return [Metric(key, float(value)) for key, value in parsed.items()]
    shown = line if len(line) <= _QUOTED_CHARACTERS else line[:_QUOTED_CHARACTERS] + "..."
    raise RelexError(f"the scoring command's last line on stdout is not a JSON object of metric -> number "
                     f"nor a number: {shown!r}{_last_stderr(stderr)}", path=folder)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _last_stderr(stderr: str) -> str:
    line = _last_line(stderr)
    if not line:
        return " (nothing on stderr)"
    return f"; its last line on stderr: {line[:_QUOTED_CHARACTERS]!r}"


def _stop(process) -> tuple[str, str]:
    """Ends the command's whole process group and returns what it had printed."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:  # the group is gone already
            pass
        try:
            return process.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            continue
    # A child that left the group (setsid) still holds the pipes: give up on the output.
    process.kill()
    process.wait()
    return "", ""
