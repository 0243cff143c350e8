"""95 % intervals: sacrebleu's own bootstrap for corpus scores, Wilson's for token accuracies."""

from __future__ import annotations

import random

import pytest
from sacrebleu.metrics import BLEU, CHRF

from seq2seq.evaluation.intervals import bootstrap_interval, mean_interval, wilson_interval
from seq2seq.evaluation.scoring import SentenceOutput, bleu_by_length, corpus_intervals, score_split

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "house",
    "red",
    "blue",
    "ran",
    "in",
    "park",
    "big",
    "small",
]


def _corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(3, 15))) for _ in range(n)]
    hyps = [r if rng.random() < 0.4 else " ".join(rng.choices(WORDS, k=rng.randint(3, 12))) for r in refs]
    return hyps, refs


@pytest.mark.parametrize("metric_type", [BLEU, CHRF])
@pytest.mark.parametrize("seed", [None, "7"])
def test_interval_is_sacrebleus_own_bootstrap_for_the_same_seed(metric_type, seed, monkeypatch):
    if seed is not None:
        monkeypatch.setenv("SACREBLEU_SEED", seed)
    hyps, refs = _corpus(60)
    ours = metric_type()
    low, high = bootstrap_interval(ours, hyps, refs, 1000)
    theirs = metric_type().corpus_score(hyps, [refs], n_bootstrap=1000)
    # sacrebleu prints the same interval as mean ± half-width (Score.estimate_ci: the same sorted indices)
    assert (high - low) / 2 == pytest.approx(theirs._ci, abs=1e-9)
    assert low <= theirs._mean <= high and low <= theirs.score <= high
    assert f"bs:1000|seed:{seed or 12345}|" in ours.get_signature().format()


def test_another_seed_gives_another_interval(monkeypatch):
    hyps, refs = _corpus(60)
    first = bootstrap_interval(BLEU(), hyps, refs, 500)
    assert bootstrap_interval(BLEU(), hyps, refs, 500) == first  # seeded: the same twice
    monkeypatch.setenv("SACREBLEU_SEED", "99")
    assert bootstrap_interval(BLEU(), hyps, refs, 500) != first


def test_no_interval_without_resampling_or_sentences():
    hyps, refs = _corpus(5)
    assert bootstrap_interval(BLEU(), hyps, refs, 0) is None
    assert bootstrap_interval(BLEU(), hyps, refs, 1) is None
    assert bootstrap_interval(BLEU(), [], [], 1000) is None
    assert corpus_intervals(hyps, refs, 0)[0] == {}


def test_every_interval_contains_its_point_score_and_a_bucket_resamples_only_its_own_sentences():
    hyps, refs = _corpus(80, seed=1)
    sources = [" ".join(["w"] * (3 + i % 25)) for i in range(80)]
    rows = bleu_by_length(sources, hyps, refs, edges=[1, 11, 21, 31], bootstrap=400)
    assert [r["n"] for r in rows] == [29, 30, 21, 0]
    for row in rows[:3]:
        low, high = row["bleu_ci"]
        assert low <= row["bleu"] <= high and high - low > 1.0
    assert rows[3]["bleu_ci"] is None and rows[3]["bleu"] is None
    members = [i for i, s in enumerate(sources) if 11 <= len(s.split()) <= 20]
    alone = bootstrap_interval(BLEU(), [hyps[i] for i in members], [refs[i] for i in members], 400)
    assert rows[1]["bleu_ci"] == alone
    assert "bleu_ci" not in bleu_by_length(sources, hyps, refs, edges=[1, 11], bootstrap=0)[0]


def test_wilson_interval_on_known_values():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(49.016, abs=1e-3) and high == pytest.approx(94.331, abs=1e-3)
    assert wilson_interval(0, 10) == [0.0, pytest.approx(27.753, abs=1e-3)]
    assert wilson_interval(10, 10) == [pytest.approx(72.247, abs=1e-3), 100.0]
    assert wilson_interval(0, 0) is None


def test_mean_interval_is_students_t_on_known_values():
    # 1..5: mean 3, sd √2.5, t(0.975, 4) = 2.7764 (the textbook table): half-width 1.9632
    low, high = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert low == pytest.approx(3 - 1.9632, abs=1e-4) and high == pytest.approx(3 + 1.9632, abs=1e-4)
    # 0 and 2: mean 1, sd √2, half-width t · √2 / √2 = t; t(0.975, 1) = 12.706, t(0.95, 1) = 6.314
    assert mean_interval([0.0, 2.0]) == pytest.approx([1 - 12.706, 1 + 12.706], abs=1e-3)
    assert mean_interval([0.0, 2.0], 0.90) == pytest.approx([1 - 6.314, 1 + 6.314], abs=1e-3)
    assert mean_interval([4.0, 4.0, 4.0]) == [4.0, 4.0]
    assert mean_interval([7.0]) is None and mean_interval([]) is None


def test_score_split_carries_every_interval():
    hyps, refs = _corpus(30, seed=2)
    outputs = [
        SentenceOutput(i, r, r, h, 0.0, 0, [True, i % 2 == 0], [True, True], 1.0, 2)
        for i, (h, r) in enumerate(zip(hyps, refs, strict=True))
    ]
    scored = score_split(outputs, [1, 8], max_positions=3, bootstrap=200)
    for name in ("bleu", "chrf"):
        low, high = scored.intervals[name]
        assert low <= scored.scores[name] <= high
        assert "bs:200" in scored.signatures[name]
    assert scored.position_accuracy[:2] == [100.0, 50.0] and scored.position_accuracy[2] is None
    assert (
        scored.position_accuracy_ci[1] == wilson_interval(15, 30) and scored.position_accuracy_ci[2] is None
    )
    assert scored.summary()["intervals"] == scored.intervals
    plain = score_split(outputs, [1, 8], max_positions=3, bootstrap=0)
    assert plain.intervals == {} and "bs:" not in plain.signatures["bleu"]
