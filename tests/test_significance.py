"""Paired significance (sacrebleu's paired bootstrap and approximate randomization) and compare_runs' tables."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from seq2seq.evaluation.record import (
    PREDICTIONS,
    RESULTS,
    build_results,
    write_json_atomic,
    write_predictions,
)
from seq2seq.evaluation.scoring import bleu_by_length, corpus_scores
from seq2seq.evaluation.significance import (
    Outputs,
    SignificanceError,
    compare_to_baseline,
    paired_test,
)
from tests.conftest import ROOT

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "house", "red", "blue", "ran", "in", "park", "big"]
FAST = {"n_bootstrap": 300, "n_trials": 1000}


def corpus(n: int = 120, seed: int = 0) -> tuple[list[str], list[str], list[str], list[str]]:
    """Sources of 1-30 words; references; a good system (mostly right) and a poor one (mostly wrong)."""
    rng = random.Random(seed)
    sources = [" ".join(rng.choices(WORDS, k=1 + i % 30)) for i in range(n)]
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(4, 12))) for _ in range(n)]
    wrong = [" ".join(rng.choices(WORDS, k=8)) for _ in range(n)]
    good = [r if rng.random() < 0.8 else w for r, w in zip(refs, wrong, strict=True)]
    poor = [r if rng.random() < 0.2 else w for r, w in zip(refs, wrong, strict=True)]
    return sources, refs, good, poor


def test_identical_systems_give_p_1_and_a_clearly_better_one_a_small_p():
    sources, refs, good, poor = corpus()
    base = Outputs("poor", sources, refs, poor)
    same = paired_test(base, Outputs("copy", sources, refs, list(poor)), metrics=("BLEU", "chrF"), **FAST)
    assert same.delta() == 0.0
    assert same.p == {"BLEU": {"bs": 1.0, "ar": 1.0}, "chrF": {"bs": 1.0, "ar": 1.0}}
    better = paired_test(base, Outputs("good", sources, refs, good), metrics=("BLEU", "chrF"), **FAST)
    assert better.system["BLEU"] == pytest.approx(corpus_scores(good, refs)["bleu"])
    assert better.delta() > 30
    for metric in ("BLEU", "chrF"):
        assert better.p[metric]["bs"] < 0.01 and better.p[metric]["ar"] < 0.01


def test_two_different_systems_of_equal_quality_are_not_significantly_different():
    sources, refs, good, _ = corpus(seed=1)
    wrong = [" ".join(reversed(r.split())) for r in refs]
    odd = [r if i % 2 else w for i, (r, w) in enumerate(zip(refs, wrong, strict=True))]
    even = [w if i % 2 else r for i, (r, w) in enumerate(zip(refs, wrong, strict=True))]
    result = paired_test(Outputs("odd", sources, refs, odd), Outputs("even", sources, refs, even), **FAST)
    assert abs(result.delta()) < 5
    assert result.p["BLEU"]["bs"] > 0.05 and result.p["BLEU"]["ar"] > 0.05


def test_a_pair_scored_on_different_test_sets_is_refused():
    sources, refs, good, poor = corpus()
    base = Outputs("base", sources, refs, poor)
    with pytest.raises(SignificanceError, match="scored on 119 test sentences, the baseline base on 120"):
        paired_test(base, Outputs("short", sources[:-1], refs[:-1], good[:-1]))
    other_refs = [*refs[:5], "something else", *refs[6:]]
    with pytest.raises(SignificanceError, match=r"different test sets \(sentence 6 differs\)"):
        paired_test(base, Outputs("other", sources, other_refs, good))


def write_run(run_dir: Path, attention: str, sources, refs, hyps, seed: int = 1) -> Path:
    """A completed run directory with the results.json and predictions/test.tsv a real run writes."""
    write_predictions(run_dir / PREDICTIONS, sources, refs, hyps)
    results = build_results(
        status="completed",
        choices={"data": "toy_translation", "model/encoder": "gru", "model/attention": attention,
                 "teacher_forcing": "always", "decoding": "greedy"},
        config={"seed": seed, "model": {"hidden_size": 32}, "data": {"seed": 0}},
        params=100,
        metrics={f"test/{k}": v for k, v in corpus_scores(hyps, refs).items()},
        bleu_by_length=bleu_by_length(sources, hyps, refs, edges=[1, 11, 21]),
        train={"steps": 1, "epochs": 1, "wall_s": 1.0, "tokens_per_s": 1.0},
    )  # fmt: skip
    write_json_atomic(run_dir / RESULTS, results)
    return run_dir


def test_overall_and_per_bucket_against_a_baseline(tmp_path):
    sources, refs, good, poor = corpus()
    base = write_run(tmp_path / "none", "none", sources, refs, poor)
    system = write_run(tmp_path / "bahdanau", "bahdanau", sources, refs, good)
    overall, buckets = compare_to_baseline(base, system, **FAST)
    assert overall.n == 120 and set(overall.p) == {"BLEU", "chrF"}
    assert [(label, c.n) for label, c in buckets] == [("1-10", 40), ("11-20", 40), ("21+", 40)]
    for _, comparison in buckets:
        assert comparison.delta() > 20 and comparison.p["BLEU"]["ar"] < 0.01


def compare(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compare_runs.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_compare_runs_prints_p_values_overall_and_per_bucket(tmp_path):
    sources, refs, good, poor = corpus()
    system = write_run(tmp_path / "a", "bahdanau", sources, refs, good)
    base = write_run(tmp_path / "n", "none", sources, refs, poor)
    same = write_run(tmp_path / "s", "luong_dot", sources, refs, poor)
    result = compare(system, base, same, "--resamples", "200", "--trials", "500")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Paired tests against **gru + none, h=32, teacher_forcing=always**" in out  # attention=none first
    lines = out[out.index("Paired tests against") :].splitlines()
    row = next(line for line in lines if line.startswith("| gru + bahdanau"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "gru + none, h=32, teacher_forcing=always"  # against
    assert float(cells[3]) > 30 and float(cells[4]) < 0.01 and float(cells[5]) < 0.01  # Δ BLEU, p bs, p AR
    copy_row = next(line for line in lines if line.startswith("| gru + luong_dot"))
    assert "| +0.0 | 1.000 | 1.000 |" in copy_row
    bucket = next(line for line in lines if line.startswith("| 11-20 | 40 |"))
    assert bucket.endswith("| +0.0 (1.000 / 1.000) |") and "Δ BLEU (p bootstrap / p AR)" in out
    # the baseline on the command line, by position
    chosen = compare(system, base, "--baseline", "1", "--resamples", "100", "--trials", "200")
    assert "Paired tests against **gru + bahdanau" in chosen.stdout


def test_compare_runs_refuses_runs_of_different_test_sets(tmp_path):
    sources, refs, good, poor = corpus()
    base = write_run(tmp_path / "n", "none", sources, refs, poor)
    other = write_run(tmp_path / "o", "bahdanau", sources[:60], refs[:60], good[:60])
    result = compare(base, other, "--resamples", "100", "--trials", "100")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "scored on 60 test sentences" in result.stderr and "same test set" in result.stderr
