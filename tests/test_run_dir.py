"""A run directory is written only by the run that owns it: a lock, unique default directories, and failed
resumes recorded beside — never over — the earlier record (seq2seq/training/run_dir.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from seq2seq.training.run_dir import LOCK, RunDirError, acquire, failure_record_dir, own, release
from tests.conftest import CONF, ROOT, TINY, run_module


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` → the hash of its bytes, but the lock and the job log (every attempt
    appends to ``train.log``; the tests check that it only grows)."""
    log = directory / "train.log"
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != LOCK and p != log
    }


def test_a_second_owner_is_refused_with_the_holders_pid(tmp_path):
    run_dir = tmp_path / "run"
    own(run_dir, "hydra.run.dir", new_attempt=True)
    try:
        with pytest.raises(
            RunDirError, match=rf"in use by PID {__import__('os').getpid()} on .*delete .*\.lock"
        ):
            acquire(run_dir)
    finally:
        release(run_dir)
    assert not (run_dir / LOCK).exists()  # released: the lock file goes with it
    acquire(run_dir).close()  # and the directory can be taken again


def test_a_directory_with_an_earlier_record_gets_an_attempt_dir(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    owned = own(run_dir, "hydra.run.dir", new_attempt=True)
    try:
        assert owned.attempt_dir is not None and owned.attempt_dir.parent == run_dir / "attempts"
        assert failure_record_dir(run_dir) == owned.attempt_dir
    finally:
        release(run_dir)
    assert failure_record_dir(tmp_path / "fresh") == tmp_path / "fresh"


def test_two_runs_composed_in_the_same_second_get_different_directories():
    def run_dir() -> str:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", return_hydra_config=True)
        return str(cfg.hydra.run.dir)

    first, second = run_dir(), run_dir()
    assert first != second


@pytest.mark.slow
def test_a_concurrent_run_is_refused_before_it_writes_anything(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from seq2seq.training.run_dir import own; "
            "own(Path(sys.argv[1]), 'hydra.run.dir', False); print('held', flush=True); time.sleep(600)",
            str(run_dir),
        ],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        (run_dir / "results.json").write_text('{"status": "completed"}\n')
        before = snapshot(run_dir)
        second = run_module(
            "seq2seq.train", *TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path, text=True, timeout=300
        )
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 1, second.stderr[-2000:]
    assert f"in use by PID {holder.pid}" in second.stderr and "Traceback" not in second.stderr
    assert snapshot(run_dir) == before and not (run_dir / ".hydra").exists()


@pytest.mark.slow
def test_a_refused_resume_leaves_the_completed_record_and_hydra_files_as_they_were(tmp_path):
    run_dir = tmp_path / "run"
    common = [f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"]
    first = run_module("seq2seq.train", *TINY, *common, cwd=tmp_path, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(run_dir)
    log = (run_dir / "train.log").read_bytes()
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"

    # another model on the completed run's checkpoint: refused, recorded under attempts/
    other = run_module(
        "seq2seq.train", *TINY, *common, "ckpt_path=last", "model.hidden_size=32", cwd=tmp_path, text=True
    )
    assert other.returncode == 1 and "Traceback" not in other.stdout + other.stderr
    after = snapshot(run_dir)
    assert {k: v for k, v in after.items() if not k.startswith("attempts/")} == before
    (attempt,) = (run_dir / "attempts").iterdir()
    failed = json.loads((attempt / "results.json").read_text())
    assert failed["status"] == "failed" and "cannot be resumed" in failed["error"]
    assert "model.hidden_size=32" in (attempt / ".hydra" / "overrides.yaml").read_text()

    # the same command again with ckpt_path=last: nothing left to train, and the record is kept
    again = run_module("seq2seq.train", *TINY, *common, "ckpt_path=last", cwd=tmp_path, text=True)
    output = again.stdout + again.stderr
    assert again.returncode == 1 and "already completed" in output and "Traceback" not in output
    assert "seq2seq-evaluate run_dir=" in output
    kept = snapshot(run_dir)
    assert {k: v for k, v in kept.items() if not k.startswith("attempts/")} == before
    assert len(list((run_dir / "attempts").iterdir())) == 2
    assert (run_dir / "train.log").read_bytes().startswith(log)  # the job log only grows
    assert not (run_dir / LOCK).exists()


@pytest.mark.slow
def test_an_unwritable_run_directory_is_named_without_a_traceback(tmp_path):
    result = run_module("seq2seq.train", *TINY, "hydra.run.dir=/proc/x", cwd=tmp_path, text=True)
    assert result.returncode == 1
    assert "hydra.run.dir=/proc/x: cannot create or write the run directory" in result.stderr
    assert "Traceback" not in result.stderr
