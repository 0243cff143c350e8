"""Gold alignments of the toy task and how attention is scored against them."""

import json

import pytest
import torch

from seq2seq.data.errors import DataError
from seq2seq.data.synthetic import TOY_LEXICON, generate_pairs
from seq2seq.data.tokenizer import Tokenizer, train_tokenizer
from seq2seq.data.toy_alignment import toy_alignment
from seq2seq.evaluation.alignment import alignment_scores, sentence_alignment, word_of_each_piece
from seq2seq.train import train
from tests.conftest import TOY, compose_train


def test_gold_alignment_links_each_target_word_to_its_translation():
    for source, target in generate_pairs("toy_translation", 500, 3, 60, seed=7):
        gold, src, tgt = toy_alignment(source), source.split(), target.split()
        assert len(gold) == len(tgt) and sorted(gold) == list(range(len(src)))  # a permutation
        for j, i in enumerate(gold):
            if src[i] in TOY_LEXICON:  # content words, prepositions, conjunctions: their own translation
                assert TOY_LEXICON[src[i]] == tgt[j]


def test_gold_alignment_of_a_known_sentence():
    # the big dog sees some cats near this river -> ulo pipi gigi eman jaseli iko mesa deri bipit
    # gloss: the dog big some cats this river near sees
    assert toy_alignment("the big dog sees some cats near this river") == [0, 2, 1, 4, 5, 7, 8, 6, 3]
    with pytest.raises(DataError, match="not a toy_translation source"):
        toy_alignment("w01 w02")


def test_word_of_each_piece():
    pairs = generate_pairs("toy_translation", 40, 3, 12, seed=1)
    tok = _tokenized(pairs, "bpe")
    text = "the proud children sing and a box waits"
    pieces = tok.encode(text)
    words = word_of_each_piece(tok, text)
    assert len(words) == len(pieces) and words[0] == 0 and words[-1] == 7
    assert words == sorted(words) and set(words) == set(range(8))
    word = Tokenizer(train_tokenizer(["a b c"], "word", 20))
    assert word_of_each_piece(word, "a zzz c") == [0, 1, 2]  # an unknown word is one <unk> piece


def _tokenized(pairs, model_type):
    texts = [s for pair in pairs for s in pair]
    tok = Tokenizer(train_tokenizer(texts, model_type, 300 if model_type == "bpe" else 2000))
    return tok


@pytest.mark.parametrize("model_type", ["word", "bpe"])
@pytest.mark.parametrize("reverse", [False, True])
def test_attention_forced_onto_gold_scores_perfectly(model_type, reverse):
    """Attention put on the gold word (on its pieces, in the model's source order) scores 100 %; attention
    shifted one word off scores less; uniform attention matches the gold mass 1/|x|."""
    pairs = generate_pairs("toy_translation", 60, 3, 30, seed=3)
    tok = _tokenized(pairs, model_type)
    counts, shifted, uniform = [], [], []
    for source, target in pairs:
        gold = toy_alignment(source)
        src_words = word_of_each_piece(tok, source)
        tgt_words = word_of_each_piece(tok, target)
        order = list(range(len(src_words)))[::-1] if reverse else list(range(len(src_words)))
        model_words = [src_words[p] for p in order]  # what the model sees at each position
        forced = torch.zeros(len(tgt_words), len(order))
        off = torch.zeros_like(forced)
        n_words = max(src_words) + 1
        for t, j in enumerate(tgt_words):
            columns = [c for c, w in enumerate(model_words) if w == gold[j]]
            forced[t, columns] = 1.0 / len(columns)
            wrong = [c for c, w in enumerate(model_words) if w == (gold[j] + 1) % n_words]
            off[t, wrong] = 1.0 / len(wrong)
        counts.append(sentence_alignment(forced, model_words, tgt_words, gold))
        shifted.append(sentence_alignment(off, model_words, tgt_words, gold))
        flat = torch.full_like(forced, 1.0 / len(order))
        uniform.append(sentence_alignment(flat, model_words, tgt_words, gold))
    sources = [s for s, _ in pairs]
    perfect = alignment_scores(sources, counts, [1, 11, 21])
    assert perfect["accuracy"] == 100.0 and perfect["aer"] == 0.0
    assert perfect["gold_mass"] == pytest.approx(100.0)
    assert perfect["sentences"] == 60 and sum(row["n"] for row in perfect["by_length"]) == 60
    assert all(row["accuracy"] == 100.0 for row in perfect["by_length"] if row["n"])
    assert alignment_scores(sources, shifted, [1])["accuracy"] == 0.0
    assert alignment_scores(sources, shifted, [1])["aer"] == 100.0


def test_unjudgeable_sentences_are_left_out():
    assert sentence_alignment(torch.ones(2, 2), [0, 1], [0, 1, 2], [0, 1]) is None  # word counts differ
    assert alignment_scores(["a b"], [None], [1]) is None


def test_toy_run_reports_alignment(tmp_path):
    results = train(compose_train(tmp_path, *TOY))
    assert 0.0 <= results["metrics"]["test/alignment_accuracy"] <= 100.0
    assert results["metrics"]["test/aer"] == pytest.approx(
        100.0 - results["metrics"]["test/alignment_accuracy"]
    )
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["alignment"]["sentences"] == 12
    assert [row["bucket"] for row in written["alignment"]["by_length"]][:2] == ["1-10", "11-20"]
    none = train(compose_train(tmp_path / "none", *TOY, "model/attention=none"))
    assert "test/alignment_accuracy" not in none["metrics"]
