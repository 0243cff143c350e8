"""Luong local attention: the window, the Gaussian, the predicted position, masks, and a training run."""

import math

import pytest
import torch

from seq2seq.config.checks import ConfigError, validate_train
from seq2seq.models.local_attention import LocalAttention
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.train import train

B, S, H = 3, 30, 6
LENGTHS = torch.tensor([30, 17, 4])


def _inputs(seed=0, scale=1.0):
    torch.manual_seed(seed)
    query = torch.randn(B, H) * scale
    memory = torch.randn(B, S, H)
    mask = torch.arange(S).unsqueeze(0) < LENGTHS.unsqueeze(1)
    return query, memory, mask


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
def test_local_p_is_zero_outside_the_window_and_at_padding(score):
    query, memory, mask = _inputs()
    attention = LocalAttention(H, H, 5, score=score, mode="p", window=3)
    context, weights = attention(query, attention.project_keys(memory), memory, mask)
    centre = attention.aligned_position(query, LENGTHS, step=0)
    distance = (torch.arange(S).unsqueeze(0) - centre.unsqueeze(1)).abs()
    assert (weights[distance > 3] == 0).all()
    assert (weights[~mask] == 0).all()
    assert (weights[mask & (distance <= 3)] > 0).all()
    torch.testing.assert_close(context, (weights.unsqueeze(-1) * memory).sum(1))


def test_local_p_gaussian_factor():
    """a_t(s) = softmax over the window of score(h_t, h̄_s), times exp(-(s - p_t)² / (2 (D/2)²))."""
    query, memory, mask = _inputs(seed=1)
    window = 4
    attention = LocalAttention(H, H, 5, score="general", mode="p", window=window)
    _, weights = attention(query, attention.project_keys(memory), memory, mask)
    centre = attention.aligned_position(query, LENGTHS, step=0)
    scores = attention.score(query, attention.project_keys(memory))
    for b in range(B):
        inside = [s for s in range(int(LENGTHS[b])) if abs(s - centre[b].item()) <= window]
        probs = torch.softmax(scores[b, inside], dim=0)
        gauss = torch.tensor(
            [math.exp(-((s - centre[b].item()) ** 2) / (2 * (window / 2) ** 2)) for s in inside]
        )
        torch.testing.assert_close(weights[b, inside], probs * gauss)
        assert weights[b].sum() < 1.0  # the Gaussian is not renormalised (Luong et al. 2015, eq. 10)


def test_predicted_position_stays_in_zero_to_source_length():
    attention = LocalAttention(H, H, 5, mode="p", window=2)
    for seed in range(5):
        query, memory, mask = _inputs(seed, scale=100.0)  # saturates the sigmoid at both ends
        centre = attention.aligned_position(query, LENGTHS, step=0)
        assert ((centre >= 0) & (centre <= LENGTHS)).all()
        _, weights = attention(query, attention.project_keys(memory), memory, mask)
        assert torch.isfinite(weights).all() and (weights.sum(-1) > 0).all()
    with torch.no_grad():  # v_p large: p_t = S exactly, the window still reaches the last real word
        attention.position_energy.weight.fill_(1e4)
        attention.position_layer.weight.fill_(1.0)
    query = torch.ones(B, H)
    _, memory, mask = _inputs()
    torch.testing.assert_close(attention.aligned_position(query, LENGTHS, 0), LENGTHS.float())
    _, weights = attention(query, attention.project_keys(memory), memory, mask)
    for b in range(B):
        assert weights[b, int(LENGTHS[b]) - 1] > 0 and weights[b, : int(LENGTHS[b]) - 3].eq(0).all()


def test_local_m_window_follows_the_step_and_sums_to_one():
    query, memory, mask = _inputs()
    attention = LocalAttention(H, H, 5, score="dot", mode="m", window=2)
    keys = attention.project_keys(memory)
    for step in (0, 5, 12, 40):
        _, weights = attention(query, keys, memory, mask, step=step)
        torch.testing.assert_close(weights.sum(-1), torch.ones(B))
        for b in range(B):
            centre = min(step, int(LENGTHS[b]) - 1)
            nonzero = weights[b].nonzero().flatten().tolist()
            assert nonzero == [s for s in range(int(LENGTHS[b])) if abs(s - centre) <= 2]


def test_padding_values_cannot_leak():
    query, memory, mask = _inputs()
    attention = LocalAttention(H, H, 5, mode="p", window=30)
    context, _ = attention(query, attention.project_keys(memory), memory, mask)
    poisoned = memory.clone()
    poisoned[~mask] = 1e6
    context2, _ = attention(query, attention.project_keys(poisoned), poisoned, mask)
    torch.testing.assert_close(context, context2)


def test_decoder_counts_steps_for_local_m():
    """Inside the model, step t of local-m attends to [t - D, t + D]: the decoder passes the step along."""
    torch.manual_seed(0)
    model = EncoderDecoder(
        9, 9, 4, 8, attention="luong_local", attention_options={"mode": "m", "window": 1, "score": "concat"}
    ).eval()
    src = torch.randint(4, 9, (2, 7))
    _, weights = model(src, torch.tensor([7, 7]), torch.randint(4, 9, (2, 5)), return_attention=True)
    for t in range(5):
        assert weights[:, t].nonzero()[:, 1].unique().tolist() == [s for s in range(7) if abs(s - t) <= 1]


def test_bad_options():
    with pytest.raises(ValueError, match="window=0"):
        LocalAttention(H, H, 5, window=0)
    with pytest.raises(ValueError, match="mode='q'"):
        LocalAttention(H, H, 5, mode="q")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.attention.mode=x", "model.attention.mode='x'"),
        ("model.attention.window=0", "model.attention.window=0"),
        ("model.attention.score=bilinear", "model.attention.score='bilinear'"),
    ],
)
def test_config_checks_name_the_option(tiny_cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        validate_train(tiny_cfg("model/attention=luong_local", override))


@pytest.mark.parametrize("mode", ["p", "m"])
def test_tiny_training_run(tiny_cfg, mode):
    results = train(tiny_cfg("model/attention=luong_local", f"model.attention.mode={mode}"))
    assert results["status"] == "completed"
    assert results["choices"]["model/attention"] == "luong_local"
    assert results["config"]["model"]["attention"]["window"] == 10
    assert results["metrics"]["test/attention_entropy"] is not None


@pytest.mark.parametrize("mode", ["p", "m"])
@pytest.mark.parametrize("input_feeding", [False, True])  # fused and hoisted unrolls
def test_fast_teacher_forced_unroll_equals_the_step_loop(mode, input_feeding):
    torch.manual_seed(0)
    model = EncoderDecoder(
        11,
        13,
        6,
        8,
        attention="luong_local",
        input_feeding=input_feeding,
        attention_options={"mode": mode, "window": 2},
    ).double()
    src = torch.randint(4, 11, (3, 9))
    src[1, 6:] = 0
    lengths = torch.tensor([9, 6, 9])
    tgt_in = torch.randint(4, 13, (3, 8))
    results = []
    for fast in (True, False):
        model.fast_unroll = fast
        results.append(model(src, lengths, tgt_in, return_attention=True))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    if mode == "m":
        assert results[0][1][0, 7, :5].eq(0).all() and results[0][1][0, 7, 5:].gt(0).all()
