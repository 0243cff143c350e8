"""Beam search: equals greedy at size 1, independent of the batch, scores what it says, beats greedy."""

import math

import pytest
import torch
import torch.nn.functional as F

from seq2seq.models.decoder import DecoderState, Memory
from seq2seq.models.search import beam_search, greedy_search, length_penalty
from seq2seq.models.seq2seq import EncoderDecoder

BOS, EOS = 2, 3
VOCAB = 30


def _model(attention="bahdanau"):
    """A random model with sharp output distributions whose EOS acts like a common output token.

    EOS gets the output weights of the token that greedy search emits in about half of the sentences
    of :func:`_batch` (plus a hair), so those sentences end there and the others run to their budget.
    """
    torch.manual_seed(2)
    model = EncoderDecoder(VOCAB, VOCAB, 8, 16, attention=attention).eval()
    generator = model.decoder.generator
    with torch.no_grad():
        generator.weight.mul_(8.0)
        src, lengths, budgets = _batch()
        outputs = greedy_search(model, src, lengths, budgets, BOS, EOS).tokens
        coverage = {t: sum(t in out for out in outputs) for t in range(4, VOCAB)}
        token = min(coverage, key=lambda t: abs(coverage[t] - len(outputs) / 2))
        generator.weight[EOS] = generator.weight[token]
        generator.bias[EOS] = generator.bias[token] + 0.01
    return model


def _batch(size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 12, (size,), generator=g)
    src = torch.randint(4, VOCAB, (size, int(lengths.max())), generator=g)
    for b, n in enumerate(lengths.tolist()):
        src[b, n:] = 0
    budgets = torch.ceil(lengths * 1.5 + 2).long()
    return src, lengths, budgets


def test_length_penalty_is_gnmt():
    assert length_penalty(7, 1.0).item() == pytest.approx(2.0)  # (5 + 7) / 6
    assert length_penalty(10, 0.5).item() == pytest.approx(math.sqrt(15 / 6))
    assert length_penalty(torch.tensor([1, 20]), 0.0).tolist() == [1.0, 1.0]  # alpha = 0: plain log-prob
    assert length_penalty(1, 3.0).item() == pytest.approx(1.0)


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "none"])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_size_one_is_exactly_greedy(attention, alpha):
    model = _model(attention)
    src, lengths, budgets = _batch()
    greedy = greedy_search(model, src, lengths, budgets, BOS, EOS, return_attention=True)
    beam = beam_search(
        model, src, lengths, budgets, BOS, EOS, beam_size=1, alpha=alpha, return_attention=True
    )
    assert beam.tokens == greedy.tokens
    ended_early = [len(t) < b for t, b in zip(greedy.tokens, budgets.tolist(), strict=True)]
    assert any(ended_early) and not all(ended_early)  # both ways of stopping are exercised
    if attention == "none":
        assert beam.attention is None and greedy.attention is None
    else:
        for ours, theirs in zip(beam.attention, greedy.attention, strict=True):
            torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("attention", ["bahdanau", "luong_dot", "none"])
def test_beam_search_does_not_depend_on_the_batch(attention):
    model = _model(attention)
    src, lengths, budgets = _batch(16)
    together = beam_search(
        model, src, lengths, budgets, BOS, EOS, beam_size=4, alpha=0.6, return_attention=True
    )
    assert len({len(t) for t in together.tokens}) > 2  # sentences finish at different steps
    for b in range(16):
        n = int(lengths[b])
        alone = beam_search(
            model, src[b : b + 1, :n], lengths[b : b + 1], budgets[b : b + 1], BOS, EOS, 4, 0.6, True
        )
        assert alone.tokens[0] == together.tokens[b]
        assert alone.scores[0] == pytest.approx(together.scores[b], abs=1e-5)
        if attention != "none":
            torch.testing.assert_close(alone.attention[0], together.attention[b])


def test_scores_are_length_normalised_log_probabilities_of_the_output():
    model = _model()
    src, lengths, budgets = _batch(8)
    alpha = 0.7
    hyps = beam_search(
        model, src, lengths, budgets, BOS, EOS, beam_size=3, alpha=alpha, return_attention=True
    )
    for b, (tokens, score) in enumerate(zip(hyps.tokens, hyps.scores, strict=True)):
        n = int(lengths[b])
        ended = len(tokens) < int(budgets[b])
        labels = tokens + [EOS] if ended else tokens
        logits, _ = model(src[b : b + 1, :n], lengths[b : b + 1], torch.tensor([[BOS, *labels[:-1]]]))
        log_prob = F.log_softmax(logits[0], dim=-1).gather(1, torch.tensor(labels).unsqueeze(1)).sum()
        expected = float(log_prob.detach() / length_penalty(len(labels), alpha))
        assert score == pytest.approx(expected, abs=1e-4)
        assert hyps.attention[b].shape == (len(labels), n)
        assert len(tokens) <= int(budgets[b]) and EOS not in tokens


class _MarkovDecoder(torch.nn.Module):
    """A decoder whose next-token distribution depends only on the previous token (a table of log-probs)."""

    attention = None

    def __init__(self, probs: torch.Tensor) -> None:
        super().__init__()
        self.table = probs.clamp_min(1e-9).log()  # (V, V)

    def embedding(self, prev):
        return F.one_hot(prev, self.table.size(0)).float()  # (B, V)

    def forward_step(self, embedded, state, memory):
        return embedded, state, None

    def logits(self, attentional):
        return attentional @ self.table


class _MarkovModel(torch.nn.Module):
    def __init__(self, probs: torch.Tensor) -> None:
        super().__init__()
        self.decoder = _MarkovDecoder(probs)

    def encode(self, src, src_lengths):
        batch = src.size(0)
        memory = Memory(torch.zeros(batch, src.size(1), 1), None, src != 0, torch.zeros(batch, 1))
        return memory, DecoderState(torch.zeros(1, batch, 1), torch.zeros(batch, 1))


def test_beam_finds_the_more_probable_output_that_greedy_misses():
    """P(A) = .5 but P(EOS | A) = .3; P(B) = .4 and P(EOS | B) = .9: greedy says "A", beam says "B"."""
    a, b, c = 4, 5, 6
    probs = torch.zeros(7, 7)
    probs[BOS, [a, b, c]] = torch.tensor([0.5, 0.4, 0.1])
    probs[a, [EOS, a, b, c]] = torch.tensor([0.3, 0.24, 0.23, 0.23])
    probs[b, [EOS, a, b, c]] = torch.tensor([0.9, 0.04, 0.03, 0.03])
    probs[c, EOS] = 1.0
    model = _MarkovModel(probs)
    src, lengths, budgets = torch.tensor([[4, 4]]), torch.tensor([2]), torch.tensor([6])
    assert greedy_search(model, src, lengths, budgets, BOS, EOS).tokens == [[a]]
    hyps = beam_search(model, src, lengths, budgets, BOS, EOS, beam_size=2, alpha=0.0)
    assert hyps.tokens == [[b]]
    assert hyps.scores[0] == pytest.approx(math.log(0.4 * 0.9), abs=1e-5)


def test_beam_size_must_be_positive():
    model = _model()
    src, lengths, budgets = _batch(2)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, src, lengths, budgets, BOS, EOS, beam_size=0)
