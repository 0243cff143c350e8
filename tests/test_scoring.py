import pytest

from seq2seq.data.lengths import bucket_bounds
from seq2seq.evaluation.scoring import bleu_by_length, corpus_scores
from tests.test_intervals import WORDS


def test_perfect_and_wrong_hypotheses():
    refs = ["the cat sat on the mat today", "a dog ran in the big park"]
    perfect = corpus_scores(refs, refs)
    assert perfect == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0), "exact_match": 100.0}
    wrong = corpus_scores(["x y z", "q r s"], refs)
    assert wrong["bleu"] == pytest.approx(0.0) and wrong["exact_match"] == 0.0
    half = corpus_scores([refs[0], "q r s"], refs)
    assert half["exact_match"] == 50.0 and 0 < half["bleu"] < 100


def test_bucket_bounds_labels():
    assert bucket_bounds([1, 11, 21]) == [("1-10", 1, 10), ("11-20", 11, 20), ("21+", 21, None)]
    assert bucket_bounds([1, 2, 5]) == [("1", 1, 1), ("2-4", 2, 4), ("5+", 5, None)]
    with pytest.raises(ValueError, match="length_buckets"):
        bucket_bounds([5, 3])


def test_bleu_by_length_assigns_buckets_by_source_words_and_leaves_empty_buckets_null():
    sources = ["a b", "a b c", "a b c d e", "a b c d e f g h i j k l"]
    refs = ["x y z w v u", "p q r s t o", "k l m n o p", "e f g h i j"]
    hyps = [refs[0], "nothing like it", refs[2], refs[3]]
    rows = bleu_by_length(sources, hyps, refs, edges=[1, 4, 8, 20])
    assert [r["bucket"] for r in rows] == ["1-3", "4-7", "8-19", "20+"]
    assert [r["n"] for r in rows] == [2, 1, 1, 0]
    assert rows[0]["exact_match"] == 50.0
    assert rows[1]["bleu"] == pytest.approx(100.0)
    assert rows[3]["bleu"] is None and rows[3]["chrf"] is None and rows[3]["exact_match"] is None


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        corpus_scores(["a", "b"], ["a"])


def test_position_accuracy_counts_only_sentences_long_enough():
    from seq2seq.evaluation.scoring import position_accuracy

    correct = [[True, True, False], [True, False], [False]]
    assert position_accuracy(correct, max_positions=4) == [pytest.approx(200 / 3), 50.0, 0.0, None]


def _sentences(n: int) -> tuple[list[str], list[str], list[str]]:
    import random

    rng = random.Random(3)
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(3, 14))) for _ in range(n)]
    hyps = [r if rng.random() < 0.3 else " ".join(rng.choices(WORDS, k=rng.randint(2, 12))) for r in refs]
    sources = [" ".join(["w"] * rng.randint(1, 30)) for _ in range(n)]
    return sources, hyps, refs


def test_a_subsets_scores_from_the_extracted_statistics_are_sacrebleus_on_its_own_text():
    from sacrebleu.metrics import BLEU, CHRF

    from seq2seq.evaluation.scoring import SentenceStatistics

    _, hyps, refs = _sentences(40)
    statistics = SentenceStatistics(hyps, refs)
    for members in ([1, 3, 4, 7, 20, 33], list(range(40))):
        sub_h, sub_r = [hyps[i] for i in members], [refs[i] for i in members]
        exact = 100.0 * sum(h == r for h, r in zip(sub_h, sub_r, strict=True)) / len(members)
        assert statistics.scores(members) == {
            "bleu": BLEU().corpus_score(sub_h, [sub_r]).score,
            "chrf": CHRF().corpus_score(sub_h, [sub_r]).score,
            "exact_match": exact,
        }
    with pytest.raises(ValueError, match="empty"):
        statistics.scores([])


def test_scoring_again_with_intervals_reuses_the_statistics_and_gives_what_a_fresh_scoring_gives():
    from seq2seq.evaluation.scoring import SentenceOutput, score_split

    sources, hyps, refs = _sentences(50)
    outputs = [
        SentenceOutput(i, s, r, h, 0.0, 0, [True], [True], 1.0, 2)
        for i, (s, h, r) in enumerate(zip(sources, hyps, refs, strict=True))
    ]
    plain = score_split(outputs, [1, 11, 21], max_positions=2)
    again = score_split(outputs, [1, 11, 21], 2, bootstrap=200, statistics=plain.statistics)
    fresh = score_split(outputs, [1, 11, 21], 2, bootstrap=200)
    assert again.statistics is plain.statistics
    assert again.scores == fresh.scores == plain.scores
    assert again.intervals == fresh.intervals and set(fresh.intervals) == {"bleu", "chrf"}
    assert again.bleu_by_length == fresh.bleu_by_length
    assert again.signatures == fresh.signatures and "bs:200" in again.signatures["bleu"]
