"""The time-to-BLEU mode of the benchmark (scripts/benchmark/end_to_end.py): curves, targets, table, figure."""

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "benchmark"))

from end_to_end import (  # noqa: E402
    format_e2e,
    joeynmt_curve,
    plot,
    seq2seq_curve,
    seq2seq_overrides,
    summarise,
)


class Pieces:
    """SentencePiece's decode_pieces for '▁'-prefixed pieces."""

    def decode_pieces(self, pieces):
        return "".join(pieces).replace("▁", " ").strip()


def test_curves_read_both_systems_outputs(tmp_path):
    run = tmp_path / "run" / "csv"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text(
        "step,train/loss,val/bleu,val/elapsed_s\n10,2.0,,\n19,,12.5,30.0\n39,,20.0,61.5\n", "utf-8"
    )
    assert seq2seq_curve(tmp_path / "run") == [(30.0, 12.5), (61.5, 20.0)]

    model = tmp_path / "joey"
    model.mkdir()
    refs = ["the cat sat on the mat", "a dog ran far away"]
    started = time.time()
    (model / "100.hyps").write_text("▁the ▁cat ▁sat ▁on ▁the ▁ma t\n▁a ▁dog ▁ran ▁far ▁away\n", "utf-8")
    (model / "50.hyps").write_text("▁the ▁cat\n▁a\n", "utf-8")
    (model / "best.hyps").write_text("ignored\n", "utf-8")
    os.utime(model / "100.hyps", (started + 90, started + 90))
    os.utime(model / "50.hyps", (started + 40, started + 40))
    curve = joeynmt_curve(model, started, refs, Pieces())
    assert [round(t) for t, _ in curve] == [40, 90]
    assert curve[1][1] == pytest.approx(100.0)  # the pieces joined back into the reference text
    assert curve[0][1] < 100.0


def test_summary_targets_and_table(tmp_path):
    curves = {
        "seq2seq": [(60.0, 10.0), (120.0, 18.0), (180.0, 22.0)],
        "joeynmt": [(100.0, 8.0), (300.0, 18.0), (600.0, 17.0)],
    }
    buckets = [{"bucket": "1-10", "bleu": 25.0}, {"bucket": "11+", "bleu": 15.0}]
    tests = {
        "seq2seq": {"test_bleu": 21.0, "test_bleu_by_length": buckets},
        "joeynmt": {
            "test_bleu": 17.5,
            "test_bleu_by_length": [{"bucket": "1-10", "bleu": 20.0}, {"bucket": "11+"}],
        },
    }
    summary = {"seq2seq_attention": "luong_concat", **summarise(curves, tests)}
    ours, joey = summary["systems"]["seq2seq"], summary["systems"]["joeynmt"]
    assert joey["best_dev_bleu"] == 18.0 and joey["time_to_best_s"] == 300.0
    assert ours["time_to_joeynmt_best_s"] == 120.0
    assert summary["targets"] == {
        "time_to_joeynmt_best_ratio": pytest.approx(0.4),
        "time_met": True,
        "final_bleu_met": True,
    }
    table = format_e2e(summary)
    assert table.startswith("| | seq2seq (`luong_concat`) | JoeyNMT 2.3.0 (`bahdanau`) |")
    assert "| minutes to JoeyNMT's best dev BLEU | 2.0 | 5.0 |" in table
    assert "| test BLEU, sources of 11+ words | 15.0 | – |" in table
    assert "0.40 (target ≤ 0.5: ✓)" in table
    plot(curves, tmp_path / "e2e.png", 600)
    assert (tmp_path / "e2e.png").stat().st_size > 5000


def test_seq2seq_overrides_set_the_budget_and_validation():
    overrides = seq2seq_overrides(
        ["trainer=cpu", "logger=none", "paths.output_dir=x", "model.hidden_size=64"], 3725.2, 250, Path("/r")
    )
    assert "trainer.max_time=00:01:02:06" in overrides
    assert (
        "trainer.val_check_interval=250" in overrides and "trainer.check_val_every_n_epoch=null" in overrides
    )
    assert (
        "logger=csv" in overrides and "logger=none" not in overrides and "paths.output_dir=x" not in overrides
    )
    assert "model.hidden_size=64" in overrides and "hydra.run.dir=/r" in overrides
    gpu = seq2seq_overrides(["trainer=cpu"], 60, 10, Path("/r"), "cuda", "bf16")
    assert "trainer=gpu" in gpu and "trainer.precision=bf16-mixed" in gpu and "trainer=cpu" not in gpu


def test_the_output_folder_exists_before_training_starts(tmp_path, monkeypatch):
    # A run of 2026-12-07 trained both systems for 40 minutes, then failed to write its summary into a
    # folder that did not exist: the folder is made before anything is trained.
    import end_to_end
    import run

    def no_training(args):
        raise RuntimeError("stopped before training")

    monkeypatch.setattr(run, "matched_setup", no_training)
    monkeypatch.setattr(end_to_end, "pin_threads", lambda threads: None)  # keep this process's CPUs
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, os.environ.get(name, "2"))  # restored after the test
    with pytest.raises(RuntimeError, match="stopped before training"):
        run.main(["--end-to-end", "--out", str(tmp_path / "new" / "folder" / "results.json")])
    assert (tmp_path / "new" / "folder").is_dir()


def test_the_time_to_bleu_run_trains_the_architecture_of_joeynmts_bahdanau():
    # JoeyNMT's "bahdanau" decoder queries attention with the state after its RNN step: seq2seq's
    # luong_concat; seq2seq's own bahdanau queries with the state before it (Bahdanau et al. 2015).
    from run import parse_args
    from seq2seq.models.seq2seq import EncoderDecoder
    from seq2seq_side import base_overrides, compose_config

    assert parse_args(["--end-to-end"]).attention == "luong_concat"
    assert parse_args([]).attention == "bahdanau"  # the throughput tables' model
    assert parse_args(["--end-to-end", "--attention", "bahdanau"]).attention == "bahdanau"
    for attention, before_the_step in (("luong_concat", False), ("bahdanau", True)):
        overrides = base_overrides(32, 1, 2000, Path("w"), attention) + ["data=toy_translation"]
        cfg = compose_config([*overrides, "model.hidden_size=16"])
        model = EncoderDecoder.from_config(cfg.model, 20, 20)
        assert model.decoder.attention.query_is_previous_state is before_the_step
