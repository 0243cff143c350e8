"""``python -m seq2seq.translate``: line alignment, attention dumps, bad input, portable checkpoints."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from seq2seq.data.tokenizer import Tokenizer, train_tokenizer
from seq2seq.inference.checkpoint import CheckpointError, load_checkpoint
from seq2seq.training.module import Seq2SeqModule
from seq2seq.translate import translate
from tests.conftest import CONF, TINY, compose_train, run_module

SYMBOLS = [f"w{i:02d}" for i in range(1, 13)]


def write_checkpoint(tmp_path: Path, *overrides: str, name: str = "model.ckpt") -> Path:
    """An untrained model saved as ``seq2seq.train`` saves one: weights, resolved config, tokenizers."""
    cfg = compose_train(tmp_path, *TINY, *overrides)
    proto = train_tokenizer([" ".join(SYMBOLS[i:] + SYMBOLS[:i]) for i in range(12)], "word", 50)
    torch.manual_seed(0)
    module = Seq2SeqModule(cfg, Tokenizer(proto), Tokenizer(proto))
    path = tmp_path / name
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": {"cfg": OmegaConf.to_container(cfg, resolve=True)},
            "tokenizers": {"src": proto, "tgt": proto},
        },
        path,
    )
    return path


def compose_translate(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("translate", overrides=list(overrides))


def run_translate(capsys, *overrides: str) -> list[str]:
    """Translate in-process; returns the stdout lines."""
    capsys.readouterr()
    translate(compose_translate(*overrides))
    out = capsys.readouterr().out
    assert out.endswith("\n") or out == ""
    return out.split("\n")[:-1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_empty_lines_give_empty_lines_and_alignment_is_kept(ckpt, tmp_path, capsys):
    lines = ["w01 w02 w03", "", "w04 w05 w06 w07 w08 w09 w10", "   ", "w11", "\u200b"]  # last: no pieces
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n")
    out = run_translate(capsys, f"ckpt_path={ckpt}", f"input={source}")
    assert len(out) == len(lines)
    assert [i for i, line in enumerate(out) if line == ""] == [1, 3, 5]  # this model never outputs nothing
    for i in (0, 2, 4):  # each non-empty line translates as it would alone, whatever its neighbours
        alone = tmp_path / f"alone{i}.txt"
        alone.write_text(lines[i] + "\n")
        assert run_translate(capsys, f"ckpt_path={ckpt}", f"input={alone}") == [out[i]]


def test_reads_stdin_and_beam_size_one_matches_greedy(ckpt, capsys, monkeypatch):
    text = b"w01 w02\n\nw03 w04 w05 w06\r\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text)))
    greedy = run_translate(capsys, f"ckpt_path={ckpt}")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text)))
    beam = run_translate(capsys, f"ckpt_path={ckpt}", "decoding=beam", "decoding.beam_size=1")
    assert len(greedy) == 3 and greedy[1] == "" and greedy == beam


def test_dump_attention_writes_labelled_weights_per_line(ckpt, tmp_path, capsys):
    source, dump = tmp_path / "in.txt", tmp_path / "attention.json"
    source.write_text("w01 w02 w03\n\nw04\n")
    out = run_translate(capsys, f"ckpt_path={ckpt}", f"input={source}", f"dump_attention={dump}")
    document = json.loads(dump.read_text())
    assert document["attention"] == "bahdanau" and "note" not in document
    first, empty, last = document["lines"]
    assert [first["line"], empty["line"], last["line"]] == [1, 2, 3]
    assert first["source_pieces"] == ["▁w01", "▁w02", "▁w03"] and first["translation"] == out[0]
    weights = torch.tensor(first["weights"])
    assert weights.shape == (len(first["output_pieces"]), 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(weights)), atol=1e-5, rtol=0)
    assert empty["weights"] is None and empty["translation"] == "" and empty["output_pieces"] == []


@pytest.mark.parametrize("context", ["init", "every_step"])
def test_fixed_context_model_translates_and_dumps_no_fake_attention(tmp_path, capsys, context):
    ckpt = write_checkpoint(tmp_path, "model/attention=none", f"model.context={context}")
    source, dump = tmp_path / "in.txt", tmp_path / "attention.json"
    source.write_text("w01 w02 w03\nw04\n")
    out = run_translate(
        capsys, f"ckpt_path={ckpt}", f"input={source}", f"dump_attention={dump}", "decoding=beam"
    )
    assert len(out) == 2
    document = json.loads(dump.read_text())
    assert "no attention" in document["note"]
    assert all(line["weights"] is None for line in document["lines"])


def test_lines_longer_than_the_model_maximum(ckpt, tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("w01 w02\n" + " ".join(SYMBOLS * 10) + "\n")  # 120 words; data.max_words is 100
    with pytest.raises(ValueError, match=r"line 2 \(120 words\).*long_lines=warn"):
        translate(compose_translate(f"ckpt_path={ckpt}", f"input={source}"))
    assert capsys.readouterr().out == ""  # refused before anything is written
    out = run_translate(capsys, f"ckpt_path={ckpt}", f"input={source}", "long_lines=warn")
    assert len(out) == 2


def test_bad_input_files_are_named_with_the_line(ckpt, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"w01\nw02 \xff\n")
    with pytest.raises(ValueError, match=r"in.txt:2: not valid UTF-8"):
        translate(compose_translate(f"ckpt_path={ckpt}", f"input={source}"))
    with pytest.raises(ValueError, match="no such file"):
        translate(compose_translate(f"ckpt_path={ckpt}", f"input={tmp_path / 'missing.txt'}"))


def test_bad_checkpoints_get_clear_messages(ckpt, tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint\n")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:2000])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 3}, foreign)
    wrong = tmp_path / "wrong.ckpt"
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["cfg"]["model"]["hidden_size"] = 32  # weights are for 16
    torch.save(checkpoint, wrong)
    cases = {
        tmp_path / "nowhere.ckpt": "does not exist",
        tmp_path: "is a directory",
        garbage: "not a PyTorch checkpoint",
        truncated: "not a PyTorch checkpoint",
        foreign: "incompatible: it lacks tokenizers, hyper_parameters",
        wrong: r"incompatible: its weights do not fit .*\(16, 16\) vs \(32, 32\)",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            translate(compose_translate(f"ckpt_path={path}"))


def test_checkpoint_is_portable(ckpt, tmp_path, capsys):
    """Nothing but the file is needed: moved elsewhere, it rebuilds the same model."""
    moved = tmp_path / "elsewhere" / "renamed.ckpt"
    moved.parent.mkdir()
    moved.write_bytes(ckpt.read_bytes())
    source = tmp_path / "in.txt"
    source.write_text("w05 w06 w07\n")
    assert run_translate(capsys, f"ckpt_path={moved}", f"input={source}") == run_translate(
        capsys, f"ckpt_path={ckpt}", f"input={source}"
    )
    trained = load_checkpoint(moved)
    assert not trained.model.training and trained.cfg.model.hidden_size == 16


def _cli(*args: str, stdin: bytes, cwd: Path) -> subprocess.CompletedProcess:
    cwd.mkdir(exist_ok=True)
    return run_module("seq2seq.translate", *args, cwd=cwd, home=cwd.parent, input=stdin, timeout=300)


def test_cli_stdout_holds_only_translations_and_errors_are_one_line(ckpt, tmp_path):
    work = tmp_path / "work"
    result = _cli(f"ckpt_path={ckpt}", stdin=b"w01 w02\n\nw03\n", cwd=work)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    lines = result.stdout.decode().split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""  # three lines, each ended by a newline
    assert list(work.iterdir()) == []  # no outputs/ directory, no log file
    failed = _cli(f"ckpt_path={tmp_path / 'nope.ckpt'}", stdin=b"w01\n", cwd=work)
    errors = failed.stderr.decode()
    assert failed.returncode == 1 and failed.stdout == b""
    assert "nope.ckpt does not exist" in errors and "Traceback" not in errors
