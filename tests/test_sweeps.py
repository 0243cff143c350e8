"""Sweeps: the multirun configs compose, a real tiny sweep survives a failing job, Optuna gets the metric."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from tests.conftest import CONF, TINY, run_module
from tests.wandb_records import read_run


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
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.logger.group is None  # W&B groups a sweep's jobs by their sweep directory


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


def _multirun(tmp_path, *args, sweep="sweep", returncode=0):
    sweep_dir = tmp_path / sweep
    result = run_module(
        "seq2seq.train",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *args,
        cwd=tmp_path,
        text=True,
    )
    assert result.returncode == returncode, (result.stdout + result.stderr)[-3000:]
    jobs = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")}
    return sweep_dir, jobs, result.stdout + result.stderr


def test_sweep_records_a_failed_job_goes_on_reports_it_and_exits_non_zero(tmp_path):
    # Job 0 fails (data.max_words=0 is refused); job 1 trains. The sweep ends with status 1.
    sweep_dir, jobs, out = _multirun(
        tmp_path,
        "sweep=bottleneck",
        "model/attention=none",
        "model/encoder=gru",
        "data.max_words=0,100",
        returncode=1,
    )
    assert set(jobs) == {"0", "1"}
    assert jobs["0"]["status"] == "failed" and "data.max_words=0" in jobs["0"]["error"]
    assert jobs["1"]["status"] == "completed" and jobs["1"]["choices"]["model/attention"] == "none"
    assert "job 1 of 2: " in out and "job 2 of 2: " in out
    assert "sweep: 2 jobs planned — 1 completed, 1 failed, 0 interrupted, 0 never ran" in out
    assert "  failed job 0 (data.max_words=0): ConfigError: data.max_words=0: must be at least 1" in out
    index = sweep_dir / "dashboard" / "index.html"
    assert f"dashboard: {index.resolve()}" in out and index.stat().st_size > 1000


def test_bottleneck_sweep_runs_one_job_per_combination(tmp_path):
    _, jobs, out = _multirun(
        tmp_path, "sweep=bottleneck", "model/attention=none,luong_dot", "model/encoder=gru,rnn"
    )
    assert "sweep: 4 jobs planned — 4 completed, 0 failed, 0 interrupted, 0 never ran" in out
    combos = {(j["choices"]["model/encoder"], j["choices"]["model/attention"]) for j in jobs.values()}
    assert combos == {("gru", "none"), ("gru", "luong_dot"), ("rnn", "none"), ("rnn", "luong_dot")}
    assert all(j["status"] == "completed" for j in jobs.values())


@pytest.mark.slow  # two tiny jobs in a fresh interpreter
def test_seeds_on_the_command_line_repeat_each_job_and_group_as_one_variant(tmp_path):
    from seq2seq.evaluation.record import RunRecord
    from seq2seq.evaluation.seeds import group_by_seed

    sweep_dir, jobs, _ = _multirun(
        tmp_path, "sweep=bottleneck", "model/attention=none", "model/encoder=gru", "seed=1,2"
    )
    assert sorted(j["config"]["seed"] for j in jobs.values()) == [1, 2]
    (group,) = group_by_seed([RunRecord.read(p.parent) for p in sorted(sweep_dir.glob("*/results.json"))])
    assert group.seeds == ["1", "2"] and group.metric("test/bleu").n == 2


def test_optuna_sweep_optimises_the_returned_val_bleu(tmp_path):
    sweep_dir, jobs, out = _multirun(tmp_path, "sweep=optuna", "hydra.sweeper.n_trials=2")
    assert "job 2 of 2: " in out and "sweep: 2 jobs planned — 2 completed" in out
    assert len(jobs) == 2 and all(j["status"] == "completed" for j in jobs.values())
    optimization = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    best = max(j["metrics"]["val/bleu"] for j in jobs.values())
    assert abs(float(optimization.best_value) - best) < 1e-6


def test_offline_wandb_sweeps_tell_the_story(tmp_path):
    """W&B offline, read back with wandb's protobuf records: one group per sweep launch, shared by its jobs;
    readable distinct names; the config once with the choices flat; per-bucket scalars, learning rate,
    position accuracy; val/bleu only where a validation ran; the BLEU-by-length table."""
    first, jobs, _ = _multirun(
        tmp_path,
        "sweep=bottleneck",
        "model/attention=none,bahdanau",
        "model/encoder=gru",
        "logger=wandb",
        "trainer.val_check_interval=2",  # one validation, at global step 1
        sweep="first",
    )
    second, again, _ = _multirun(
        tmp_path,
        "sweep=bottleneck",
        "model/attention=bahdanau",
        "model/encoder=gru",
        "logger=wandb",
        sweep="second",
    )
    assert len(jobs) == 2 and len(again) == 1
    runs = {  # "first/0", "first/1", "second/0"
        f"{sweep.name}/{path.parents[1].name}": read_run(path)
        for sweep in (first, second)
        for path in sweep.glob("*/wandb/offline-run-*")
    }
    assert runs["first/0"].group == runs["first/1"].group == "first" and runs["second/0"].group == "second"
    assert runs["first/0"].name == "gru-none-h16-s3" and runs["first/1"].name == "gru-bahdanau-h16-s3"
    assert {run.job_type for run in runs.values()} == {"train"}
    for run in runs.values():
        assert (
            run.config["choices"]["attention"] in ("none", "bahdanau")
            and run.config["model"]["hidden_size"] == 16
        )
        assert "cfg" not in run.config and "config" not in run.config  # logged once, not twice
        assert any("train/lr" in row for row in run.history)
        tested = [row for row in run.history if "test/bleu" in row]
        assert len(tested) == 1 and "test/bleu_by_length/1-10" in tested[0]
        assert any(key.startswith("test/position_accuracy/") for row in run.history for key in row)  # a table
    validated = [row for row in runs["first/1"].history if "val/bleu" in row]
    assert [row["trainer/global_step"] for row in validated] == [
        1
    ] and "val/bleu_by_length/1-10" in validated[0]
    assert "attention:bahdanau" in runs["first/1"].tags and "sweep:bottleneck" in runs["first/1"].tags
    (table,) = (first / "1" / "wandb").glob("offline-run-*/files/media/table/test/bleu_by_length*.table.json")
    table = json.loads(table.read_text())
    assert "bucket" in table["columns"] and len(table["data"]) == 6
    assert list((first / "1" / "wandb").glob("offline-run-*/files/media/images/val/attention/*.png"))
