"""BLEU by length in every run, and ``python -m seq2seq.evaluate`` re-scoring a tiny trained checkpoint."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from seq2seq.evaluate import evaluate
from seq2seq.train import train
from tests.conftest import CONF, TINY, compose_train, run_module
from tests.test_translate import run_translate


def compose_evaluate(out_dir: Path, *overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("evaluate", overrides=[f"output_dir={out_dir}", *overrides])


def read_predictions(path: Path) -> list[list[str]]:
    with path.open() as f:
        return list(csv.reader(f, delimiter="\t"))[1:]


def bucket_counts(sources: list[str], bounds: list[tuple[int, int | None]]) -> list[int]:
    return [
        sum(lo <= len(s.split()) and (hi is None or len(s.split()) <= hi) for s in sources)
        for lo, hi in bounds
    ]


def snapshot(directory: Path) -> dict[str, str]:
    """Hashes of the run's files; ``wandb/`` is left out: W&B's background service may still append to its
    own debug logs there after the run has finished, whatever evaluate does."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.relative_to(directory).parts[0] != "wandb"
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny bi-GRU + Bahdanau run (3 steps) with custom length buckets, logged to W&B offline."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = compose_train(
        tmp, *TINY, "logger=wandb", "eval.length_buckets=[1,4,7]", "eval.attention_examples=3"
    )
    assert train(cfg)["status"] == "completed"
    return tmp / "run"


def test_a_run_records_plots_and_logs_bleu_by_length_at_custom_edges(trained):
    results = json.loads((trained / "results.json").read_text())
    sources = [row[0] for row in read_predictions(trained / "predictions" / "test.tsv")]
    bounds = [(1, 3), (4, 6), (7, None)]
    assert [r["bucket"] for r in results["bleu_by_length"]] == ["1-3", "4-6", "7+"]
    assert [r["n"] for r in results["bleu_by_length"]] == bucket_counts(sources, bounds)
    assert sum(r["n"] for r in results["bleu_by_length"]) == 12  # every source has 2-8 words
    val = results["val_bleu_by_length"]
    assert [r["bucket"] for r in val] == ["1-3", "4-6", "7+"] and sum(r["n"] for r in val) == 12
    for stage in ("test", "val"):
        entropy = results["metrics"][f"{stage}/attention_entropy"]
        assert 0.0 < entropy <= math.log(9)  # at most log(source tokens): sources have <= 8 words + EOS
    assert (trained / "plots" / "bleu_by_length.png").stat().st_size > 0
    assert len(list((trained / "plots" / "attention").glob("val_*.png"))) == 3
    (wandb_run,) = (trained / "wandb").glob("offline-run-*")
    media = wandb_run / "files" / "media"
    (table,) = media.glob("table/test/bleu_by_length_*.table.json")
    table = json.loads(table.read_text())
    i = next(i for i, r in enumerate(results["bleu_by_length"]) if r["n"])  # a non-empty bucket, its 95 % CI
    row = dict(zip(table["columns"], table["data"][i], strict=True))
    assert [row["bleu_low"], row["bleu_high"]] == pytest.approx(results["bleu_by_length"][i]["bleu_ci"])
    assert list(media.glob("table/val/bleu_by_length_*.table.json"))
    assert len(list(media.glob("images/val/attention/val_*.png"))) == 3
    assert list(media.glob("images/test/bleu_by_length_png_*.png"))


def test_evaluate_rescores_the_test_set_into_a_new_directory(trained, tmp_path):
    before = snapshot(trained)
    training = json.loads((trained / "results.json").read_text())
    out = tmp_path / "eval"
    results = evaluate(compose_evaluate(out, f"run_dir={trained}"))
    assert snapshot(trained) == before  # the training run is never touched
    assert results == json.loads((out / "results.json").read_text())
    assert results["status"] == "completed" and results["choices"] == training["choices"]
    assert results["evaluated"]["checkpoint"] == str((trained / "checkpoints" / "best.ckpt").resolve())
    assert results["evaluated"]["sentences"] == 12
    for key in ("test/bleu", "test/chrf", "test/exact_match", "test/loss", "test/attention_entropy"):
        assert results["metrics"][key] == pytest.approx(training["metrics"][key], abs=1e-6)
    assert results["bleu_by_length"] == training["bleu_by_length"]  # their bleu_ci too: sacrebleu's seed
    for key in ("test/bleu_ci", "test/chrf_ci"):
        assert results["metrics"][key] == pytest.approx(training["metrics"][key], abs=1e-6)
    assert results["sacrebleu"] == training["sacrebleu"]
    assert read_predictions(out / "predictions" / "test.tsv") == read_predictions(
        trained / "predictions" / "test.tsv"
    )
    assert (out / "plots" / "bleu_by_length.png").exists() and (out / "evaluate.yaml").exists()
    assert (
        len(list((out / "plots" / "attention").glob("test_*.png"))) == 4
    )  # evaluate.yaml: attention_examples


def test_evaluate_files_with_other_buckets_and_beam_size_one(trained, tmp_path):
    rows = read_predictions(trained / "predictions" / "test.tsv")
    (tmp_path / "src.txt").write_text("".join(r[0] + "\n" for r in rows))
    (tmp_path / "ref.txt").write_text("".join(r[1] + "\n" for r in rows))
    out = tmp_path / "eval"
    results = evaluate(
        compose_evaluate(
            out,
            f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}",
            f"src={tmp_path / 'src.txt'}",
            f"ref={tmp_path / 'ref.txt'}",
            "length_buckets=[1,3,6]",
            "decoding=beam",
            "decoding.beam_size=1",
            "attention_examples=0",
            "bootstrap=0",
        )
    )
    assert "test/bleu_ci" not in results["metrics"] and "bs:" not in results["sacrebleu"]["bleu"]
    assert all("bleu_ci" not in row for row in results["bleu_by_length"])
    sources = [r[0] for r in rows]
    assert [r["bucket"] for r in results["bleu_by_length"]] == ["1-2", "3-5", "6+"]
    assert [r["n"] for r in results["bleu_by_length"]] == bucket_counts(sources, [(1, 2), (3, 5), (6, None)])
    assert results["choices"]["decoding"] == "beam" and results["config"]["decoding"]["beam_size"] == 1
    assert [r[2] for r in read_predictions(out / "predictions" / "test.tsv")] == [
        r[2] for r in rows
    ]  # = greedy
    assert not (out / "plots" / "attention").exists()


def test_round_trip_translate_a_moved_checkpoint(trained, tmp_path, capsys):
    """evaluate's hypotheses = translate's output, from a checkpoint moved away from its run and caches."""
    rows = read_predictions(trained / "predictions" / "test.tsv")
    moved = tmp_path / "elsewhere" / "model.ckpt"
    moved.parent.mkdir()
    shutil.copy(trained / "checkpoints" / "best.ckpt", moved)
    source = tmp_path / "sources.txt"
    source.write_text("".join(r[0] + "\n\n" for r in rows))  # an empty line after each sentence
    out = run_translate(capsys, f"ckpt_path={moved}", f"input={source}")
    assert out[0::2] == [r[2] for r in rows] and set(out[1::2]) == {""}


def test_evaluate_refuses_a_run_directory_and_bad_arguments(trained, tmp_path):
    before = snapshot(trained)
    with pytest.raises(ValueError, match="already holds a run"):
        evaluate(compose_evaluate(trained, f"run_dir={trained}"))
    assert snapshot(trained) == before
    with pytest.raises(ValueError, match="exactly one of run_dir"):
        evaluate(compose_evaluate(tmp_path / "a"))
    with pytest.raises(ValueError, match="does not exist"):
        evaluate(compose_evaluate(tmp_path / "b", f"run_dir={tmp_path / 'missing'}"))
    with pytest.raises(ValueError, match="give both src"):
        evaluate(compose_evaluate(tmp_path / "c", f"run_dir={trained}", f"src={tmp_path / 'x.txt'}"))


def test_cli_writes_a_new_timestamped_directory(trained, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = run_module(
        "seq2seq.evaluate",
        f"run_dir={trained}",
        "decoding=beam",
        "decoding.beam_size=2",
        cwd=work,
        home=tmp_path,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "BLEU by source length" in result.stdout
    (written,) = work.glob("outputs/evaluate/*/*/results.json")
    results = json.loads(written.read_text())
    assert results["choices"]["decoding"] == "beam" and results["config"]["decoding"]["beam_size"] == 2
