"""``scripts/compare_runs.py``: runs side by side from their results.json, with a plain Python."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_dashboard import write_job

PLAIN = (
    shutil.which("python3", path="/usr/bin:/bin") or sys.executable
)  # no virtualenv: standard library only


def compare(*runs: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PLAIN, str(ROOT / "scripts" / "compare_runs.py"), *map(str, runs)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def test_two_runs_side_by_side(tmp_path):
    attention = write_job(tmp_path, "a", "bahdanau", 128, [40.0, 38.0, None, 30.0])
    none = write_job(tmp_path, "n", "none", 64, [25.0, 12.0, 4.0, None])
    for run, free in ((attention, 90.0), (none, 50.0)):
        record = json.loads((run / "results.json").read_text())
        record["position_accuracy"] = [free] * 60
        record["teacher_forced_position_accuracy"] = [free + 5] * 60
        (run / "results.json").write_text(json.dumps(record))
    result = compare(attention, none)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        "| gru + bahdanau, h=128, teacher_forcing=constant | 36.0 | 50.0 | 0.2 | 1.000 | 128,000 | 4321 | 12 |"
        in lines
    )
    assert "| 11-20 | 10 | 38.0 | 12.0 |" in lines
    assert "| 21-30 | 0 | — | 4.0 |" in lines  # the first run's empty bucket is a gap, never 0
    assert "| 20 (free-running / teacher-forced) | 90.0 / 95.0 | 50.0 / 55.0 |" in lines


@pytest.mark.parametrize("content", [None, '{"schema": 2}'])
def test_a_missing_or_foreign_record_is_one_clear_line(tmp_path, content):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "results.json").write_text(content)
    result = compare(run)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(run / "results.json") in result.stderr
