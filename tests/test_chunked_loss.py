"""The chunked output layer + cross-entropy equals F.cross_entropy of the full logits, loss and gradients."""

import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from seq2seq.data.batching import Batch
from seq2seq.data.tokenizer import BOS_ID, PAD_ID, Tokenizer, train_tokenizer
from seq2seq.models import kernels, onednn
from seq2seq.training.chunked_loss import linear_cross_entropy
from seq2seq.training.module import Seq2SeqModule

HAS_COMPILER = shutil.which(os.environ.get("CXX") or "c++") is not None


def _compiled(wanted: bool) -> bool:
    """The compiled cross-entropy pass (csrc/cross_entropy.cpp) when ``wanted``: built here, or the test skips."""
    if wanted and not HAS_COMPILER:
        pytest.skip("no C++ compiler: speed.compiled_kernels=auto falls back")
    if wanted:
        kernels.load()
    return wanted


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_equals_full_logits_cross_entropy(smoothing, chunk, compiled):
    compiled = _compiled(compiled)
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 11).double()
    features = torch.randn(4, 6, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 11, (4, 6))
    targets[1, 3:] = 0  # padding
    targets[3, 1:] = 0

    def grads(loss):
        return torch.autograd.grad(loss * 3.0, [features, layer.weight, layer.bias])

    full = F.cross_entropy(
        layer(features).reshape(-1, 11), targets.reshape(-1), ignore_index=0, label_smoothing=smoothing
    )
    chunked = linear_cross_entropy(
        features.reshape(-1, 5), layer, targets.reshape(-1), 0, smoothing, chunk, compiled=compiled
    )
    torch.testing.assert_close(chunked.double(), full, rtol=1e-6, atol=1e-7)
    chunked_grads = grads(chunked)
    for a, b in zip(chunked_grads, grads(full), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    # padding rows get no gradient at all
    assert chunked_grads[0].reshape(4, 6, 5)[3, 1:].abs().sum() == 0


def test_the_products_run_over_real_rows_only():
    """Padding rows cost no FLOPs: the three (rows × H × V) products count the 9 real rows of 24."""
    from torch.utils.flop_counter import FlopCounterMode

    layer = torch.nn.Linear(5, 11)
    features = torch.randn(24, 5, requires_grad=True)
    targets = torch.randint(1, 11, (24,))
    targets[9:] = 0  # padding
    flops = {}
    for use_onednn in (False, True):
        features.grad = None
        with FlopCounterMode(display=False) as counter:
            linear_cross_entropy(features, layer, targets, 0, 0.0, 4096, use_onednn).backward()
        flops[use_onednn] = counter.get_total_flops()
        assert features.grad[9:].abs().sum() == 0 and features.grad[:9].abs().sum() > 0
    # logits, ∂x, ∂W (the bias's gradient is a sum, no product)
    assert flops[False] == 3 * 2 * 9 * 5 * 11
    # oneDNN pads the logits' and ∂x's 9 rows to 16 (models/onednn.py), ∂W's inner 9 rows are not padded
    assert flops[True] == 2 * 5 * 11 * (16 + 16 + 9)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_confident_wrong_predictions_give_the_exact_finite_loss_in_float32(smoothing, compiled):
    compiled = _compiled(compiled)
    # margins of 150-300 between the largest logit and the target's: p_y underflows to 0 in float32, so a
    # loss read off the probabilities (−log p_y) would be inf; the log-normaliser keeps it exact
    layer = torch.nn.Linear(3, 6)
    with torch.no_grad():
        layer.weight.copy_(
            torch.tensor([[100.0, 0, 0], [0, 0, 0], [-50, 0, 0], [0, 80, 0], [0, 0, 1], [0, 0, 0]])
        )
        layer.bias.zero_()
    features = torch.tensor([[1.5, 0, 0], [3.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0]], requires_grad=True)
    targets = torch.tensor([2, 1, 4, 4])
    chunked = linear_cross_entropy(features, layer, targets, -100, smoothing, 2, compiled=compiled)
    full = F.cross_entropy(layer(features), targets, label_smoothing=smoothing)
    assert torch.isfinite(chunked) and chunked > 100
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-4)
    for a, b in zip(
        torch.autograd.grad(chunked, [features, layer.weight, layer.bias]),
        torch.autograd.grad(full, [features, layer.weight, layer.bias]),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_compiled_pass_equals_the_operators_past_whole_vectors(dtype, smoothing):
    """csrc/cross_entropy.cpp against the operators: 37 classes (whole vectors and a tail), rows split between
    threads, in place on the logits, the bias's gradient its column sums."""
    _compiled(True)
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 37).to(dtype)
    features = (torch.randn(50, 8, dtype=dtype) * 3).requires_grad_()
    targets = torch.randint(0, 37, (50,))
    targets[40:] = 36
    results = {}
    for compiled in (False, True):
        loss = linear_cross_entropy(features, layer, targets, -100, smoothing, 16, compiled=compiled)
        results[compiled] = (loss, *torch.autograd.grad(loss, [features, layer.weight, layer.bias]))
    tolerance = {torch.float32: (1e-5, 1e-7), torch.float64: (1e-12, 1e-15)}[dtype]
    for a, b in zip(results[True], results[False], strict=True):
        torch.testing.assert_close(a, b, rtol=tolerance[0], atol=tolerance[1])
    logits = torch.randn(3, 37, dtype=dtype)
    before = logits.clone()
    loss, column_sums = torch.ops.seq2seq_kernels.softmax_cross_entropy_(
        logits, torch.tensor([0, 5, 36]), 0.0
    )
    expected = torch.softmax(before, -1) - F.one_hot(torch.tensor([0, 5, 36]), 37).to(dtype)
    torch.testing.assert_close(logits, expected)  # the gradient, written over the logits
    torch.testing.assert_close(column_sums, expected.sum(0))
    torch.testing.assert_close(loss, F.cross_entropy(before, torch.tensor([0, 5, 36]), reduction="none"))
    with pytest.raises(RuntimeError, match="target 37 outside the vocabulary of 37"):
        torch.ops.seq2seq_kernels.softmax_cross_entropy_(logits, torch.tensor([0, 37, 1]), 0.0)


def test_a_second_derivative_raises_instead_of_being_wrong():
    layer = torch.nn.Linear(5, 11).double()
    features = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    loss = linear_cross_entropy(features, layer, torch.randint(1, 11, (6,)), 0)
    (grad,) = torch.autograd.grad(loss**2, features, create_graph=True)  # ∂L²/∂x = 2L ∂L/∂x: through L twice
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


@pytest.mark.parametrize("attention", ["bahdanau", "none"])
def test_module_training_loss_is_the_same_with_and_without_chunks(tiny_cfg, attention):
    """Seq2SeqModule.loss with speed.loss_chunk equals the full-logits loss, gradients included."""
    cfg = tiny_cfg(f"model/attention={attention}", "speed.loss_chunk=5", "optim.label_smoothing=0.1")
    proto = train_tokenizer([" ".join(f"w{i}" for i in range(j, 12)) for j in range(12)], "word", 30)
    torch.manual_seed(0)
    module = Seq2SeqModule(cfg, Tokenizer(proto), Tokenizer(proto))
    assert module.loss_chunk == 5 and module.model.fast_unroll
    g = torch.Generator().manual_seed(0)
    vocab = module.model.decoder.generator.out_features
    tgt = torch.randint(4, vocab, (3, 6), generator=g)
    tgt[1, 4:] = PAD_ID
    tgt_in = torch.cat([torch.full((3, 1), BOS_ID), tgt[:, :-1].clamp(min=0)], dim=1)
    src = torch.randint(4, vocab, (3, 5), generator=g)
    batch = Batch(src, torch.tensor([5, 5, 5]), tgt_in, tgt, torch.arange(3))
    module.loss_chunk = 0
    full = module.loss(batch)
    full.backward()
    expected = {n: p.grad.clone() for n, p in module.named_parameters()}
    module.zero_grad()
    module.loss_chunk = 5
    chunked = module.loss(batch)
    chunked.backward()
    torch.testing.assert_close(chunked, full)
    for name, param in module.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], msg=name, rtol=1e-5, atol=1e-6)


def test_speed_options_reach_the_model_and_are_checked(tiny_cfg):
    from seq2seq.config.checks import ConfigError, validate_train

    cfg = tiny_cfg(
        "speed.fast_unroll=false",
        "speed.compile=true",
        "speed.loss_chunk=0",
        "speed.tanh_as_sigmoid=false",
        "speed.recompute_attention=false",
        "speed.onednn_matmul=false",
        "speed.compiled_kernels=false",
    )
    validate_train(cfg)
    proto = train_tokenizer([" ".join(f"w{i}" for i in range(j, 12)) for j in range(12)], "word", 30)
    module = Seq2SeqModule(cfg, Tokenizer(proto), Tokenizer(proto))
    assert not module.model.fast_unroll and module.model.compile_step and module.loss_chunk == 0
    attention = module.model.decoder.attention
    assert attention.tanh_as_sigmoid is False and attention.recompute_gates is False
    assert attention.compiled_kernels is False and module.model.compiled_kernels is False
    assert module.model.onednn_matmul is False and module.model.encoder.onednn_matmul is False
    default_model = Seq2SeqModule(tiny_cfg(), Tokenizer(proto), Tokenizer(proto)).model
    default = default_model.decoder.attention
    assert default.tanh_as_sigmoid and default.recompute_gates is True
    assert default.compiled_kernels is default_model.compiled_kernels is HAS_COMPILER  # auto
    assert default_model.onednn_matmul == default_model.encoder.onednn_matmul == onednn.preferred()  # auto
    with pytest.raises(ConfigError, match="speed.loss_chunk"):
        validate_train(tiny_cfg("speed.loss_chunk=-1"))
    validate_train(tiny_cfg("speed.onednn_matmul=auto"))
    with pytest.raises(
        ConfigError, match=r"speed.onednn_matmul='sometimes': choose one of true, false, auto"
    ):
        validate_train(tiny_cfg("speed.onednn_matmul=sometimes"))
    with pytest.raises(
        ConfigError, match=r"speed.compiled_kernels='sometimes': choose one of true, false, auto"
    ):
        validate_train(tiny_cfg("speed.compiled_kernels=sometimes"))


def test_fused_optimizer_takes_the_same_adam_steps(tiny_cfg):
    """speed.fused_optimizer: PyTorch's fused Adam, three updates equal to the per-tensor Adam's."""
    proto = train_tokenizer([" ".join(f"w{i}" for i in range(j, 12)) for j in range(12)], "word", 30)
    weights = {}
    for fused in (True, False):
        torch.manual_seed(0)
        module = Seq2SeqModule(
            tiny_cfg(f"speed.fused_optimizer={fused}", "optim.weight_decay=0.01", "optim.scheduler=none"),
            Tokenizer(proto),
            Tokenizer(proto),
        )
        g = torch.Generator().manual_seed(1)
        vocab = module.model.decoder.generator.out_features
        src, tgt = torch.randint(4, vocab, (3, 5), generator=g), torch.randint(4, vocab, (3, 6), generator=g)
        tgt_in = torch.cat([torch.full((3, 1), BOS_ID), tgt[:, :-1]], dim=1)
        batch = Batch(src, torch.tensor([5, 5, 5]), tgt_in, tgt, torch.arange(3))
        optimizer = module.configure_optimizers()
        assert optimizer.defaults["fused"] is (True if fused else None)
        for _ in range(3):
            module.loss(batch).backward()
            optimizer.step()
            optimizer.zero_grad()
        weights[fused] = {n: p.detach().clone() for n, p in module.named_parameters()}
    for name, value in weights[True].items():
        torch.testing.assert_close(value, weights[False][name], rtol=1e-5, atol=1e-6, msg=name)
    torch.manual_seed(0)
    start = Seq2SeqModule(tiny_cfg(), Tokenizer(proto), Tokenizer(proto))
    moved = sum(not torch.equal(p, weights[True][n]) for n, p in start.named_parameters())
    assert moved > 0  # the updates did change the weights
