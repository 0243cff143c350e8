"""Shared fixtures: Hydra-composed configs for tiny end-to-end runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from seq2seq.models import kernels

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# the compiled operators (models/kernels.py), built once for the whole suite: subprocesses with their own HOME
# would otherwise each build them again
KERNEL_CACHE = {"SEQ2SEQ_KERNEL_CACHE": str(kernels.cache_dir())}

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)

# A model and data set small enough to train a few steps in a second or two.
TINY = [
    "data=copy",
    "data.sizes.train=48",
    "data.sizes.val=12",
    "data.sizes.test=12",
    "data.min_len=2",
    "data.max_len=8",
    "data.symbols=12",
    "data.batch.max_tokens=120",
    "model.hidden_size=16",
    "model.embedding_size=8",
    "trainer.max_epochs=1",
    "trainer.max_steps=3",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "logger=none",
    "seed=3",
]

# TINY's model on the toy translation task (which knows its gold word alignment).
TOY = [
    *(o for o in TINY if not o.startswith("data")),
    "data=toy_translation",
    "data.sizes.train=60",
    "data.sizes.val=10",
    "data.sizes.test=12",
    "data.min_len=3",
    "data.max_len=12",
    "data.batch.max_tokens=300",
]


def compose_train(tmp_path: Path, *overrides: str) -> DictConfig:
    """Compose ``conf/train.yaml`` as ``python -m seq2seq.train`` would, with the run dir in ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # the task function never sees it
    return cfg


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
# as a user's terminal has them; a suite started in the background (`make test &`) inherits SIGINT ignored
SESSION_HANDLERS = {signum: signal.getsignal(signum) for signum in SIGNALS} | {
    signal.SIGINT: signal.default_int_handler
}


def _put_back_signal_handlers() -> None:
    for signum, handler in SESSION_HANDLERS.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@pytest.fixture(autouse=True)
def signal_handlers_put_back():
    """Every test starts and ends with the session's signal handlers (Ctrl+C raising KeyboardInterrupt):
    Lightning ignores SIGINT after a KeyboardInterrupt inside a fit, and in-process runs install their own."""
    _put_back_signal_handlers()
    yield
    _put_back_signal_handlers()


@pytest.fixture
def tiny_cfg(tmp_path):
    """A factory: ``tiny_cfg("model/attention=none", ...)`` → a composed tiny config."""

    def make(*overrides: str) -> DictConfig:
        return compose_train(tmp_path, *TINY, *overrides)

    return make


def run_module(
    module: str, *args: str, cwd: Path, home: Path | None = None, extra_env: dict | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` as a user would run it, in ``cwd``, with a clean environment (W&B
    offline, ``HOME`` = ``home`` or ``cwd``, plus ``extra_env``); ``kwargs`` go to ``subprocess.run`` (``text``,
    ``input``, ``timeout``)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "WANDB_MODE": "offline",
        "PYTHONPATH": str(ROOT),
        "HOME": str(home or cwd),
        **KERNEL_CACHE,
        **(extra_env or {}),
    }
    kwargs.setdefault("timeout", 600)
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, env=env, **kwargs
    )
