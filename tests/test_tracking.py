"""W&B identity and reachability: run names, sweep groups, the sweep plan, online without a network."""

from __future__ import annotations

import logging
import time

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from seq2seq.config.sweep import plan_sweep, swept_values
from seq2seq.evaluation.record import run_name, sweep_group
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
    assert plan["planned"] == 5 * 3 and plan["swept"] == ["model/attention", "seed"]  # encoder fixed
    assert plan["group"].startswith("bottleneck/")  # multirun/bottleneck/<time>, from the sweep config
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
        decided = time.monotonic() - start  # W&B's own wait would be 90 s of silence, then an error
        mode = wandb_logger.experiment.settings.mode
    finish_wandb()
    assert decided < 30
    assert mode == "offline"
    assert "W&B online is not reachable (127.0.0.1:9:" in caplog.text and "wandb sync" in caplog.text
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_the_wandb_report_of_a_sweep_is_filtered_to_its_group_and_shows_bleu_by_length():
    """As far as wandb-workspaces allows offline: the report and each panel are built (saving needs a login)."""
    import json

    pytest.importorskip("wandb_workspaces", reason="the optional extra: pip install -e '.[wandb-report]'")
    from seq2seq.evaluation.tracking import wandb_report

    report = wandb_report(
        "Sweep",
        "2 jobs",
        "p",
        "e",
        group="bottleneck/2026-01-05_10-00-00",
        buckets=["1-10", "51+"],
        colours={"abc123": "#0072B2"},
    )
    (grid,) = report.blocks
    assert grid.runsets[0].filters == "Group = 'bottleneck/2026-01-05_10-00-00'"
    assert grid.runsets[0].run_settings["abc123"].color == "#0072B2"  # the variant's colour everywhere
    by_title = {getattr(panel, "title", None) or "custom": panel for panel in grid.panels}
    assert by_title["test BLEU by source length (words)"].metrics == [
        "test/bleu_by_length/1-10",
        "test/bleu_by_length/51+",
    ]
    assert by_title["val/bleu"].range_y == (0, 100)
    for panel in grid.panels:  # each panel serialises without a W&B server
        model = panel._to_model()
        assert json.dumps(model.model_dump(by_alias=True), default=str)
