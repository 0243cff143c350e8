import pytest
import torch

from seq2seq.models.attention import (
    BahdanauAttention,
    LuongConcatAttention,
    LuongDotAttention,
    LuongGeneralAttention,
    build_attention,
)

B, S, H = 3, 5, 6


def _inputs(seed=0):
    torch.manual_seed(seed)
    query = torch.randn(B, H)
    memory = torch.randn(B, S, H)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    return query, memory, mask


@pytest.mark.parametrize("name", ["bahdanau", "luong_dot", "luong_general", "luong_concat"])
def test_weights_sum_to_one_over_real_tokens_and_zero_on_padding(name):
    query, memory, mask = _inputs()
    attention = build_attention(name, H, H, 4)
    context, weights = attention(query, attention.project_keys(memory), memory, mask)
    assert weights.shape == (B, S) and context.shape == (B, H)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B))
    assert (weights[~mask] == 0).all()
    assert (weights[mask] > 0).all()
    torch.testing.assert_close(context, (weights.unsqueeze(-1) * memory).sum(1))


def test_padding_values_cannot_leak_into_context():
    query, memory, mask = _inputs()
    attention = build_attention("bahdanau", H, H, 4)
    context, _ = attention(query, attention.project_keys(memory), memory, mask)
    poisoned = memory.clone()
    poisoned[~mask] = 1e6
    context2, _ = attention(query, attention.project_keys(poisoned), poisoned, mask)
    torch.testing.assert_close(context, context2)


def test_score_formulas():
    query, memory, mask = _inputs()
    dot = LuongDotAttention(H, H)
    torch.testing.assert_close(dot.score(query, memory), torch.einsum("bh,bsh->bs", query, memory))
    general = LuongGeneralAttention(H, H)
    W = general.key_layer.weight  # (H, H)
    expected = torch.einsum("bh,hk,bsk->bs", query, W, memory)  # q^T W h
    torch.testing.assert_close(general.score(query, general.project_keys(memory)), expected)
    for cls in (BahdanauAttention, LuongConcatAttention):
        additive = cls(H, H, 4)
        Wq, Uk, v = additive.query_layer.weight, additive.key_layer.weight, additive.energy_layer.weight
        energy = torch.tanh((query @ Wq.T).unsqueeze(1) + memory @ Uk.T)
        torch.testing.assert_close(
            additive.score(query, additive.project_keys(memory)), (energy @ v.T).squeeze(-1)
        )


@pytest.mark.parametrize("tanh_as_sigmoid", [True, False])
def test_additive_score_as_sigmoid_equals_the_tanh_formula_in_values_and_gradients(tanh_as_sigmoid):
    """speed.tanh_as_sigmoid: 2 vᵀσ(2x) − Σv is vᵀ tanh(x), for one query, T queries and T windows (float64)."""
    torch.manual_seed(3)
    T, A = 4, 7
    attention = BahdanauAttention(H, H, A).double()
    attention.tanh_as_sigmoid = tanh_as_sigmoid
    query = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    queries = torch.randn(B, T, H, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(B, S, H, dtype=torch.float64, requires_grad=True)
    Wq, Uk, v = attention.query_layer.weight, attention.key_layer.weight, attention.energy_layer.weight
    keys, plain_keys = attention.project_keys(memory), memory @ Uk.T
    windows = torch.stack([keys[:, t : t + 2] for t in range(T)], dim=1)  # (B, T, 2, A)
    plain_windows = torch.stack([plain_keys[:, t : t + 2] for t in range(T)], dim=1)
    pairs = [
        (attention.score(query, keys), torch.tanh((query @ Wq.T).unsqueeze(1) + plain_keys) @ v[0]),
        (
            attention.score_all(queries, keys),
            torch.tanh((queries @ Wq.T).unsqueeze(2) + plain_keys.unsqueeze(1)) @ v[0],
        ),
        (
            attention.score_windows(queries, windows),
            torch.tanh((queries @ Wq.T).unsqueeze(2) + plain_windows) @ v[0],
        ),
    ]
    weights = [torch.randn_like(expected) for _, expected in pairs]
    for got, expected in pairs:
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    inputs = [query, queries, memory, Wq, Uk, v]
    got_grads = torch.autograd.grad(
        sum((g * w).sum() for (g, _), w in zip(pairs, weights, strict=True)), inputs
    )
    expected_grads = torch.autograd.grad(
        sum((e * w).sum() for (_, e), w in zip(pairs, weights, strict=True)), inputs
    )
    for got, expected in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_query_placement():
    assert BahdanauAttention.query_is_previous_state
    assert not LuongConcatAttention.query_is_previous_state
    assert not LuongDotAttention.query_is_previous_state


def test_none_and_unknown():
    assert build_attention("none", H, H, 4) is None
    with pytest.raises(ValueError, match="unknown attention 'luong_magic'"):
        build_attention("luong_magic", H, H, 4)
    with pytest.raises(ValueError, match="equal query"):
        LuongDotAttention(4, 6)
