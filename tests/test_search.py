import pytest
import torch

from seq2seq.models.search import beam_search, greedy_search, max_output_lengths
from seq2seq.models.seq2seq import EncoderDecoder

BOS, EOS = 2, 3


def _setup(attention="bahdanau"):
    torch.manual_seed(0)
    model = EncoderDecoder(12, 12, 6, 8, attention=attention).eval()
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 12, (5, 6), generator=g)
    lengths = torch.tensor([6, 6, 4, 3, 1])
    for b, n in enumerate(lengths.tolist()):
        src[b, n:] = 0
    return model, src, lengths


def test_max_output_lengths():
    assert max_output_lengths(torch.tensor([1, 10]), 1.5, 2).tolist() == [4, 17]


def test_greedy_respects_budgets_and_never_emits_specials():
    model, src, lengths = _setup()
    budgets = torch.tensor([1, 2, 3, 4, 5])
    hyps = greedy_search(model, src, lengths, budgets, BOS, EOS)
    for tokens, budget in zip(hyps.tokens, budgets.tolist(), strict=True):
        assert len(tokens) <= budget
        assert BOS not in tokens and EOS not in tokens


def test_greedy_is_independent_of_the_batch():
    """Dropping finished sentences from the batch must not change anyone's output."""
    model, src, lengths = _setup()
    budgets = torch.full((5,), 9)
    together = greedy_search(model, src, lengths, budgets, BOS, EOS, return_attention=True)
    for b in range(5):
        n = int(lengths[b])
        alone = greedy_search(
            model, src[b : b + 1, :n], lengths[b : b + 1], budgets[b : b + 1], BOS, EOS, return_attention=True
        )
        assert alone.tokens[0] == together.tokens[b]
        torch.testing.assert_close(alone.attention[0], together.attention[b])
        assert together.attention[b].shape == (len(together.tokens[b]) + (len(together.tokens[b]) < 9), n)


def test_greedy_matches_argmax_of_teacher_forced_rescoring():
    model, src, lengths = _setup()
    hyps = greedy_search(model, src, lengths, torch.full((5,), 7), BOS, EOS)
    for b, tokens in enumerate(hyps.tokens):
        n = int(lengths[b])
        tgt_in = torch.tensor([[BOS, *tokens]])
        logits, _ = model(src[b : b + 1, :n], lengths[b : b + 1], tgt_in)
        assert logits[0, : len(tokens)].argmax(-1).tolist() == tokens


def test_greedy_takes_the_first_of_equal_best_tokens():
    """Tokens 5, 7 and 9 tie for the highest logit at every step: greedy (as argmax) takes the lowest id."""
    model, src, lengths = _setup()
    with torch.no_grad():
        model.decoder.generator.weight.zero_()
        model.decoder.generator.bias.fill_(-1.0)
        model.decoder.generator.bias[[5, 7, 9]] = 2.0
    hyps = greedy_search(model, src, lengths, torch.full((5,), 4), BOS, EOS)
    assert hyps.tokens == [[5] * 4] * 5
    with torch.no_grad():  # the tie broken in 9's favour: every choice follows it
        model.decoder.generator.bias[9] = 2.5
    assert greedy_search(model, src, lengths, torch.full((5,), 4), BOS, EOS).tokens == [[9] * 4] * 5


def test_no_attention_map_for_fixed_context():
    model, src, lengths = _setup("none")
    hyps = greedy_search(model, src, lengths, torch.full((5,), 4), BOS, EOS, return_attention=True)
    assert hyps.attention is None


COMBINATIONS = [
    (rnn_type, attention, "init")
    for rnn_type in ("rnn", "gru", "lstm")
    for attention in ("none", "bahdanau", "luong_dot", "luong_general", "luong_concat")
] + [(rnn_type, "none", "every_step") for rnn_type in ("rnn", "gru", "lstm")]


@pytest.mark.parametrize(("rnn_type", "attention", "context"), COMBINATIONS)
def test_both_searches_decode_every_encoder_attention_and_context(rnn_type, attention, context):
    torch.manual_seed(0)
    model = EncoderDecoder(
        12,
        12,
        6,
        8,
        rnn_type=rnn_type,
        attention=attention,
        context=context,
        encoder_layers=2,
        decoder_layers=2,
    ).eval()
    _, src, lengths = _setup()
    budgets = torch.full((5,), 6)
    greedy = greedy_search(model, src, lengths, budgets, BOS, EOS, return_attention=True)
    beam = beam_search(model, src, lengths, budgets, BOS, EOS, beam_size=3, return_attention=True)
    for hyps in (greedy, beam):
        assert len(hyps.tokens) == 5 and all(len(t) <= 6 and EOS not in t for t in hyps.tokens)
        if attention == "none":
            assert hyps.attention is None  # the fixed-context model has no attention to show
        else:
            for b, (tokens, weights) in enumerate(zip(hyps.tokens, hyps.attention, strict=True)):
                assert weights.shape[1] == int(lengths[b]) and weights.shape[0] in (
                    len(tokens),
                    len(tokens) + 1,
                )
                torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[0]))


def test_no_empty_output_even_when_eos_is_most_likely_first():
    """An (undertrained) model that prefers EOS at once still writes at least min_length tokens."""
    from seq2seq.models.search import beam_search

    model, src, lengths = _setup()
    with torch.no_grad():
        model.decoder.generator.bias[EOS] = 100.0  # EOS dominates every step
    budgets = torch.full((5,), 6)
    for search in (greedy_search, lambda *a, **k: beam_search(*a, beam_size=3, **k)):
        assert all(len(t) == 1 for t in search(model, src, lengths, budgets, BOS, EOS).tokens)
        assert all(len(t) == 0 for t in search(model, src, lengths, budgets, BOS, EOS, min_length=0).tokens)
        assert all(len(t) == 3 for t in search(model, src, lengths, budgets, BOS, EOS, min_length=3).tokens)
