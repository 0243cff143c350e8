"""Sweeps: the multirun configs compose, a real tiny sweep survives a failing job, Optuna gets the metric."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from tests.conftest import CONF, TINY, run_module


def _compose(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_bottleneck_search_space():
    cfg = _compose("sweep=bottleneck")
    params = cfg.hydra.sweeper.params
    assert params["model/attention"].split(",") == [
        "none",
        "bahdanau",
        "luong_dot",
        "luong_general",
        "luong_concat",
    ]
    assert params["model/encoder"].split(",") == ["gru", "lstm"]
    assert str(params["seed"]) == "1234"  # the seed axis, one seed unless seed=1,2,3 is given
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.logger.group == "bottleneck"


def test_hidden_size_search_space():
    cfg = _compose("sweep=hidden_size")
    params = cfg.hydra.sweeper.params
    assert [int(h) for h in params["model.hidden_size"].split(",")] == [32, 64, 128, 256, 512]
    assert params["model/attention"].split(",") == ["none", "bahdanau"]
    assert str(params["seed"]) == "1234"


def test_optuna_and_slurm_configs_compose():
    cfg = _compose("sweep=optuna")
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "maximize"
    assert set(cfg.hydra.sweeper.params) == {"optim.lr", "model.encoder.dropout", "model.hidden_size"}
    cfg = _compose("hydra/launcher=slurm", "trainer.devices=4", "trainer.num_nodes=2")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["tasks_per_node"] == launcher["gpus_per_node"] == 4 and launcher["nodes"] == 2


def _multirun(tmp_path, *args):
    sweep_dir = tmp_path / "sweep"
    result = run_module(
        "seq2seq.train",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *args,
        cwd=tmp_path,
        text=True,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return sweep_dir, {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")}


def test_sweep_records_a_failed_job_and_goes_on(tmp_path):
    # Job 0 has no training data left after filtering (fails); job 1 trains.
    _, jobs = _multirun(
        tmp_path, "sweep=bottleneck", "model/attention=none", "model/encoder=gru", "data.max_words=0,100"
    )
    assert set(jobs) == {"0", "1"}
    assert jobs["0"]["status"] == "failed" and "data.max_words=0" in jobs["0"]["error"]
    assert jobs["1"]["status"] == "completed" and jobs["1"]["choices"]["model/attention"] == "none"


def test_bottleneck_sweep_runs_one_job_per_combination(tmp_path):
    _, jobs = _multirun(
        tmp_path, "sweep=bottleneck", "model/attention=none,luong_dot", "model/encoder=gru,rnn"
    )
    combos = {(j["choices"]["model/encoder"], j["choices"]["model/attention"]) for j in jobs.values()}
    assert combos == {("gru", "none"), ("gru", "luong_dot"), ("rnn", "none"), ("rnn", "luong_dot")}
    assert all(j["status"] == "completed" for j in jobs.values())


@pytest.mark.slow  # two tiny jobs in a fresh interpreter
def test_seeds_on_the_command_line_repeat_each_job_and_group_as_one_variant(tmp_path):
    from seq2seq.evaluation.record import RunRecord
    from seq2seq.evaluation.seeds import group_by_seed

    sweep_dir, jobs = _multirun(
        tmp_path, "sweep=bottleneck", "model/attention=none", "model/encoder=gru", "seed=1,2"
    )
    assert sorted(j["config"]["seed"] for j in jobs.values()) == [1, 2]
    (group,) = group_by_seed([RunRecord.read(p.parent) for p in sorted(sweep_dir.glob("*/results.json"))])
    assert group.seeds == ["1", "2"] and group.metric("test/bleu").n == 2


def test_optuna_sweep_optimises_the_returned_val_bleu(tmp_path):
    sweep_dir, jobs = _multirun(tmp_path, "sweep=optuna", "hydra.sweeper.n_trials=2")
    assert len(jobs) == 2 and all(j["status"] == "completed" for j in jobs.values())
    optimization = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    best = max(j["metrics"]["val/bleu"] for j in jobs.values())
    assert abs(float(optimization.best_value) - best) < 1e-6


def test_offline_wandb_sweep_job_keeps_metrics_table_and_tags(tmp_path):
    """W&B offline: each job's run directory holds its metrics, tags, group and the BLEU-by-length table."""
    sweep_dir, jobs = _multirun(
        tmp_path, "sweep=bottleneck", "model/attention=bahdanau", "model/encoder=gru", "logger=wandb"
    )
    assert list(jobs) == ["0"] and jobs["0"]["status"] == "completed"
    (run,) = (sweep_dir / "0" / "wandb").glob("offline-run-*")
    log = next(run.glob("run-*.wandb")).read_bytes()  # protobuf records: keys are stored as UTF-8 strings
    for key in (b"train/loss", b"val/bleu", b"test/bleu", b"test/chrf", b"train/teacher_forcing_ratio"):
        assert key in log, key
    for tag in (b"attention:bahdanau", b"encoder:gru", b"hidden:16", b"bottleneck"):
        assert tag in log, tag
    (table,) = (run / "files" / "media" / "table" / "test").glob("bleu_by_length*.table.json")
    table = json.loads(table.read_text())
    assert "bucket" in table["columns"] and len(table["data"]) == 6
    assert list((run / "files" / "media" / "images" / "val" / "attention").glob("*.png"))
