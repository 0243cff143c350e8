import torch

from seq2seq.models.search import greedy_search, max_output_lengths
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


def test_no_attention_map_for_fixed_context():
    model, src, lengths = _setup("none")
    hyps = greedy_search(model, src, lengths, torch.full((5,), 4), BOS, EOS, return_attention=True)
    assert hyps.attention is None
