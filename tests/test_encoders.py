import pytest
import torch

from seq2seq.models.encoders import RecurrentEncoder


@pytest.mark.parametrize("rnn_type", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_shapes_and_padding(rnn_type, bidirectional):
    torch.manual_seed(0)
    encoder = RecurrentEncoder(
        rnn_type, embedding_size=5, hidden_size=8, num_layers=2, bidirectional=bidirectional
    )
    embedded = torch.randn(3, 6, 5)
    lengths = torch.tensor([6, 4, 1])
    outputs, final = encoder(embedded, lengths)
    assert outputs.shape == (3, 6, 8)
    hidden = final[0] if rnn_type == "lstm" else final
    assert hidden.shape == (2, 3, 8)
    if rnn_type == "lstm":
        assert final[1].shape == (2, 3, 8)
    # Padding positions carry nothing.
    assert outputs[1, 4:].abs().sum() == 0 and outputs[2, 1:].abs().sum() == 0


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_final_state_is_last_real_step_forward_and_first_step_backward(rnn_type):
    torch.manual_seed(0)
    encoder = RecurrentEncoder(rnn_type, embedding_size=4, hidden_size=6, bidirectional=True)
    embedded = torch.randn(2, 5, 4)
    lengths = torch.tensor([5, 3])
    outputs, final = encoder(embedded, lengths)
    top = (final[0] if rnn_type == "lstm" else final)[-1]  # (B, H)
    half = 3
    for b, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(top[b, :half], outputs[b, length - 1, :half])  # forward reads to the end
        torch.testing.assert_close(top[b, half:], outputs[b, 0, half:])  # backward ends at position 0


def test_padding_does_not_change_real_outputs():
    torch.manual_seed(0)
    encoder = RecurrentEncoder("gru", embedding_size=4, hidden_size=6)
    x = torch.randn(1, 3, 4)
    alone, _ = encoder(x, torch.tensor([3]))
    padded, _ = encoder(torch.cat([x, torch.randn(1, 4, 4)], dim=1), torch.tensor([3]))
    torch.testing.assert_close(alone[0], padded[0, :3])


def test_odd_hidden_size_with_bidirectional_is_rejected():
    with pytest.raises(ValueError, match="hidden_size=7 must be even"):
        RecurrentEncoder("gru", 4, 7, bidirectional=True)


def test_unknown_rnn_type():
    with pytest.raises(ValueError, match="unknown rnn_type 'transformer'"):
        RecurrentEncoder("transformer", 4, 8)
