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


@pytest.mark.parametrize("score", ["general", "concat"])  # full matrix, window
@pytest.mark.parametrize("mode", ["p", "m"])
@pytest.mark.parametrize("input_feeding", [False, True])  # fused and hoisted unrolls
def test_fast_teacher_forced_unroll_equals_the_step_loop(score, mode, input_feeding):
    torch.manual_seed(0)
    model = EncoderDecoder(
        11,
        13,
        6,
        8,
        attention="luong_local",
        input_feeding=input_feeding,
        attention_options={"mode": mode, "window": 2, "score": score},
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


def _full_and_window(attention, queries, memory, mask, centre):
    """context, weights and the gradients of a fixed random loss, through read_full and read_window."""
    results = []
    for read in (attention.read_full, attention.read_window):
        attention.zero_grad()
        leaves = [t.detach().requires_grad_() for t in (queries, memory, centre)]
        q, m, c = leaves
        position = attention.aligned_position(q, mask.sum(-1)) if c.dim() == 0 else c
        context, weights = read(q, attention.project_keys(m), m, mask, position)
        generator = torch.Generator().manual_seed(7)
        loss = (context * torch.randn(context.shape, generator=generator, dtype=context.dtype)).sum() + (
            weights * torch.randn(weights.shape, generator=generator, dtype=weights.dtype)
        ).sum()
        loss.backward()
        grads = [t.grad if t.grad is not None else torch.zeros(()) for t in leaves]
        grads += [p.grad.clone() for p in attention.parameters() if p.grad is not None]
        results.append((context, weights, grads))
    return results


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
@pytest.mark.parametrize("mode", ["p", "m"])
def test_window_read_equals_the_full_masked_matrix(score, mode):
    """O(T·D) gather = the O(T·S) masked matrix: context, (B, T, S) weights and every gradient, with padded rows,
    p_t at 0, near 0, at integers, near S and at S (local-p), and local-m steps past the end."""
    torch.manual_seed(3)
    window, steps = 3, S + 4
    attention = LocalAttention(H, H, 5, score=score, mode=mode, window=window).double()
    memory = torch.randn(B, S, H, dtype=torch.float64)
    mask = torch.arange(S).unsqueeze(0) < LENGTHS.unsqueeze(1)
    queries = torch.randn(B, steps, H, dtype=torch.float64) * 3
    if mode == "p":  # explicit p_t ∈ [0, S_b]: the Gaussian's gradient reaches p_t itself
        fractions = torch.linspace(0, 1, steps, dtype=torch.float64)
        fractions[1], fractions[2], fractions[-2] = 1e-3, 0.5 / S, 1 - 1e-3
        centre = LENGTHS.double().unsqueeze(1) * fractions  # (B, T)
        centre[:, 3] = torch.tensor([5.0, 2.0, 1.0])  # exact integers: both window edges inside
        centres = [centre, torch.tensor(0.0)]  # the latter: predicted by the position layer
    else:
        centres = [attention.aligned_position(queries, LENGTHS)]
    for centre in centres:
        (context, weights, grads), (context_w, weights_w, grads_w) = _full_and_window(
            attention, queries, memory, mask, centre
        )
        torch.testing.assert_close(context_w, context)
        torch.testing.assert_close(weights_w, weights)
        assert weights.ne(0).sum() > 0 and (weights[~mask.unsqueeze(1).expand_as(weights)] == 0).all()
        for got, want in zip(grads_w, grads, strict=True):
            torch.testing.assert_close(got, want)
        assert all(g.abs().sum() > 0 for g in grads[:2] + grads[3:])  # query, memory, every parameter used
        assert len(grads) - 3 == len(list(attention.parameters())) - (
            2 if mode == "p" and centre.dim() else 0
        )


def test_concat_reads_only_the_window(monkeypatch):
    """With 2D + 1 < S the concat score is computed only inside the windows: no (B, T, S, A) tensor. With
    2D + 1 ≥ S, and for dot / general (dense matrix products), the full matrix is scored."""
    query, memory, mask = _inputs()
    attention = LocalAttention(H, H, 5, score="concat", mode="p", window=3)
    keys = attention.project_keys(memory)
    expected = attention.read_full(
        query.unsqueeze(1), keys, memory, mask, attention.aligned_position(query, LENGTHS).unsqueeze(1)
    )

    def refuse(*args):
        raise AssertionError("scored all (t, s) pairs")

    monkeypatch.setattr(attention.scorer, "score_all", refuse)
    context, weights = attention(query, keys, memory, mask)
    torch.testing.assert_close(context, expected[0].squeeze(1))
    torch.testing.assert_close(weights, expected[1].squeeze(1))
    wide = LocalAttention(H, H, 5, score="concat", mode="p", window=15)  # 2D + 1 = 31 ≥ S = 30
    general = LocalAttention(H, H, 5, score="general", mode="p", window=3)
    for full in (wide, general):
        monkeypatch.setattr(full.scorer, "score_windows", refuse)
        full(query, full.project_keys(memory), memory, mask)


@pytest.mark.parametrize("batched", [False, True])
def test_reversed_local_m_centres_on_the_last_source_word_first(batched):
    """reverse=True (data.reverse_source): step t's window is centred at max(S_b - 1 - t, 0), per row's own S_b."""
    query, memory, mask = _inputs()
    attention = LocalAttention(H, H, 5, score="dot", mode="m", window=2, reverse=True)
    keys, steps = attention.project_keys(memory), 35
    if batched:
        queries = query.unsqueeze(1).expand(B, steps, H)
        all_weights = attention.forward_all(queries, keys, memory, mask)[1]
    for step in range(steps):
        weights = all_weights[:, step] if batched else attention(query, keys, memory, mask, step=step)[1]
        torch.testing.assert_close(weights.sum(-1), torch.ones(B))
        for b, length in enumerate(LENGTHS.tolist()):
            centre = max(length - 1 - step, 0)
            assert weights[b].nonzero().flatten().tolist() == [
                s for s in range(length) if abs(s - centre) <= 2
            ]
    torch.testing.assert_close(
        attention.aligned_position(query, LENGTHS, step=3), torch.tensor([26.0, 13.0, 0.0])
    )


def test_reverse_comes_from_data_reverse_source_and_defaults_to_off(tiny_cfg):
    """model.attention.reverse follows data.reverse_source; a config saved before the option builds reverse=False."""
    from omegaconf import OmegaConf

    for flipped in (False, True):
        cfg = tiny_cfg("model/attention=luong_local", f"data.reverse_source={str(flipped).lower()}")
        validate_train(cfg)
        model = EncoderDecoder.from_config(cfg.model, 9, 9)
        assert model.decoder.attention.reverse is flipped
    saved = OmegaConf.to_container(cfg, resolve=True)
    del saved["model"]["attention"]["reverse"]  # a checkpoint written before the option existed
    model = EncoderDecoder.from_config(OmegaConf.create(saved).model, 9, 9)
    assert model.decoder.attention.reverse is False
