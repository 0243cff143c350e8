"""W&B identity and reachability: run names, sweep groups, the sweep plan, online without a network."""

from __future__ import annotations

import logging
import time

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from seq2seq.config.sweep import plan_sweep, sweep_group, swept_values
from seq2seq.evaluation.record import run_name
from seq2seq.evaluation.tracking import build_loggers, finish_wandb
from tests.conftest import CONF

CHOICES = {"model/encoder": "gru", "model/attention": "bahdanau"}


def test_run_names_come_from_the_choices_and_the_swept_values():
    config = {"model": {"hidden_size": 128}, "seed": 2}
    assert run_name(CHOICES, config) == "gru-bahdanau-h128-s2"
    swept = {"model/attention": "bahdanau", "optim.lr": "0.0012345678", "data.max_words": "100"}
    assert run_name(CHOICES, config, swept) == "gru-bahdanau-h128-s2-lr0.00123-max_words100"


def test_two_launches_of_one_sweep_are_two_groups(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sweep_group("multirun/bottleneck/2026-01-05_10-00-00") == "bottleneck/2026-01-05_10-00-00"
    assert sweep_group("multirun/bottleneck/2026-01-05_11-30-00") == "bottleneck/2026-01-05_11-30-00"
    assert sweep_group(tmp_path / "multirun" / "2026-01-05" / "10-00-00") == "2026-01-05/10-00-00"
    assert sweep_group("/elsewhere/sweeps/a") == "elsewhere/sweeps/a"


def _hydra(*overrides):
    """``cfg.hydra`` of a multirun launched with ``overrides`` (sweeps composed as a launch does: left out of
    the composition, kept in ``hydra.overrides.task``)."""
    GlobalHydra.instance().clear()
    fixed = [o for o in overrides if "," not in o]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=fixed, return_hydra_config=True)
    OmegaConf.update(cfg, "hydra.overrides.task", [o for o in overrides if not o.startswith("sweep=")])
    return cfg.hydra


def test_the_plan_counts_the_jobs_the_sweeper_launches():
    plan = plan_sweep(_hydra("sweep=bottleneck", "model/encoder=gru", "seed=1,2,3"))
    assert plan == {
        "planned": 5 * 3,
        "swept": ["model/attention", "seed"],
    }  # encoder fixed on the command line
    assert plan_sweep(_hydra("sweep=hidden_size"))["planned"] == 10
    assert plan_sweep(_hydra("sweep=optuna", "hydra.sweeper.n_trials=7"))["planned"] == 7
    assert plan_sweep(_hydra("seed=1,2", "model/attention=none,bahdanau"))["planned"] == 4  # a plain -m sweep
    assert swept_values(["model/encoder=gru", "seed=2"], ["seed"]) == {"seed": "2"}


def test_online_without_network_falls_back_to_offline_quickly_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    cfg = OmegaConf.create(
        {
            "logger": {"name": "wandb", "project": "p", "mode": "online"},
            "model": {"hidden_size": 8},
            "tags": [],
        }
    )
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        _, wandb_logger = build_loggers(cfg, tmp_path, CHOICES, name="gru-bahdanau-h8-s1")
        mode = wandb_logger.experiment.settings.mode
    finish_wandb()
    assert time.monotonic() - start < 30
    assert mode == "offline"
    assert "W&B online is not reachable (127.0.0.1:9:" in caplog.text and "wandb sync" in caplog.text
    assert list((tmp_path / "wandb").glob("offline-run-*"))
