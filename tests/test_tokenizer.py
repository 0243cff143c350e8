import pytest

from seq2seq.data import tokenizer as tok

SENTENCES = [f"the cat {w} the dog {w}" for w in ["sees", "likes", "finds", "hears"] * 5]


def test_word_model_round_trip_and_special_ids(tmp_path):
    t = tok.load_or_train(SENTENCES, {"model_type": "word", "vocab_size": 100}, tmp_path, "src")
    assert (t.pad_id, t.unk_id, t.bos_id, t.eos_id) == (0, 1, 2, 3)
    assert t.processor.id_to_piece(0) == "<pad>" and t.processor.id_to_piece(3) == "</s>"
    ids = t.encode("the cat sees the dog")
    assert len(ids) == 5 and min(ids) >= 4
    assert t.decode(ids) == "the cat sees the dog"
    assert t.encode("the zebra")[1] == t.unk_id
    assert t.pieces(ids)[0] == "▁the"


def test_cache_is_reused_and_keyed_by_data_and_settings(tmp_path, monkeypatch):
    settings = {"model_type": "word", "vocab_size": 100}
    first = tok.load_or_train(SENTENCES, settings, tmp_path, "src")
    calls = []
    real_train = tok.train_tokenizer
    monkeypatch.setattr(tok, "train_tokenizer", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    again = tok.load_or_train(SENTENCES, settings, tmp_path, "src")
    assert calls == [] and again.model_proto == first.model_proto
    tok.load_or_train(SENTENCES + ["a new sentence"], settings, tmp_path, "src")
    tok.load_or_train(SENTENCES, {"model_type": "char", "vocab_size": 100}, tmp_path, "src")
    assert len(calls) == 2
    assert len(list((tmp_path / "tokenizers").glob("src-*.model"))) == 3


def test_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="model_type='words'"):
        tok.train_tokenizer(SENTENCES, model_type="words")
    with pytest.raises(ValueError, match="empty training split"):
        tok.train_tokenizer([], model_type="word")
