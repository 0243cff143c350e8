"""The SLURM path run for real: a 2-job sweep through ``hydra/launcher=slurm`` (submitit) on a single-node
cluster (tests/slurm_cluster.py); one job is requeued mid-training and both end exactly where the same jobs
run without SLURM end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import KERNEL_CACHE, ROOT
from tests.slurm_cluster import ClusterUnavailable, SlurmCluster, slurm_cluster

pytestmark = pytest.mark.slow

STEPS = 200  # 10 batches an epoch, a validation (and last.ckpt) after each: ~15 s of training on one core
# Dropout and teacher-forcing coin flips draw random numbers: the resumed job must restore the generators too.
TRAIN = [
    "trainer=cpu",
    "data=copy",
    "data.sizes.train=200",
    "data.sizes.val=20",
    "data.sizes.test=20",
    "data.min_len=2",
    "data.max_len=8",
    "data.symbols=12",
    "data.batch.max_tokens=120",
    "model.hidden_size=32",
    "model.embedding_size=16",
    "model.encoder.dropout=0.2",
    "teacher_forcing=constant",
    "teacher_forcing.ratio=0.5",
    "trainer.max_epochs=100",
    f"trainer.max_steps={STEPS}",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=10",
    "callbacks.early_stopping=null",
    "eval.attention_examples=0",
    "eval.bootstrap=0",  # no intervals: 20 validations a job
    "logger=none",
    "threads=1",  # the same arithmetic in both places: one thread, as on a 1-CPU SLURM task
    "seed=3",
    "model/attention=none,bahdanau",  # the sweep: job 0 (requeued) and job 1
]


def cpu_cluster_launcher(cluster: SlurmCluster) -> list[str]:
    """What a user of a CPU-only cluster adds to the shipped ``hydra/launcher=slurm`` (made for GPU nodes)."""
    return [
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={cluster.partition}",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
    ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> SlurmCluster:
    try:
        with slurm_cluster(tmp_path_factory.mktemp("slurm")) as running:
            yield running
    except ClusterUnavailable as reason:
        pytest.skip(f"no SLURM cluster: {reason}")


def sweep(directory: Path, cluster: SlurmCluster, *overrides: str) -> subprocess.Popen:
    """``python -m seq2seq.train -m <TRAIN> <overrides>`` as a user runs it, into ``directory``."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "HOME": str(directory.parent),
        "WANDB_MODE": "offline",
        "SEQ2SEQ_CACHE": str(directory / "cache"),
        **KERNEL_CACHE,
        **cluster.env,
    }
    directory.mkdir(parents=True)
    command = [sys.executable, "-m", "seq2seq.train", "-m", *TRAIN, *overrides]
    command.append(f"hydra.sweep.dir={directory}")
    with (directory / "sweep.log").open("wb") as log:
        return subprocess.Popen(command, cwd=directory.parent, env=env, stdout=log, stderr=subprocess.STDOUT)


def job_logs(directory: Path, job: int) -> str:
    """stdout and stderr of every start of array task ``job`` (submitit appends a requeued start)."""
    paths = sorted(directory.glob(f".submitit/*_{job}/*_{job}_0_log.*"))
    return "\n".join(path.read_text(errors="replace") for path in paths)


def explain(cluster: SlurmCluster, *directories: Path) -> str:
    """Everything needed to see why a sweep went wrong: its output, its jobs' logs, the daemons' logs."""
    parts = [cluster.command("squeue", check=False)]
    for directory in directories:
        log = directory / "sweep.log"
        parts.append(f"=== {log}\n{log.read_text(errors='replace')[-4000:] if log.exists() else ''}")
        parts += [f"=== job {job}\n{job_logs(directory, job)[-4000:]}" for job in (0, 1)]
    return "\n".join([*parts, cluster.logs()])


def wait_until(condition, timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.2)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    last = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(last, map_location="cpu", weights_only=False)["state_dict"]


def finished(process: subprocess.Popen, timeout: float) -> int | None:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return None


def test_a_requeued_slurm_job_ends_as_an_uninterrupted_run(cluster, tmp_path):
    """Sweep on SLURM, ``scontrol requeue`` job 0 after its first checkpoint: SLURM restarts it, it resumes its
    last.ckpt, and both jobs end with the scores, step count and weights of the same jobs run locally."""
    start = time.monotonic()
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    slurm_sweep = sweep(on_slurm, cluster, *cpu_cluster_launcher(cluster))
    local_sweep = sweep(local, cluster)  # Hydra's basic launcher: the same two jobs, one after the other

    checkpoint = on_slurm / "0" / "checkpoints" / "last.ckpt"
    wait_until(
        lambda: checkpoint.exists() or slurm_sweep.poll() is not None,
        timeout=240,
        failure=f"job 0 wrote no checkpoint:\n{explain(cluster, on_slurm)}",
    )
    running = cluster.command("squeue", "-h", "-t", "RUNNING", "-o", "%i").split()
    job0 = next((job for job in running if job.endswith("_0")), None)
    assert job0 is not None, f"job 0 is not running (squeue: {running}):\n{explain(cluster, on_slurm)}"
    cluster.command("scontrol", "requeue", job0)
    requeued = time.monotonic()

    slurm_code, local_code = finished(slurm_sweep, timeout=360), finished(local_sweep, timeout=120)
    assert (slurm_code, local_code) == (0, 0), explain(cluster, on_slurm, local)
    wall = time.monotonic() - start

    restarts = {job: cluster.command("scontrol", "show", "job", job0[:-1] + str(job)) for job in (0, 1)}
    assert "Restarts=1" in restarts[0] and "Restarts=0" in restarts[1], restarts
    log = job_logs(on_slurm, 0)
    stopped = re.search(r"training interrupted by SIGTERM at step (\d+)", log)
    assert stopped and 0 < int(stopped.group(1)) < STEPS, log[-4000:]
    assert "SLURM job restarted (1): resuming" in log, log[-4000:]  # not trained again from scratch
    assert f"resuming at step {stopped.group(1)}:" in log, log[-4000:]

    for job in ("0", "1"):
        ran = json.loads((on_slurm / job / "results.json").read_text())
        alone = json.loads((local / job / "results.json").read_text())
        assert ran["status"] == alone["status"] == "completed"
        assert ran["train"]["steps"] == alone["train"]["steps"] == STEPS
        assert ran["metrics"] == alone["metrics"]  # test/bleu, val/bleu, ... to the last digit
        ran_weights, alone_weights = (final_weights(d / job) for d in (on_slurm, local))
        assert all(torch.equal(ran_weights[name], alone_weights[name]) for name in alone_weights)
    print(
        f"\nSLURM sweep with one requeue: {wall:.0f} s in all; job 0 stopped at step {stopped.group(1)}, "
        f"the sweep ended {time.monotonic() - requeued:.0f} s after the requeue"
    )
