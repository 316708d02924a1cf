"""bench/native_readers.py end to end on tiny shapes, so the kit cannot rot."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_native_reader_benchmark_runs_and_reports_every_row(tmp_path):
    report = tmp_path / "NATIVE.md"
    result = subprocess.run([sys.executable, "bench/native_readers.py", "--tiny", "--layers", "1", "--checkpoints",
                             "2", "--repeats", "1", "--data", str(tmp_path / "data"), "--out", str(report)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in report.read_text().splitlines() if line.startswith("| verl") or line.startswith("| safe")]
    assert [row.split(" | ")[1] for row in rows] == ["floor", "reader", "gram"] * 2
    assert all(float(row.split(" | ")[-1].rstrip(" |")) > 0 for row in rows)  # every ratio measured
