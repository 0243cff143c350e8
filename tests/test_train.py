"""End-to-end: configs composed by Hydra, a few training steps, and what a run leaves behind."""

from __future__ import annotations

import csv
import json

import pytest

from seq2seq.train import train
from tests.conftest import TINY, run_module
from tests.wandb_records import read_run

ENCODERS = ["rnn", "gru", "lstm"]
ATTENTIONS = ["none", "bahdanau", "luong_dot", "luong_general", "luong_concat"]


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_every_encoder_attention_combination_trains(tiny_cfg, encoder, attention):
    cfg = tiny_cfg(f"model/encoder={encoder}", f"model/attention={attention}")
    results = train(cfg)
    assert results["status"] == "completed"
    assert results["choices"]["model/encoder"] == encoder
    assert results["choices"]["model/attention"] == attention
    assert results["train"]["steps"] == 3
    assert 0.0 <= results["metrics"]["test/bleu"] <= 100.0


def test_sanity_check_then_validation(tiny_cfg):
    """The default config runs Lightning's sanity check (a partial validation) before training."""
    results = train(tiny_cfg("trainer.num_sanity_val_steps=1"))
    assert results["status"] == "completed" and results["metrics"]["val/bleu"] >= 0


def test_fixed_context_every_step_trains(tiny_cfg):
    cfg = tiny_cfg("model/attention=none", "model.context=every_step", "model.encoder.num_layers=2")
    assert train(cfg)["status"] == "completed"


def test_run_directory_contract(tiny_cfg, tmp_path):
    cfg = tiny_cfg("logger=csv", "teacher_forcing=constant", "teacher_forcing.ratio=0.5")
    train(cfg)
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert results["schema"] == 1 and results["status"] == "completed" and results["error"] is None
    assert set(results["choices"]) == {
        "data",
        "model/encoder",
        "model/attention",
        "model/decoder",
        "teacher_forcing",
        "decoding",
    }
    assert results["choices"]["teacher_forcing"] == "constant"
    assert results["config"]["model"]["hidden_size"] == 16
    assert results["params"] > 0
    for key in ("test/bleu", "test/chrf", "test/exact_match", "test/loss", "val/bleu"):
        assert isinstance(results["metrics"][key], float)
    assert [b["bucket"] for b in results["bleu_by_length"]] == [
        "1-10",
        "11-20",
        "21-30",
        "31-40",
        "41-50",
        "51+",
    ]
    first, *rest = results["bleu_by_length"]
    assert first["n"] == 12  # all test sources have 2-8 words
    assert all(b["n"] == 0 and b["bleu"] is None for b in rest)
    # 95 % bootstrap intervals (eval.bootstrap: 1000 by default), each containing its point score
    metrics = results["metrics"]
    for key in ("test/bleu", "test/chrf", "val/bleu"):
        low, high = metrics[f"{key}_ci"]
        assert low <= metrics[key] <= high
    assert first["bleu_ci"][0] <= first["bleu"] <= first["bleu_ci"][1]
    assert all(b["bleu_ci"] is None for b in rest)
    for row in results["val_bleu_by_length"]:
        assert (
            row["bleu_ci"] is None if row["n"] == 0 else row["bleu_ci"][0] <= row["bleu"] <= row["bleu_ci"][1]
        )
    assert "bs:1000|seed:12345" in results["sacrebleu"]["bleu"] and "bs:1000" in results["sacrebleu"]["chrf"]
    free_ci = results["position_accuracy_ci"]
    assert all(
        lo <= v <= hi for (lo, hi), v in zip(free_ci[:8], results["position_accuracy"][:8], strict=True)
    )
    assert set(results["train"]) >= {"steps", "epochs", "wall_s", "tokens_per_s"}
    # Exposure bias: free-running and teacher-forced token accuracy per output position (test sentences have
    # at most 8 words, so positions past 8 have no data).
    for key in ("position_accuracy", "teacher_forced_position_accuracy"):
        curve = results[key]
        assert len(curve) == 60 and all(0 <= v <= 100 for v in curve[:2]) and curve[8:] == [None] * 52
    assert (run / "plots" / "position_accuracy.png").stat().st_size > 1000
    assert results["train"]["tokens_per_s"] > 0
    assert (run / "checkpoints" / "best.ckpt").exists() and (run / "checkpoints" / "last.ckpt").exists()
    with (run / "predictions" / "test.tsv").open() as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["source", "reference", "hypothesis"] and len(rows) == 13
    assert all(r[1] == r[0] for r in rows[1:])  # copy task: the reference is the source
    history = list(csv.DictReader((run / "metrics.csv").open()))
    ratios = {
        float(r["train/teacher_forcing_ratio"]) for r in history if r.get("train/teacher_forcing_ratio")
    }
    assert ratios == {0.5}


def test_a_small_model_learns_the_copy_task(tiny_cfg):
    """Not just plumbing: training lowers the loss until most test sentences are copied exactly."""
    cfg = tiny_cfg(
        "data.sizes.train=600",
        "data.sizes.test=40",
        "data.sizes.val=20",
        "data.max_len=5",
        "data.symbols=6",
        "data.batch.max_tokens=200",
        "model.hidden_size=48",
        "model.embedding_size=16",
        "trainer.max_steps=-1",
        "trainer.max_epochs=30",
        "optim.lr=0.01",
        "callbacks.early_stopping=null",
    )
    results = train(cfg)
    assert results["metrics"]["test/exact_match"] >= 60.0, results["metrics"]


def test_final_metrics_are_a_summary_not_a_logged_step(tiny_cfg, tmp_path, monkeypatch):
    """Honest curves: the best val/bleu and the test scores go to results.json and the W&B summary; the
    history (metrics.csv, W&B) holds only real measurements, at the steps they were made."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    results = train(tiny_cfg("logger=wandb", "trainer.val_check_interval=2"))  # one validation, after step 2
    run = tmp_path / "run"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    for row in rows:  # a row without an epoch is LearningRateMonitor's (train/lr) and holds nothing else
        assert row["epoch"] != "" or {k for k, v in row.items() if v} == {"step", "train/lr"}, row
    val_steps = {int(row["step"]) for row in rows if row["val/bleu"]}
    assert val_steps == {1}  # global_step after two steps is 1 (Lightning counts from 0 in the log)
    assert [int(row["step"]) for row in rows if row["test/bleu"]] == [3]  # once, when tested
    assert not [row for row in rows if row["step"] == "0" and (row["val/bleu"] or row["test/bleu"])]

    (offline,) = (run / "wandb").glob("offline-run-*")
    wandb_run = read_run(offline)
    logged = [h for h in wandb_run.history if "val/bleu" in h]
    assert [h["trainer/global_step"] for h in logged] == [1]
    assert len([h for h in wandb_run.history if "test/bleu" in h]) == 1
    assert wandb_run.summary["val/bleu"] == pytest.approx(results["metrics"]["val/bleu"])
    assert wandb_run.summary["test/bleu"] == pytest.approx(results["metrics"]["test/bleu"])
    for key in ("test/bleu_ci", "test/chrf_ci", "val/bleu_ci"):  # the 95 % intervals, [low, high]
        assert wandb_run.summary[key] == pytest.approx(results["metrics"][key])
    import wandb

    assert wandb.run is None  # finished


def test_long_training_sentences_are_dropped_and_counted(tiny_cfg, caplog):
    cfg = tiny_cfg("data.max_words=5")
    with caplog.at_level("WARNING"):
        train(cfg)
    assert any("longer than data.max_words=5" in r.getMessage() for r in caplog.records)


def _cli(*args, cwd):
    return run_module("seq2seq.train", *args, cwd=cwd, text=True, timeout=300)


def test_cli_unknown_option_lists_valid_choices(tmp_path):
    result = _cli("model/attention=luong_magic", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "luong_magic" in output
    assert "bahdanau" in output and "luong_dot" in output  # the valid choices
    assert "Traceback" not in output


def test_cli_bad_parallel_files_fail_before_training_and_record_the_error(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "val", "test"):
        (corpus / f"{split}.de").write_text("ein haus\nzwei\n")
        (corpus / f"{split}.en").write_text("a house\n")
    run_dir = tmp_path / "run"
    result = _cli(
        "data=parallel_text",
        f"data.dir={corpus}",
        "data.src_lang=de",
        "data.tgt_lang=en",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "train.de" in output and "train.en" in output and "2" in output and "1" in output
    assert "Traceback" not in output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "DataError" in results["error"]
    assert not (run_dir / "checkpoints").exists()


def test_cli_trains_with_overrides(tmp_path):
    run_dir = tmp_path / "run"
    result = _cli(
        *TINY,
        "model/encoder=lstm",
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={tmp_path / 'c'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test BLEU" in result.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["choices"]["model/encoder"] == "lstm"
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / ".hydra" / "overrides.yaml").exists()


def test_the_terminal_is_quiet_and_truthful(tmp_path):
    """The bar's total is the 3 steps max_steps allows (not the epoch's 40 batches); Lightning's tip, the pytree
    deprecation and the false "logs will be deleted" warning are gone; no validation shows "—" with why."""
    args = [arg for arg in TINY if "progress_bar" not in arg]
    result = run_module(
        "seq2seq.train",
        *args,
        "data.sizes.train=480",  # 40 batches an epoch
        "+trainer.limit_val_batches=0",
        "callbacks.progress_bar.refresh_rate=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
        text=True,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "Epoch 0: 100%" in out and " 3/3 [" in out and "/40 [" not in out
    for noise in ("💡 Tip", "litlogger", "LeafSpec", "will be deleted", "nan"):
        assert noise not in out, noise
    assert "— (no validation ran: see trainer.val_check_interval, max_steps)" in out
