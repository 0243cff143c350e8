"""The Transformer encoder and decoder: shapes, masks, cached decoding, search, config, and whole runs."""

from __future__ import annotations

import math

import pytest
import torch

from seq2seq.config.checks import ConfigError, validate_train
from seq2seq.models.positional import sinusoids
from seq2seq.models.search import beam_search, greedy_search
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.models.transformer import TransformerDecoder, TransformerEncoder
from seq2seq.train import train

BOS, EOS, VOCAB = 2, 3, 20
TRANSFORMER = ["model/encoder=transformer", "model/decoder=transformer"]
SMALL = ["model.encoder.ff_size=32", "model.decoder.ff_size=32"]


def _model(encoder="transformer", decoder="transformer", attention="bahdanau", dropout=0.0):
    torch.manual_seed(0)
    model = EncoderDecoder(
        VOCAB, VOCAB, 12, 16, attention=attention, encoder_type=encoder, decoder_type=decoder,
        encoder_layers=2, decoder_layers=2, encoder_dropout=dropout, decoder_dropout=dropout,
        encoder_ff_size=24, decoder_ff_size=24, rnn_type="gru", bidirectional=encoder == "rnn",
    )  # fmt: skip
    with torch.no_grad():
        model.decoder.generator.weight.mul_(6.0)  # sharp distributions: searches differ where they can
    return model.double().eval()


def _batch(size=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 10, (size,), generator=g)
    lengths[0] = 9
    src = torch.randint(4, VOCAB, (size, 9), generator=g)
    for b, n in enumerate(lengths.tolist()):
        src[b, n:] = 0
    tgt = torch.randint(4, VOCAB, (size, 7), generator=g)
    tgt[:, 0] = BOS
    return src, lengths, tgt


def test_sinusoids_are_vaswanis():
    pe = sinusoids(torch.arange(50), 8)
    assert pe.shape == (50, 8)
    torch.testing.assert_close(pe[0], torch.tensor([0.0, 1.0] * 4))
    for pos, i in ((7, 0), (13, 1), (42, 3)):
        angle = pos / 10000 ** (2 * i / 8)
        assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
        assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_encoder_shapes_padding_and_final_state():
    torch.manual_seed(0)
    encoder = TransformerEncoder(12, 16, layers=3, heads=4, ff_size=24, dropout=0.0).eval()
    embedded = torch.randn(2, 5, 12)
    lengths = torch.tensor([5, 3])
    outputs, final = encoder(embedded, lengths)
    assert outputs.shape == (2, 5, 16) and final.shape == (3, 2, 16)
    assert outputs[1, 3:].eq(0).all()
    torch.testing.assert_close(final[0, 1], outputs[1, :3].mean(0))
    poisoned = embedded.clone()
    poisoned[1, 3:] = 1e3  # padding never reaches a real position
    outputs2, _ = encoder(poisoned, lengths)
    torch.testing.assert_close(outputs2, outputs)


def test_decoder_masks_padding_and_the_future():
    model = _model()
    src, lengths, tgt = _batch()
    logits, weights = model(src, lengths, tgt, return_attention=True)
    assert logits.shape == (6, 7, VOCAB) and weights.shape == (6, 7, 9)
    real = torch.arange(9) < lengths[:, None]
    assert weights.masked_select(~real[:, None, :]).eq(0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(6, 7, dtype=torch.double))
    for i in range(6):  # alone, without padding: the same as in the padded batch
        n = int(lengths[i])
        alone, _ = model(src[i : i + 1, :n], lengths[i : i + 1], tgt[i : i + 1])
        torch.testing.assert_close(alone[0], logits[i])
    later = tgt.clone()
    later[:, 4:] = torch.randint(4, VOCAB, (6, 3))  # the future: positions 0-3 must not change
    logits2, _ = model(src, lengths, later)
    torch.testing.assert_close(logits2[:, :4], logits[:, :4])
    assert not torch.allclose(logits2[:, 4:], logits[:, 4:])


@pytest.mark.parametrize("encoder", ["transformer", "rnn"])
def test_incremental_decoding_equals_full_recomputation(encoder):
    model = _model(encoder=encoder)
    src, lengths, tgt = _batch()
    full, full_weights = model(src, lengths, tgt, return_attention=True)
    memory, state = model.encode(src, lengths)
    decoder: TransformerDecoder = model.decoder
    for t in range(tgt.size(1)):
        out, state, weights = decoder.forward_step(decoder.embedding(tgt[:, t]), state, memory)
        torch.testing.assert_close(decoder.logits(out), full[:, t])
        torch.testing.assert_close(weights, full_weights[:, t])
        assert state.step == t + 1 and state.past[0][0].shape == (
            6,
            4,
            t + 1,
            4,
        )  # keys cached, not recomputed


def test_greedy_is_beam_one_and_beam_is_batch_invariant():
    model = _model()
    src, lengths, _ = _batch(size=8, seed=3)
    budgets = torch.ceil(lengths * 1.5 + 2).long()
    greedy = greedy_search(model, src, lengths, budgets, BOS, EOS, return_attention=True)
    beam1 = beam_search(model, src, lengths, budgets, BOS, EOS, beam_size=1, alpha=0.0, return_attention=True)
    assert beam1.tokens == greedy.tokens
    for a, b in zip(beam1.attention, greedy.attention, strict=True):
        torch.testing.assert_close(a, b)
    batched = beam_search(model, src, lengths, budgets, BOS, EOS, beam_size=3)
    for i in range(8):
        n = int(lengths[i])
        alone = beam_search(
            model, src[i : i + 1, :n], lengths[i : i + 1], budgets[i : i + 1], BOS, EOS, beam_size=3
        )
        assert alone.tokens[0] == batched.tokens[i]
        assert alone.scores[0] == pytest.approx(batched.scores[i], abs=1e-9)


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "luong_local", "none"])
def test_hybrid_transformer_encoder_with_every_recurrent_decoder(attention):
    model = _model(decoder="rnn", attention=attention)
    src, lengths, tgt = _batch()
    logits, _ = model(src, lengths, tgt)
    assert logits.shape == (6, 7, VOCAB)
    budgets = torch.full((6,), 5)
    beam1 = beam_search(model, src, lengths, budgets, BOS, EOS, beam_size=1, alpha=0.0)
    assert beam1.tokens == greedy_search(model, src, lengths, budgets, BOS, EOS).tokens


def test_scheduled_sampling_at_ratio_one_equals_teacher_forcing():
    model = _model()
    src, lengths, tgt = _batch()
    full, _ = model(src, lengths, tgt)
    stepped, _ = model(src, lengths, tgt, teacher_forcing_ratio=1.0 - 1e-12)  # the step loop, every coin gold
    torch.testing.assert_close(stepped, full)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model/decoder=transformer", "model/attention=bahdanau"],
            "model/attention=bahdanau does not apply",
        ),
        (["model/attention=multihead"], "model/attention=multihead belongs to model/decoder=transformer"),
        ([*TRANSFORMER, "model.decoder.heads=3"], "divisible by model.decoder.heads=3"),
        (["model/encoder=transformer", "model.encoder.type=cnn"], "model.encoder.type"),
    ],
)
def test_config_checks(tiny_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_train(tiny_cfg(*overrides))


def test_full_transformer_trains_translates_and_draws_attention_per_head(tiny_cfg, tmp_path, capsys):
    """A tiny full Transformer run with ``eval.attention_heads``: every attention map has its per-head twin; the
    translator's per-head weights (teacher forcing on the hypothesis) average, in the last layer, to the
    attention the search itself returned, greedy and beam; ``translate attention_heads=true`` dumps them."""
    import json

    from seq2seq.inference.checkpoint import load_checkpoint
    from seq2seq.inference.translator import Translator
    from seq2seq.models.decoding import Decoding
    from tests.test_translate import compose_translate, run_translate

    overrides = (*TRANSFORMER, *SMALL, "eval.attention_examples=2", "eval.attention_heads=true")
    results = train(tiny_cfg(*overrides, "trainer.max_steps=4"))
    assert results["status"] == "completed"
    assert results["choices"]["model/encoder"] == "transformer"
    assert results["choices"]["model/decoder"] == "transformer"
    assert results["choices"]["model/attention"] == "multihead"
    assert results["metrics"]["test/attention_entropy"] is not None
    run = tmp_path / "run"
    maps = sorted(p.name for p in (run / "plots" / "attention").iterdir())
    plain = [name for name in maps if not name.endswith("_heads.png")]
    assert len(plain) == 2 and sorted(set(maps) - set(plain)) == [n[:-4] + "_heads.png" for n in plain]
    trained = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert isinstance(trained.model.decoder, TransformerDecoder)
    sentences = ["w01 w02 w03", "w04 w05", "w06 w07 w08 w09 w10 w11"]
    for decoding in (Decoding("greedy"), Decoding("beam", beam_size=2)):
        translator = Translator(trained.model, trained.encoder, decoding, 1000)
        translations = translator.translate(sentences, return_attention=True, return_heads=True)
        for t in translations:
            rows, cols = len(t.output_pieces), len(t.source_pieces)
            assert t.heads.shape == (2, 4, rows, cols)  # two decoder layers, four heads
            torch.testing.assert_close(t.heads.sum(-1), torch.ones(2, 4, rows))
            torch.testing.assert_close(t.heads[-1].mean(0), t.attention, atol=1e-5, rtol=1e-4)
    source, dump = tmp_path / "in.txt", tmp_path / "attention.json"
    source.write_text("\n".join(sentences) + "\n")
    ckpt = run / "checkpoints" / "last.ckpt"
    run_translate(
        capsys, f"ckpt_path={ckpt}", f"input={source}", f"dump_attention={dump}", "attention_heads=true"
    )
    lines = json.loads(dump.read_text())["lines"]
    for line in lines:
        assert len(line["heads"]) == 2 and len(line["heads"][0]) == 4
        assert len(line["heads"][0][0]) == len(line["output_pieces"])
    with pytest.raises(ConfigError, match="add dump_attention=<file>"):
        from seq2seq.translate import translate

        translate(compose_translate(f"ckpt_path={ckpt}", "attention_heads=true"))


def test_per_head_attention_is_refused_for_a_recurrent_decoder(tiny_cfg, tmp_path):
    """Training, evaluate and translate each refuse per-head maps of a recurrent decoder, and per-head maps of
    no sentences, with one message naming the option — before anything is decoded."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from seq2seq.evaluate import evaluate
    from seq2seq.inference.translator import Translator
    from seq2seq.models.decoding import Decoding
    from seq2seq.translate import translate
    from tests.conftest import CONF
    from tests.test_translate import compose_translate, write_checkpoint

    with pytest.raises(ConfigError, match="eval.attention_heads=true draws the Transformer decoder"):
        validate_train(tiny_cfg("eval.attention_heads=true"))
    with pytest.raises(ConfigError, match="eval.attention_examples to at least 1"):
        validate_train(tiny_cfg(*TRANSFORMER, "eval.attention_heads=true", "eval.attention_examples=0"))
    model = _model(encoder="rnn", decoder="rnn")
    with pytest.raises(ValueError, match="per-head attention: only a Transformer decoder"):
        Translator(model, None, Decoding("greedy"), 100).translate(["w01"], return_heads=True)
    ckpt = write_checkpoint(tmp_path)  # a recurrent decoder
    dump = tmp_path / "attention.json"
    with pytest.raises(ValueError, match="attention_heads=true: only a Transformer decoder"):
        translate(compose_translate(f"ckpt_path={ckpt}", f"dump_attention={dump}", "attention_heads=true"))
    assert not dump.exists()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "evaluate", [f"ckpt_path={ckpt}", f"output_dir={tmp_path / 'ev'}", "attention_heads=true"]
        )
    with pytest.raises(ValueError, match="attention_heads=true: only a Transformer decoder"):
        evaluate(cfg)
    assert not (tmp_path / "ev" / "predictions").exists()


def test_hybrid_trains(tiny_cfg):
    results = train(tiny_cfg("model/encoder=transformer", "model.encoder.ff_size=32"))
    assert results["status"] == "completed"
    assert results["choices"]["model/encoder"] == "transformer"
    assert results["choices"]["model/decoder"] == "rnn"
    assert results["choices"]["model/attention"] == "bahdanau"


def test_transformer_resumes_exactly(tiny_cfg, tmp_path):
    whole = train(tiny_cfg(*TRANSFORMER, *SMALL, "trainer.max_steps=6", "trainer.max_epochs=3"))
    first = tmp_path / "run" / "checkpoints" / "last.ckpt"
    weights = torch.load(first, map_location="cpu", weights_only=False)["state_dict"]
    (tmp_path / "run").rename(tmp_path / "whole")
    train(tiny_cfg(*TRANSFORMER, *SMALL, "trainer.max_steps=3", "trainer.max_epochs=3"))
    resumed = train(
        tiny_cfg(*TRANSFORMER, *SMALL, "trainer.max_steps=6", "trainer.max_epochs=3", "ckpt_path=last")
    )
    assert resumed["train"]["steps"] == 6 and resumed["metrics"] == whole["metrics"]
    again = torch.load(first, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(weights[k], again[k]) for k in weights)
