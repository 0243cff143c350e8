"""Guards against lost work (issue "Nothing lost"): diverging training, damaged or poisoned checkpoints, file
modes and atomic writes, and the user mistakes that used to end in a traceback or a silently wrong result."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from seq2seq.config.checks import ConfigError, validate_train, validate_translate
from seq2seq.data import atomic
from seq2seq.data.atomic import write_atomic
from seq2seq.data.errors import DataError
from seq2seq.data.parallel import read_parallel
from seq2seq.data.tokenizer import load_or_train, train_tokenizer
from seq2seq.evaluation.artifacts import pick_examples
from seq2seq.evaluation.record import write_json_atomic
from seq2seq.inference.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from seq2seq.models.decoding import Decoding, decode
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.train import train
from seq2seq.training.finite_guard import FiniteGuard, TrainingDiverged, _all_finite
from tests.conftest import ROOT, TINY, compose_train

# ------------------------------------------------------------------------------------------ a finite guard


def _guard_step(guard: FiniteGuard, loss: float, module: torch.nn.Module, step: int = 1) -> None:
    trainer = SimpleNamespace(global_step=step, gradient_clip_val=1.0)
    module.cfg = SimpleNamespace(optim=SimpleNamespace(lr=0.5))
    guard.on_train_batch_end(trainer, module, {"loss": torch.tensor(loss)}, None, 0)


def test_the_guard_stops_at_a_non_finite_or_exploding_loss_and_says_what_to_lower(tmp_path):
    module = torch.nn.Linear(2, 2)
    guard = FiniteGuard(tmp_path / "checkpoints", max_loss_ratio=10.0)
    _guard_step(guard, 4.0, module)
    _guard_step(guard, 39.0, module)  # under 10 × 4: goes on
    with pytest.raises(TrainingDiverged, match=r"exploded to 41 at step 7.*lower optim.lr \(now 0.5\)"):
        _guard_step(guard, 41.0, module, step=7)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 3.*no checkpoint was saved yet"):
        _guard_step(FiniteGuard(tmp_path / "checkpoints"), float("nan"), module, step=3)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with torch.no_grad():
        module.weight[0, 0] = float("inf")
    with pytest.raises(
        TrainingDiverged, match=r"weights hold NaN or inf.*last good checkpoints are .*last.ckpt"
    ):
        _guard_step(FiniteGuard(tmp_path / "checkpoints"), 1.0, module)


def test_the_guard_refuses_to_save_non_finite_weights_and_tells_huge_from_infinite(tmp_path):
    guard = FiniteGuard(tmp_path)
    trainer = SimpleNamespace(global_step=5, gradient_clip_val=None)
    module = SimpleNamespace(cfg=SimpleNamespace(optim=SimpleNamespace(lr=1e3)))
    guard.on_save_checkpoint(trainer, module, {"state_dict": {"w": torch.ones(3)}})  # finite: saved
    with pytest.raises(TrainingDiverged, match=r"refusing to save .*\(model.w\) at step 5"):
        guard.on_save_checkpoint(
            trainer, module, {"state_dict": {"model.w": torch.tensor([1.0, float("nan")])}}
        )
    assert _all_finite([torch.full((1000,), 1e30)])  # a 2-norm would overflow to inf here
    assert not _all_finite([torch.ones(3), torch.tensor([0.0, float("-inf")])])
    assert not _all_finite([torch.full((1000,), 1e30), torch.tensor([float("nan")])])  # overflow and a NaN


def test_a_diverging_training_stops_and_saves_no_non_finite_checkpoint(tmp_path):
    cfg = compose_train(tmp_path, *TINY, "optim.lr=1e20", "trainer.max_steps=30", "trainer.max_epochs=10")
    with pytest.raises(
        TrainingDiverged, match=r"training diverged: .* at step \d+.*lower optim.lr \(now 1e\+20\)"
    ):
        train(cfg)
    for path in (tmp_path / "run").rglob("*.ckpt"):
        weights = torch.load(path, weights_only=False)["state_dict"]
        assert all(bool(w.isfinite().all()) for w in weights.values() if w.is_floating_point()), path


# ------------------------------------------------------------------------------------------ checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny completed run's directory."""
    tmp = tmp_path_factory.mktemp("guards")
    assert train(compose_train(tmp, *TINY))["status"] == "completed"
    return tmp / "run"


def test_damaged_checkpoints_are_named_for_what_is_wrong(trained, tmp_path):
    good = (trained / "checkpoints" / "last.ckpt").read_bytes()
    cases = {
        "truncated": (good[: len(good) // 2], "not a zip archive: the file is truncated"),
        "flipped": (good[:3000] + bytes([good[3000] ^ 0xFF]) + good[3001:], "fails its checksum"),
        "zeroed": (good[:2000] + bytes(500) + good[2500:], "fails its checksum"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.ckpt"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_a_checkpoint_with_nan_weights_is_refused_and_a_gpu_one_loads_on_the_cpu(trained, tmp_path):
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)
    key = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())
    checkpoint["state_dict"][key] = torch.full_like(checkpoint["state_dict"][key], float("nan"))
    torch.save(checkpoint, tmp_path / "nan.ckpt")
    with pytest.raises(
        CheckpointError, match=rf"non-finite weights \(NaN or inf in {key.removeprefix('model.')}"
    ):
        load_checkpoint(tmp_path / "nan.ckpt")
    # asked for a GPU this machine lacks: the weights load on the CPU (never "corrupt")
    if not torch.cuda.is_available():
        model = load_checkpoint(trained / "checkpoints" / "last.ckpt", map_location="cuda").model
        assert next(model.parameters()).device.type == "cpu"
        with pytest.raises(ConfigError, match="device=cuda: this machine has no GPU"):
            validate_translate(_translate_cfg(device="cuda"))


def _translate_cfg(**values):
    from omegaconf import OmegaConf

    base = {
        "ckpt_path": "x",
        "long_lines": "error",
        "device": "auto",
        "max_words": None,
        "batch_tokens": None,
        "decoding": None,
        "dump_attention": None,
    }
    return OmegaConf.create({**base, **values})


def test_dump_attention_pointing_at_a_directory_is_refused_before_translating(tmp_path):
    with pytest.raises(ConfigError, match=r"dump_attention=.*: is a directory"):
        validate_translate(_translate_cfg(dump_attention=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"the directory .*nowhere does not exist"):
        validate_translate(_translate_cfg(dump_attention=str(tmp_path / "nowhere" / "a.json")))


# ------------------------------------------------------------------------------------------ files


def test_files_get_the_umask_mode_and_atomic_writes_leave_no_temp_file(tmp_path, monkeypatch):
    previous = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "results.json", {"a": 1})
        tokenizer_cache = tmp_path / "cache"
        load_or_train(
            ["a b c", "b c d"] * 4, {"model_type": "word", "vocab_size": 20}, tokenizer_cache, "src"
        )
        os.umask(0o077)
        write_atomic(tmp_path / "private.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o644
    (cached,) = (tokenizer_cache / "tokenizers").glob("*.model")
    assert stat.S_IMODE(cached.stat().st_mode) == 0o644  # another user can share the cache
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600

    # a failure during the write: the old file stays whole and no temp file remains
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(tmp_path / "results.json", {"a": 2})
    monkeypatch.undo()
    assert json.loads((tmp_path / "results.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "private.txt", "results.json"]


def test_ctrl_c_during_an_atomic_write_is_delivered_after_it(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def interrupted_fsync(fd):  # the second Ctrl+C arrives in the middle of the write
        os.kill(os.getpid(), signal.SIGINT)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(tmp_path / "results.json", {"complete": True})
    assert json.loads((tmp_path / "results.json").read_text()) == {"complete": True}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_writer_killed_mid_write_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
    target = tmp_path / "last.ckpt"
    write_atomic(target, "old")
    # a writer SIGKILLed in the middle of its write: it blocks in fsync's place until killed
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time; from seq2seq.data import atomic; "
            "os.fsync = lambda fd: (print('writing', flush=True), time.sleep(60)); "
            f"atomic.write_atomic({str(target)!r}, 'new')",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert writer.stdout.readline() == "writing\n"
    writer.kill()
    writer.wait()
    (orphan,) = tmp_path.glob(".last.ckpt.*.tmp")
    assert target.read_text() == "old"  # the target is whole
    # temporary files of a live writer (this process), of another host and of another target are kept
    live = tmp_path / f".last.ckpt.{atomic._host()}-{os.getpid()}.abcdefgh.tmp"
    remote = tmp_path / f".last.ckpt.otherhost-{writer.pid}.abcdefgh.tmp"
    other_target = tmp_path / f".best.ckpt.{atomic._host()}-{writer.pid}.abcdefgh.tmp"
    for kept in (live, remote, other_target):
        kept.write_text("partial")
    write_atomic(target, "newer")
    assert target.read_text() == "newer"
    assert not orphan.exists()
    assert all(kept.exists() for kept in (live, remote, other_target))


# ------------------------------------------------------------------------------------------ user mistakes


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=0", r"trainer.max_epochs=0 trains nothing"),
        ("trainer.max_steps=0", r"trainer.max_steps=0 trains nothing"),
        ("optim.lr=1e39", r"optim.lr=1e\+39: must be a positive number a float32 can hold"),
        ("guard.max_loss_ratio=0.5", r"guard.max_loss_ratio=0.5: must be at least 1"),
    ],
)
def test_options_that_train_nothing_or_overflow_are_refused(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        validate_train(compose_train(tmp_path, *TINY, override))


def test_a_tokenizer_vocabulary_that_cannot_fit_says_which_size_works():
    sentences = [" ".join(f"{c}{d}" for c, d in zip("abcdefghij", "klmnopqrst", strict=True))] * 20
    with pytest.raises(
        ValueError, match=r"vocab_size=8 on these 20 training sentences.*at least (\d+)"
    ) as error:
        train_tokenizer(sentences, model_type="unigram", vocab_size=8)
    enough = int(error.value.args[0].rsplit("at least ", 1)[1].split()[0])
    assert train_tokenizer(sentences, model_type="unigram", vocab_size=enough)  # the advice works


def test_old_mac_line_ends_are_named_instead_of_read_as_one_long_line(tmp_path):
    (tmp_path / "a.src").write_bytes(b"one two\rthree four\r")
    (tmp_path / "a.tgt").write_bytes(b"uno dos\ntres cuatro\n")
    with pytest.raises(DataError, match=r"a.src:1: a carriage return .*old-Mac.*tr '\\r' '\\n'"):
        read_parallel(tmp_path / "a.src", tmp_path / "a.tgt")
    (tmp_path / "b.src").write_bytes(b"one two\r\nthree four\r\n")  # Windows line ends are fine
    assert read_parallel(tmp_path / "b.src", tmp_path / "a.tgt") == [
        ("one two", "uno dos"),
        ("three four", "tres cuatro"),
    ]


# ------------------------------------------------------------------------------------------ search, maps


def test_search_never_emits_padding_or_bos_even_from_a_model_that_prefers_them():
    torch.manual_seed(0)
    model = EncoderDecoder.from_config(_model_cfg(), 11, 11, 0, 2, 3).eval()
    with torch.no_grad():  # an output layer that ranks PAD and BOS first everywhere
        model.decoder.generator.bias.fill_(0.0)
        model.decoder.generator.bias[0] = model.decoder.generator.bias[2] = 50.0
    src = torch.randint(4, 11, (3, 6))
    batch = SimpleNamespace(src=src, src_lengths=torch.tensor([6, 5, 4]))
    for search in (Decoding(name="greedy"), Decoding(name="beam", beam_size=3)):
        outputs = decode(model, batch, search).tokens
        assert outputs and all(len(o) > 0 for o in outputs)
        assert not {0, 2} & {t for o in outputs for t in o}, search


def _model_cfg():
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            "embedding_size": 8,
            "hidden_size": 8,
            "context": "every_step",
            "encoder": {"rnn_type": "gru", "bidirectional": True, "num_layers": 1, "dropout": 0.0},
            "attention": {"name": "bahdanau", "size": None},
            "decoder": {"num_layers": 1, "dropout": 0.0, "input_feeding": True},
        }
    )


def test_attention_maps_skip_sources_too_long_to_draw():
    sources = ["a " * 3, "b " * 5000, "c " * 50, "d " * 10]
    assert pick_examples(sources, 4, max_words=120) == [0, 3, 2]
    assert pick_examples(sources, 2, max_words=None) == [0, 1]


def test_an_unwritable_tokenizer_cache_warns_naming_the_option_and_goes_on(caplog):
    with caplog.at_level("WARNING"):
        tokenizer = load_or_train(
            ["a b c", "b c d"] * 4, {"model_type": "word", "vocab_size": 20}, "/proc/x", "src"
        )
    assert tokenizer.vocab_size > 4  # trained and used, just not cached
    assert "cannot cache it in /proc/x/tokenizers" in caplog.text and "SEQ2SEQ_CACHE" in caplog.text
