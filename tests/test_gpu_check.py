"""scripts/gpu_check.sh: its dry run checks every command it would run on a GPU, here without one."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, python=sys.executable):
    env = {**os.environ, "PY": python, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    return subprocess.run(
        ["bash", "scripts/gpu_check.sh", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_dry_run_checks_all_steps():
    done = _run("--dry-run")
    assert done.returncode == 0, done.stderr
    assert "all 4 steps check out" in done.stdout


def test_dry_run_fails_on_a_missing_python_and_bad_options():
    done = _run("--dry-run", python="/nonexistent/python")
    assert done.returncode == 1 and "no python at /nonexistent/python" in done.stderr
    bad = _run("--bogus")
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr


def test_without_a_gpu_the_real_run_stops_at_once(tmp_path):
    import torch

    if torch.cuda.is_available():
        return  # on a GPU machine the script really runs (minutes); not here
    done = _run("--out", str(tmp_path / "gpu.md"))
    assert done.returncode == 1 and "sees no CUDA GPU" in done.stderr
    assert not (tmp_path / "gpu.md").exists()
