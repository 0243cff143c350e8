"""Scaling out: DDP over 2 CPU processes (gloo) scores exactly as one process, in one run directory (also in a
multirun); mixed precision is refused on the CPU; the GPU and SLURM configs compose."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from seq2seq.config.checks import check_precision
from seq2seq.evaluate import evaluate
from seq2seq.train import train
from tests.conftest import CONF, TINY, TOY, run_module

# 2 processes; 30 test sentences in several evaluation batches, dealt out to the ranks unevenly.
DDP = [
    *TINY,
    "trainer=ddp_cpu",
    "trainer.max_steps=-1",
    "trainer.max_epochs=3",
    "data.sizes.val=20",
    "data.sizes.test=30",
    "data.batch.eval_max_tokens=40",
    "eval.attention_examples=0",
]


# The same with a small Transformer on the toy task: every rank's per-head alignment counts are gathered too.
DDP_TRANSFORMER = [
    *TOY,
    "model/encoder=transformer",
    "model/decoder=transformer",
    "model.encoder.ff_size=32",
    "model.decoder.ff_size=32",
    *(o for o in DDP[len(TINY) :] if not o.startswith("data.batch")),
    "data.batch.eval_max_tokens=60",
    "trainer.max_epochs=1",
]


def cli(tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m seq2seq.train`` in ``tmp_path`` (DDP's child processes re-run the script)."""
    return run_module(
        "seq2seq.train",
        *args,
        f"paths.cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
        text=True,
        timeout=timeout,
    )


def entries(directory: Path) -> list[str]:
    """What a run left in a directory (the hidden caches of HOME aside)."""
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def rows(path: Path) -> list[list[str]]:
    with path.open() as f:
        return list(csv.reader(f, delimiter="\t"))


@pytest.mark.parametrize("model", ["rnn", pytest.param("transformer", marks=pytest.mark.slow)])
def test_two_process_ddp_scores_equal_a_one_process_evaluation(tmp_path, model):
    run_dir = tmp_path / "run"
    overrides = DDP if model == "rnn" else DDP_TRANSFORMER
    result = cli(tmp_path, *overrides, f"hydra.run.dir={run_dir}", timeout=300 if model == "rnn" else 600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert entries(tmp_path) == ["cache", "run"]  # no directory of a child process
    assert (run_dir / "train_ddp_process_1.log").exists()  # rank 1 ran, logging into the same directory
    trained = json.loads((run_dir / "results.json").read_text())
    assert trained["status"] == "completed"
    if model == "rnn":  # each rank: 2 of the epoch's 4 batches (3 split to share evenly)
        assert trained["train"]["steps"] == 3 * 2

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "evaluate",
            overrides=[
                f"output_dir={tmp_path / 'one'}",
                f"ckpt_path={trained['checkpoint']}",
                "accelerator=cpu",
            ],
        )
    single = evaluate(cfg)  # one process, the same checkpoint, the same test split

    assert single["evaluated"]["sentences"] == 30
    for key in ("test/bleu", "test/chrf", "test/exact_match", "test/loss"):
        assert trained["metrics"][key] == single["metrics"][key], key
    # each rank decodes its own batches in one stream, its rows refilled from its next batches: the same
    # tokens, attention weights from other batch shapes (float rounding only)
    entropy = single["metrics"]["test/attention_entropy"]
    assert trained["metrics"]["test/attention_entropy"] == pytest.approx(entropy, rel=1e-6)
    assert trained["bleu_by_length"] == single["bleu_by_length"]
    assert rows(run_dir / "predictions" / "test.tsv") == rows(tmp_path / "one" / "predictions" / "test.tsv")
    if model == "transformer":  # alignment per layer and head, from both ranks' sentences, as one process
        assert trained["alignment_heads"] is not None and trained["alignment"]["sentences"] > 20
        assert trained["alignment"] == single["alignment"]
        assert trained["alignment_heads"] == single["alignment_heads"]
        assert trained["metrics"]["test/alignment_accuracy"] == single["metrics"]["test/alignment_accuracy"]


@pytest.mark.slow
def test_ddp_inside_a_multirun_keeps_one_directory_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = cli(
        tmp_path,
        "-m",
        *DDP,
        "trainer.max_epochs=1",
        "model/attention=none,luong_dot",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert entries(tmp_path) == ["cache", "sweep"]
    assert entries(sweep) == [
        "0",
        "1",
        "dashboard",
        "multirun.yaml",
        "sweep.json",
    ]  # + the end-of-sweep report
    for job, attention in (("0", "none"), ("1", "luong_dot")):
        results = json.loads((sweep / job / "results.json").read_text())
        assert results["status"] == "completed" and results["choices"]["model/attention"] == attention
        assert (sweep / job / "train_ddp_process_1.log").exists()
        assert not [p for p in (sweep / job).iterdir() if p.is_dir() and p.name.isdigit()]  # no nested sweep


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_on_the_cpu_is_refused_before_training(tiny_cfg, tmp_path, precision):
    with pytest.raises(ValueError, match=rf"trainer.precision={precision} needs a GPU.*32-true"):
        train(tiny_cfg(f"trainer.precision={precision}"))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only case")
def test_automatic_accelerator_without_a_gpu_refuses_mixed_precision():
    with pytest.raises(ValueError, match=r"no GPU found"):
        check_precision(OmegaConf.create({"precision": "bf16-mixed", "accelerator": "auto"}))
    check_precision(OmegaConf.create({"precision": "32-true", "accelerator": "auto"}))


def test_gpu_ddp_and_slurm_configs_compose():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        ddp = compose("train", overrides=["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
        cpu = compose("train", overrides=["trainer=ddp_cpu"])
        slurm = compose(
            "train",
            overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
            return_hydra_config=True,
        )
    assert (ddp.trainer.accelerator, ddp.trainer.strategy, ddp.trainer.devices) == ("gpu", "ddp", 4)
    assert (cpu.trainer.accelerator, cpu.trainer.strategy, cpu.trainer.devices) == ("cpu", "ddp", 2)
    for trainer in (ddp.trainer, cpu.trainer):
        assert trainer.use_distributed_sampler is False and trainer.reload_dataloaders_every_n_epochs == 1
    launcher = OmegaConf.to_container(slurm.hydra.launcher, resolve=True)
    assert launcher["nodes"] == 2 and launcher["gpus_per_node"] == launcher["tasks_per_node"] == 4
