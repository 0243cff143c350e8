import pytest
import torch

from seq2seq.models.seq2seq import EncoderDecoder

ATTENTIONS = ["bahdanau", "luong_dot", "luong_general", "luong_concat"]


def _model(rnn_type="gru", attention="bahdanau", context="init", layers=1, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = EncoderDecoder(
        11,
        13,
        embedding_size=6,
        hidden_size=8,
        rnn_type=rnn_type,
        attention=attention,
        context=context,
        encoder_layers=layers,
        decoder_layers=layers,
        **kwargs,
    )
    return model.eval()


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 11, (3, 7), generator=g)
    lengths = torch.tensor([7, 5, 2])
    src[1, 5:] = 0
    src[2, 2:] = 0
    tgt_in = torch.randint(4, 13, (3, 6), generator=g)
    tgt_in[:, 0] = 2  # BOS
    return src, lengths, tgt_in


@pytest.mark.parametrize("rnn_type", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("context", ["init", "every_step"])
def test_fixed_context_model_sees_only_the_final_state(rnn_type, context):
    """With attention=none, replacing every encoder output but the final state changes no decoder output."""
    model = _model(rnn_type, "none", context, layers=2)
    src, lengths, tgt_in = _batch()
    memory, state = model.encode(src, lengths)
    logits, weights = model.decoder(tgt_in, memory, state, return_attention=True)
    assert weights is None
    memory.outputs = torch.randn_like(memory.outputs) * 100  # everything but the final state
    memory2, state2 = memory, state
    logits2, _ = model.decoder(tgt_in, memory2, state2)
    torch.testing.assert_close(logits, logits2)
    # ... while changing the final state does change the output: the test can fail.
    _, state3 = model.encode(src.flip(1), lengths)
    logits3, _ = model.decoder(tgt_in, memory, state3)
    assert not torch.allclose(logits, logits3)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_models_do_read_the_encoder_outputs(attention):
    model = _model(attention=attention)
    src, lengths, tgt_in = _batch()
    memory, state = model.encode(src, lengths)
    logits, weights = model.decoder(tgt_in, memory, state, return_attention=True)
    assert weights.shape == (3, 6, 7)
    assert (weights[1, :, 5:] == 0).all() and (weights[2, :, 2:] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 6))
    memory.outputs = torch.randn_like(memory.outputs)
    memory.keys = model.decoder.attention.project_keys(memory.outputs)
    logits2, _ = model.decoder(tgt_in, memory, state)
    assert not torch.allclose(logits, logits2)


@pytest.mark.parametrize("attention", ["none", *ATTENTIONS])
@pytest.mark.parametrize("rnn_type", ["rnn", "gru", "lstm"])
def test_logits_shape(rnn_type, attention):
    model = _model(rnn_type, attention, layers=2)
    src, lengths, tgt_in = _batch()
    logits, _ = model(src, lengths, tgt_in)
    assert logits.shape == (3, 6, 13)
    assert torch.isfinite(logits).all()


def test_teacher_forcing_one_equals_pure_teacher_forcing():
    model = _model()
    src, lengths, tgt_in = _batch()
    pure, _ = model(src, lengths, tgt_in)
    mixed, _ = model(src, lengths, tgt_in, teacher_forcing_ratio=1.0 - 1e-12)  # takes the mixing path
    torch.testing.assert_close(pure, mixed)
    # Pure teacher forcing depends on the gold prefix.
    changed = tgt_in.clone()
    changed[:, 1:] = 4
    assert not torch.allclose(pure, model(src, lengths, changed)[0])


@pytest.mark.parametrize("sample", [False, True])
def test_teacher_forcing_zero_never_feeds_gold_after_bos(sample):
    model = _model()
    src, lengths, tgt_in = _batch()
    changed = tgt_in.clone()
    changed[:, 1:] = torch.randint(4, 13, changed[:, 1:].shape)

    def run(targets):
        generator = torch.Generator().manual_seed(7)
        memory, state = model.encode(src, lengths)
        return model.decoder(
            targets, memory, state, teacher_forcing_ratio=0.0, sample_feedback=sample, generator=generator
        )[0]

    torch.testing.assert_close(run(tgt_in), run(changed))


def test_free_running_with_ratio_zero_matches_greedy_search():
    from seq2seq.models.search import greedy_search

    model = _model()
    src, lengths, tgt_in = _batch()
    logits, _ = model(src, lengths, tgt_in, teacher_forcing_ratio=0.0)
    free_running = logits.argmax(-1)  # (B, T): what the decoder fed itself
    hyps = greedy_search(model, src, lengths, torch.full((3,), 6), bos_id=2, eos_id=3)
    for b, tokens in enumerate(hyps.tokens):
        assert tokens == free_running[b, : len(tokens)].tolist()


def test_bad_options():
    with pytest.raises(ValueError, match="model.context='sometimes'"):
        _model(attention="none", context="sometimes")
    with pytest.raises(ValueError, match="must equal encoder layers"):
        EncoderDecoder(5, 5, 4, 8, encoder_layers=2, decoder_layers=1)


@pytest.mark.parametrize("rnn_type", ["rnn", "gru", "lstm"])
def test_stacked_cell_is_a_one_step_fused_rnn(rnn_type):
    """The decoder's cell stack initialises and computes exactly like a one-step nn.RNN/GRU/LSTM."""
    from seq2seq.models.decoder import StackedCell
    from seq2seq.models.encoders import make_rnn

    torch.manual_seed(0)
    fused = make_rnn(rnn_type, 5, 7, 2, 0.0)
    torch.manual_seed(0)
    cells = StackedCell(rnn_type, 5, 7, 2, 0.0)
    for a, b in zip(fused.parameters(), cells.parameters(), strict=True):
        assert torch.equal(a, b)
    x, h = torch.randn(3, 5), torch.randn(2, 3, 7)
    hidden = (h, torch.randn(2, 3, 7)) if rnn_type == "lstm" else h
    out_fused, state_fused = fused(x.unsqueeze(1), hidden)
    out, state = cells(x, hidden)
    torch.testing.assert_close(out, out_fused.squeeze(1))
    torch.testing.assert_close(state, state_fused)
