"""One rule finds a checkpoint — a file, or a run directory's best.ckpt, else last.ckpt — for evaluate,
translate and influence alike; and one reader gives a clear error for a file it cannot use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from seq2seq.analysis.influence import run as influence
from seq2seq.evaluate import evaluate
from seq2seq.inference.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, read_checkpoint
from seq2seq.train import train
from seq2seq.translate import translate
from tests.conftest import CONF, TINY, compose_train


def _compose(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.fixture(scope="module")
def last_only(tmp_path_factory) -> Path:
    """A tiny trained run whose best.ckpt is gone: only checkpoints/last.ckpt is left."""
    tmp = tmp_path_factory.mktemp("run")
    assert train(compose_train(tmp, *TINY))["status"] == "completed"
    run_dir = tmp / "run"
    (run_dir / "checkpoints" / "best.ckpt").unlink()
    return run_dir


def test_find_checkpoint_prefers_best_then_last(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    with pytest.raises(
        CheckpointError, match=r"is a directory without checkpoints/best\.ckpt or checkpoints/last"
    ):
        find_checkpoint(tmp_path / "run")
    (checkpoints / "last.ckpt").write_bytes(b"x")
    assert find_checkpoint(tmp_path / "run") == checkpoints / "last.ckpt"
    (checkpoints / "best.ckpt").write_bytes(b"x")
    assert find_checkpoint(tmp_path / "run") == checkpoints / "best.ckpt"
    assert find_checkpoint(checkpoints / "last.ckpt") == checkpoints / "last.ckpt"  # a file is itself
    with pytest.raises(CheckpointError, match=r"run_dir=.*nowhere does not exist"):
        find_checkpoint(tmp_path / "nowhere", "run_dir")
    with pytest.raises(CheckpointError, match="missing ckpt_path"):
        find_checkpoint(None)


def test_evaluate_translate_and_influence_take_last_when_there_is_no_best(last_only, tmp_path, capsys):
    last = last_only / "checkpoints" / "last.ckpt"
    results = evaluate(_compose("evaluate", f"run_dir={last_only}", f"output_dir={tmp_path / 'eval'}"))
    assert results["evaluated"]["checkpoint"] == str(last.resolve())
    via_dir = evaluate(_compose("evaluate", f"ckpt_path={last_only}", f"output_dir={tmp_path / 'eval2'}"))
    assert via_dir["evaluated"]["checkpoint"] == str(last.resolve())
    assert via_dir["metrics"] == results["metrics"]

    source = tmp_path / "in.txt"
    source.write_text("w01 w02 w03\n")
    capsys.readouterr()
    from_dir = [t.text for t in translate(_compose("translate", f"ckpt_path={last_only}", f"input={source}"))]
    from_file = [t.text for t in translate(_compose("translate", f"ckpt_path={last}", f"input={source}"))]
    assert from_dir == from_file and len(from_dir) == 1

    payload = influence(_compose("influence", f"run_dir={last_only}", "max_sentences=4", "threads=1"))
    assert payload["checkpoint"] == str(last)
    assert json.loads((last_only / "influence.json").read_text())["checkpoint"] == str(last)


def test_one_reader_for_training_and_inference(last_only, tmp_path):
    """Training (``full``: it resumes) and inference read through the same reader, with the same message."""
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((last_only / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    for full in (False, True):
        with pytest.raises(CheckpointError, match=r"truncated\.ckpt is not a PyTorch checkpoint"):
            read_checkpoint(truncated, full=full)
    trained = load_checkpoint(last_only / "checkpoints" / "last.ckpt")
    assert not trained.model.training and trained.cfg.model.hidden_size == 16
    weights = torch.load(last_only / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert torch.equal(trained.model.decoder.generator.weight, weights["model.decoder.generator.weight"])
