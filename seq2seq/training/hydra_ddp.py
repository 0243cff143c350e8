"""DDP inside Hydra: Lightning's child processes must rebuild the same job, in the same directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write
from pytorch_lightning.utilities import rank_zero_only


def is_rank_zero() -> bool:
    """Whether this process is rank 0 (DDP children and SLURM tasks know their rank from the environment)."""
    return rank_zero_only.rank == 0


@contextmanager
def hydra_ddp_job() -> Iterator[None]:
    """Make Lightning's DDP child processes rebuild exactly this job of a multirun, in its directory.

    Lightning starts ranks 1… as ``python -m seq2seq.train <sys.argv> hydra.run.dir=<hydra.run.dir>``
    (``_hydra_subprocess_cmd``). In a multirun ``sys.argv`` holds the whole sweep and ``hydra.run.dir`` is
    not the job's directory, so each child would start a sweep of its own. While this job runs, the
    children see its overrides in RUN mode and its directory; afterwards the process group and the
    launcher's environment are cleared, so the next job starts its own processes.
    """
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        yield
        return
    argv, environ = sys.argv, dict(os.environ)
    sys.argv = [argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"):
            if name in environ:
                os.environ[name] = environ[name]
            else:
                os.environ.pop(name, None)
