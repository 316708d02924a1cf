"""Real scoring scripts for `relex evaluate --command`, and how to run relex as a user does."""

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tests.test_faults import as_in_a_terminal  # Ctrl-C reaches the child as in a terminal

REPO = Path(__file__).resolve().parents[2]

# One script, one behaviour per folder name, so a single `relex evaluate` meets them all.
BY_NAME = '''
import json, os, sys, time
from pathlib import Path
folder = Path(sys.argv[1])
with open(os.environ["CALLS"], "a") as calls:
    calls.write(folder.name + "\\n")
if folder.name == "chatty":
    print("loading the model from", folder)
    print("scored 40 problems")
    print(json.dumps({"accuracy": 0.75, "pass@1": 0.5}))
elif folder.name == "bare":
    print("warming up")
    print("0.625")
elif folder.name == "failing":
    print("partial output")
    print("Traceback (most recent call last): ...", file=sys.stderr)
    print("RuntimeError: CUDA out of memory", file=sys.stderr)
    sys.exit(3)
elif folder.name in ("hanging", "slow"):
    print("started", file=sys.stderr, flush=True)
    Path(os.environ["CALLS"]).with_name(folder.name + ".pid").write_text(str(os.getpid()))
    time.sleep(120)
elif folder.name == "garbage":
    print("accuracy: great")
    print("done", file=sys.stderr)
else:
    print(len(folder.name) / 100)
'''


def by_name_command(tmp_path) -> str:
    script = tmp_path / "score_by_name.py"
    script.write_text(BY_NAME)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {{path}}"


def checkpoint(path: Path) -> Path:
    """A folder that looks like a checkpoint to relex (the scripts never read the weights)."""
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"not read by the scripts")
    return path


def has_ended(pid: int, wait: float = 10.0) -> bool:
    """True once the process is gone or a zombie (dead, waiting to be reaped by whoever adopted it),
    within `wait` seconds: a killed process takes a moment to finish exiting."""
    deadline = time.monotonic() + wait
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def relex_evaluate(*arguments, env=None, wait=True, timeout=300):
    command = [sys.executable, "-m", "relex_core", "evaluate", *map(str, arguments)]
    environment = {**os.environ, **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=environment, preexec_fn=as_in_a_terminal)
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=environment, timeout=timeout)
