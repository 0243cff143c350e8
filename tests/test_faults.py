"""Fault injection: kills at random points of a training, then resume; damaged corpora and checkpoints; signals
outside training. Each fault ends in a clean message (or an exact resume) and changes no existing file."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import Callback

import seq2seq.train as train_module
from seq2seq.data.errors import DataError
from seq2seq.evaluate import evaluate
from seq2seq.inference.checkpoint import CheckpointError
from seq2seq.train import TrainingInterrupted, train
from tests.conftest import KERNEL_CACHE, ROOT, TINY, compose_train, run_module
from tests.test_checkpoint import _compose

# enough steps and checkpoints (a validation every 2 steps) for kills to land anywhere; one thread, so a
# killed-and-resumed run and an uninterrupted one compute bit for bit alike
KILLABLE = [
    *TINY,
    "threads=1",
    "data.batch.max_tokens=60",
    "model.encoder.dropout=0.3",
    "trainer.max_steps=24",
    "trainer.max_epochs=6",
    "trainer.val_check_interval=2",
    "callbacks.early_stopping=null",
    "eval.attention_examples=0",
]


def files(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "WANDB_MODE": "offline",
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        **KERNEL_CACHE,
    }


def _kill_mid_run(
    run_dir: Path, args: list[str], tmp_path: Path, wait_for_checkpoint: bool, delay: float
) -> bool:
    """Start a training, SIGKILL it ``delay`` seconds after its first checkpoint (or its start); False if the run
    had already completed by then (its results written, or its process gone)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "seq2seq.train", *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    marker = run_dir / "checkpoints" / "last.ckpt" if wait_for_checkpoint else run_dir / ".hydra"
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    process.kill()  # SIGKILL: no handler runs, nothing is saved on the way out
    killed = process.wait() == -signal.SIGKILL
    results = run_dir / "results.json"  # written at the end, before the process tears down and exits
    return killed and not (results.exists() and json.loads(results.read_text())["status"] == "completed")


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_ends_where_an_uninterrupted_run_does(tmp_path):
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    whole = tmp_path / "whole"
    done = run_module("seq2seq.train", *KILLABLE, cache, f"hydra.run.dir={whole}", cwd=tmp_path, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = json.loads((whole / "results.json").read_text())

    rng = random.Random(13)
    # a kill before the first checkpoint (the resume starts from scratch) and two at random times after it
    for point, wait_for_checkpoint in enumerate((False, True, True)):
        run_dir = tmp_path / f"killed{point}"
        args = [*KILLABLE, cache, f"hydra.run.dir={run_dir}"]
        delay = rng.uniform(0.0, 1.5) if wait_for_checkpoint else 0.0
        # a run that ends before its kill lands is started again with half the delay: every point kills a live run
        for _ in range(6):
            if _kill_mid_run(run_dir, args, tmp_path, wait_for_checkpoint, delay):
                break
            shutil.rmtree(run_dir)
            delay /= 2
        else:
            pytest.fail(f"point {point}: six runs ended before their kill landed")
        # a kill mid-save may leave its temporary file (nothing runs on SIGKILL) but never a partial checkpoint
        resumed = run_module("seq2seq.train", *args, "ckpt_path=last", cwd=tmp_path, text=True)
        assert resumed.returncode == 0, resumed.stdout[-1500:] + resumed.stderr[-1500:]
        assert not list(run_dir.rglob("*.tmp")), (
            "the resumed run left its killed predecessor's temporary file"
        )
        results = json.loads((run_dir / "results.json").read_text())
        assert results["status"] == "completed" and results["train"]["steps"] == 24
        assert results["metrics"] == expected["metrics"], point
        a, b = weights(whole), weights(run_dir)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), point


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory) -> Path:
    """A tiny run of a two-file corpus: its directory (the corpus is in ``<tmp>/corpus``)."""
    tmp = tmp_path_factory.mktemp("faults")
    corpus = tmp / "corpus"
    corpus.mkdir()
    words = [f"w{i}" for i in range(30)]
    rng = random.Random(0)
    for split, size in (("train", 60), ("val", 10), ("test", 10)):
        lines = [" ".join(rng.choices(words, k=rng.randint(2, 7))) for _ in range(size)]
        (corpus / f"{split}.src").write_text("".join(f"{line}\n" for line in lines))
        (corpus / f"{split}.tgt").write_text("".join(f"{line.upper()}\n" for line in lines))
    cfg = compose_train(tmp, *_corpus_overrides(corpus))
    assert train(cfg)["status"] == "completed"
    return tmp


def _corpus_overrides(corpus: Path) -> list[str]:
    return [
        *[
            o
            for o in TINY
            if not o.startswith(("data=", "data.sizes", "data.min_len", "data.max_len", "data.sym"))
        ],
        "data=parallel_text",
        f"data.dir={corpus}",
        "data.tokenizer.model_type=word",
        "data.tokenizer.vocab_size=100",
    ]


CORPUS_DAMAGE = {
    "truncated": (lambda b: b[: len(b) // 2].rsplit(b"\n", 1)[0] + b"\n", r"has \d+ lines but .* has \d+"),
    "flipped byte": (lambda b: b[:5] + b"\xff" + b[6:], r"train.tgt:1: not valid UTF-8"),
    "UTF-16": (lambda b: b.decode().encode("utf-16"), r"train.tgt:1: not valid UTF-8"),
    "old-Mac line ends": (lambda b: b.replace(b"\n", b"\r"), r"train.tgt:1: a carriage return"),
}


@pytest.mark.parametrize("damage", sorted(CORPUS_DAMAGE))
def test_a_damaged_corpus_gives_a_clean_error_and_changes_no_file(corpus_run, tmp_path, damage):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in (corpus_run / "corpus").iterdir():
        (corpus / path.name).write_bytes(path.read_bytes())
    change, message = CORPUS_DAMAGE[damage]
    target = corpus / "train.tgt"
    target.write_bytes(change(target.read_bytes()))
    before = files(corpus)
    with pytest.raises(DataError, match=message):
        train(compose_train(tmp_path, *_corpus_overrides(corpus)))
    assert files(corpus) == before


CHECKPOINT_DAMAGE = {
    "truncated": (lambda b: b[: len(b) // 3], "not a zip archive"),
    "flipped bytes": (
        lambda b: b[:4000] + bytes(x ^ 0x5A for x in b[4000:4010]) + b[4010:],
        "fails its checksum",
    ),
    "zeroed block": (lambda b: b[: len(b) // 2] + bytes(256) + b[len(b) // 2 + 256 :], "fails its checksum"),
    "not a checkpoint": (lambda b: b"hello\n" * 100, "not a zip archive"),
}


@pytest.mark.parametrize("damage", sorted(CHECKPOINT_DAMAGE))
def test_a_damaged_checkpoint_gives_a_clean_error_everywhere_and_changes_no_file(
    corpus_run, tmp_path, damage
):
    run_dir = corpus_run / "run"
    before = files(run_dir)
    change, message = CHECKPOINT_DAMAGE[damage]
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(change((run_dir / "checkpoints" / "last.ckpt").read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        evaluate(_compose("evaluate", f"ckpt_path={broken}", f"output_dir={tmp_path / 'eval'}"))
    cfg = compose_train(tmp_path, *_corpus_overrides(corpus_run / "corpus"), f"ckpt_path={broken}")
    with pytest.raises(CheckpointError, match=message):  # training reads it through the same reader
        train(cfg)
    assert files(run_dir) == before


@pytest.mark.slow
def test_a_truncated_checkpoint_given_to_training_ends_without_a_traceback(corpus_run, tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes((corpus_run / "run" / "checkpoints" / "last.ckpt").read_bytes()[:10000])
    args = [
        *_corpus_overrides(corpus_run / "corpus"),
        f"ckpt_path={broken}",
        f"hydra.run.dir={tmp_path / 'r'}",
    ]
    result = run_module("seq2seq.train", *args, cwd=tmp_path, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "not a zip archive" in output and "Traceback" not in output


@pytest.mark.slow
def test_sigterm_during_evaluate_stops_it_and_says_so(corpus_run, tmp_path):
    src, ref = tmp_path / "big.src", tmp_path / "big.ref"
    rng = random.Random(1)
    lines = [" ".join(rng.choices([f"w{i}" for i in range(30)], k=40)) for _ in range(30000)]
    src.write_text("".join(f"{line}\n" for line in lines))
    ref.write_text("".join(f"{line.upper()}\n" for line in lines))
    out = tmp_path / "eval"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seq2seq.evaluate",
            f"run_dir={corpus_run / 'run'}",
            f"src={src}",
            f"ref={ref}",
            "max_words=1000",
            f"hydra.run.dir={out}",
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (out / "evaluate.yaml").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the decoding of 30,000 sentences
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert "stopped by SIGTERM" in output and "Traceback" not in output
    assert json.loads((out / "results.json").read_text())["status"] == "interrupted"
    assert not list(out.rglob("*.tmp"))


class SigtermWhileTesting(Callback):
    """Send this process SIGTERM at the first test batch, as ``kill`` or SLURM would."""

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the handler runs before the next batch


def test_sigterm_while_testing_stops_at_once_and_records_how_to_finish(tmp_path, monkeypatch):
    build = train_module.build_callbacks
    monkeypatch.setattr(
        train_module, "build_callbacks", lambda cfg, d: [*build(cfg, d), SigtermWhileTesting()]
    )
    with pytest.raises(TrainingInterrupted) as stop:
        train(compose_train(tmp_path, *TINY, "data.sizes.test=400"))
    assert stop.value.signum == signal.SIGTERM
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "interrupted" and "SIGTERM during testing" in results["error"]
    assert results["resume"].endswith("ckpt_path=last") and not (tmp_path / "run" / "predictions").exists()
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers put back


class SignalInValidation(Callback):
    """Send SIGTERM at the first batch of the ``nth`` validation (sanity check not counted); count the
    validation batches that still ran after it."""

    def __init__(self, nth: int) -> None:
        self.nth, self.seen, self.after = nth, 0, 0

    def on_validation_start(self, trainer, pl_module) -> None:
        self.seen += 0 if trainer.sanity_checking else 1

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.seen == self.nth and not trainer.sanity_checking:
            if batch_idx == 0:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.5)
            self.after += 1


def test_sigterm_during_a_validation_stops_it_at_once_and_the_resume_is_exact(tmp_path, monkeypatch):
    """The stop saves nothing (the step's validation would be lost): the resume replays from the previous
    validation's last.ckpt and ends as an uninterrupted run."""
    build = train_module.build_callbacks
    overrides = [*KILLABLE[len(TINY) :], "trainer.max_steps=8"]
    whole = train(compose_train(tmp_path / "whole", *TINY, *overrides))
    stopper = SignalInValidation(nth=2)
    monkeypatch.setattr(train_module, "build_callbacks", lambda cfg, d: [*build(cfg, d), stopper])
    with pytest.raises(TrainingInterrupted) as stop:
        train(compose_train(tmp_path / "cut", *TINY, *overrides))
    assert stop.value.signum == signal.SIGTERM and stopper.after == 0  # stopped inside the first batch
    assert "during validation at step 4" in stop.value.results["error"]
    assert stop.value.results["train"]["steps"] == 2  # where the resume continues: the last checkpoint
    run_dir = tmp_path / "cut" / "run"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    monkeypatch.setattr(train_module, "build_callbacks", build)
    resumed = train(compose_train(tmp_path / "cut", *TINY, *overrides, "ckpt_path=last"))
    assert resumed["status"] == "completed" and resumed["metrics"] == whole["metrics"]
    a, b = weights(tmp_path / "whole" / "run"), weights(run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
