"""Resume and pre-emption: a run stopped and resumed ends exactly where an uninterrupted one does."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import Callback

import seq2seq.train as train_module
from seq2seq.train import TrainingInterrupted, train
from seq2seq.training.resume import _differences, resolve_ckpt_path
from tests.conftest import KERNEL_CACHE, ROOT, TINY, compose_train

# 48 copy pairs in 6 batches per epoch; dropout and teacher-forcing coin flips draw random numbers, and the
# plateau scheduler (patience 0) halves the learning rate after every validation that does not improve.
RESUMABLE = [
    "data.batch.max_tokens=60",
    "model.encoder.dropout=0.3",
    "teacher_forcing=constant",
    "teacher_forcing.ratio=0.5",
    "optim.plateau.patience=0",
    "trainer.max_epochs=5",
    "eval.attention_examples=0",
]


class SignalAt(Callback):
    """Send this process ``signum`` during training step ``step`` (1, 2, ...), as SLURM or a user would."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step - 1:
            os.kill(os.getpid(), self.signum)


def run(directory: Path, monkeypatch, *overrides: str, callbacks: tuple[Callback, ...] = ()) -> dict:
    """Train in ``directory/run`` (the run directory stays the same across calls: resume in place)."""
    build = train_module.build_callbacks
    monkeypatch.setattr(train_module, "build_callbacks", lambda cfg, d: build(cfg, d) + list(callbacks))
    return train(compose_train(directory, *TINY, *RESUMABLE, *overrides))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]


def test_stopped_and_resumed_training_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    """Stopped at an epoch's end (max_steps) and mid-epoch (Ctrl+C), resumed in place: same weights and
    scores."""
    whole = run(tmp_path / "whole", monkeypatch, "trainer.max_steps=14")

    pieces = tmp_path / "pieces"
    assert run(pieces, monkeypatch, "trainer.max_steps=6")["train"]["steps"] == 6
    with pytest.raises(TrainingInterrupted) as stop:
        run(
            pieces,
            monkeypatch,
            "trainer.max_steps=14",
            "ckpt_path=last",
            callbacks=(SignalAt(9, signal.SIGINT),),
        )
    assert stop.value.signum == signal.SIGINT
    recorded = json.loads((pieces / "run" / "results.json").read_text())
    assert recorded["status"] == "interrupted" and recorded["train"]["steps"] == 9
    assert "SIGINT" in recorded["error"] and recorded["resume"].endswith(
        f"hydra.run.dir={pieces / 'run'} ckpt_path=last"
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers are put back
    resumed = run(pieces, monkeypatch, "trainer.max_steps=14", "ckpt_path=last")

    assert resumed["status"] == "completed" and resumed["train"]["steps"] == 14
    assert resumed["metrics"] == whole["metrics"]
    assert resumed["bleu_by_length"] == whole["bleu_by_length"]
    a, b = final_weights(tmp_path / "whole" / "run"), final_weights(pieces / "run")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # metrics.csv keeps the history of all three parts
    with (pieces / "run" / "metrics.csv").open() as f:
        steps = {int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")}
    assert min(steps) == 0 and max(steps) >= 12 and len(steps) >= 13


def test_a_stop_at_an_epochs_last_step_resumes_exactly(tmp_path, monkeypatch):
    """SIGTERM during step 12, the last of epoch 2 (6 batches each): the stop is made after step 13, inside
    epoch 3; the resumed run ends with the weights and scores of an uninterrupted one. (Stopped at the epoch's
    end, Lightning closed the epoch and the resumed run started one epoch too far on: other batches.)"""
    whole = run(tmp_path / "whole", monkeypatch, "trainer.max_steps=20")
    pieces = tmp_path / "pieces"
    with pytest.raises(TrainingInterrupted) as stop:
        run(pieces, monkeypatch, "trainer.max_steps=20", callbacks=(SignalAt(12, signal.SIGTERM),))
    assert stop.value.signum == signal.SIGTERM
    assert json.loads((pieces / "run" / "results.json").read_text())["train"]["steps"] == 13
    resumed = run(pieces, monkeypatch, "trainer.max_steps=20", "ckpt_path=last")
    assert resumed["train"]["steps"] == 20 and resumed["metrics"] == whole["metrics"]
    a, b = final_weights(tmp_path / "whole" / "run"), final_weights(pieces / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ckpt_path_last_resolves_in_the_run_directory(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    with caplog.at_level("WARNING"):
        assert resolve_ckpt_path("last", tmp_path) is None  # nothing saved yet: training starts from scratch
    assert "does not exist yet" in caplog.text
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    assert resolve_ckpt_path("last", tmp_path) == last
    assert resolve_ckpt_path(None, tmp_path) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # a requeued SLURM job resumes on its own
    assert resolve_ckpt_path(None, tmp_path) == last
    with pytest.raises(ValueError, match="no such checkpoint file"):
        resolve_ckpt_path(str(tmp_path / "missing.ckpt"), tmp_path)


def test_resuming_with_another_model_names_the_differences(tiny_cfg, tmp_path):
    train(tiny_cfg())
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match=r"model\.hidden_size: checkpoint 16, this run 32") as error:
        train(tiny_cfg("model.hidden_size=32", f"ckpt_path={last}"))
    assert ".hydra/overrides.yaml" in str(error.value)


def test_preemption_signal_saves_the_checkpoint_before_submitit_requeues(tmp_path, monkeypatch):
    """submitit's SIGUSR2 handler (requeue, exit) runs only after last.ckpt and results.json are written."""
    requeued = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: requeued.append(signum))
    try:
        with pytest.raises(TrainingInterrupted) as stop:
            run(tmp_path, monkeypatch, "trainer.max_steps=-1", callbacks=(SignalAt(2, signal.SIGUSR2),))
        assert requeued == []
        checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
        assert checkpoint["global_step"] == 2
        assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "interrupted"
        stop.value.pass_on()
        assert requeued == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.slow
def test_sigterm_leaves_a_checkpoint_that_the_recorded_command_resumes(tmp_path):
    run_dir = tmp_path / "run"
    env = {
        "PATH": "/usr/bin:/bin",
        "WANDB_MODE": "offline",
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        **KERNEL_CACHE,
    }
    args = [*TINY, "trainer.max_steps=-1", "trainer.max_epochs=1000", "callbacks.early_stopping=null"]
    args += [f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "seq2seq.train", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").exists():  # after the first validation
        assert process.poll() is None and time.monotonic() < deadline, "training did not get going"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)

    assert process.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert "Traceback" not in output and "resume with" in output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == results["train"]["steps"] > 0

    command = shlex.split(results["resume"])
    assert command[:3] == ["python", "-m", "seq2seq.train"] and command[-1] == "ckpt_path=last"
    epochs = results["train"]["epochs"] + 1  # the recorded command, with an end in sight
    resumed = subprocess.run(
        [sys.executable, *command[1:], f"trainer.max_epochs={epochs}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["train"]["epochs"] == epochs
    assert results["train"]["steps"] == 3 * epochs  # 3 batches per epoch: none lost, none repeated


def test_a_run_resumed_in_place_continues_its_wandb_run(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    train(tiny_cfg("logger=wandb"))
    train(tiny_cfg("logger=wandb", "trainer.max_steps=4", "trainer.max_epochs=2", "ckpt_path=last"))
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({run.name.rsplit("-", 1)[-1] for run in runs}) == 1  # one id


def test_an_option_added_since_the_checkpoint_is_no_difference_at_its_old_default():
    """A checkpoint written before ``model.attention.reverse`` existed resumes with it False (the behaviour it
    was trained with), but not with it True."""
    saved = {"attention": {"name": "luong_local", "window": 10}}
    assert list(_differences(saved, {"attention": {**saved["attention"], "reverse": False}}, "model")) == []
    changed = {"attention": {**saved["attention"], "reverse": True}}
    ((key, old, new),) = _differences(saved, changed, "model")
    assert (key, new) == ("model.attention.reverse", True) and "absent" in repr(old) and "false" in repr(old)
    assert list(_differences({"a": None}, {"a": 0}, "x")) == [("x.a", None, 0)]  # a saved null is not absent
