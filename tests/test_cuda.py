"""CUDA-only checks (``pytest -m cuda``; skipped without a GPU): the fast paths on the GPU's own kernels.

``scripts/gpu_check.sh`` runs these first on a GPU machine.
"""

import pytest
import torch

from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.training.chunked_loss import linear_cross_entropy

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)"),
]


def _batch(device):
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 50, (8, 11), generator=g)
    src[1, 5:] = 0
    tgt_in = torch.randint(4, 60, (8, 9), generator=g)
    tgt_in[:, 0] = 2
    lengths = (src != 0).sum(1)
    return src.to(device), lengths, tgt_in.to(device)


@pytest.mark.parametrize("attention", ["luong_general", "none", "bahdanau"])
@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_fast_unroll_on_cuda_equals_the_step_loop(rnn_type, attention):
    """The fused (cuDNN) and hoisted unrolls on the GPU compute what the step loop computes."""
    torch.manual_seed(0)
    model = EncoderDecoder(50, 60, 16, 32, rnn_type=rnn_type, attention=attention, input_feeding=False).cuda()
    src, lengths, tgt_in = _batch("cuda")
    fast, _ = model(src, lengths, tgt_in)
    model.fast_unroll = False
    slow, _ = model(src, lengths, tgt_in)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attention", ["luong_general", "bahdanau"])
def test_fast_unroll_trains_under_bf16_autocast(attention):
    """trainer.precision=bf16-mixed: the fused / hoisted unroll runs and stays close to float32."""
    torch.manual_seed(0)
    model = EncoderDecoder(50, 60, 16, 32, attention=attention, input_feeding=attention == "bahdanau").cuda()
    src, lengths, tgt_in = _batch("cuda")
    reference, _ = model(src, lengths, tgt_in)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, _ = model(src, lengths, tgt_in)
    logits.float().sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(logits.float(), reference, rtol=5e-2, atol=5e-2)


def test_chunked_loss_under_bf16_autocast_matches_full_logits():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 1000).cuda()
    features = torch.randn(300, 64, device="cuda", requires_grad=True)
    targets = torch.randint(1, 1000, (300,), device="cuda")
    targets[::7] = 0
    with torch.autocast("cuda", dtype=torch.bfloat16):
        full = torch.nn.functional.cross_entropy(layer(features).float(), targets, ignore_index=0)
        chunked = linear_cross_entropy(features, layer, targets, 0, chunk=128)
    full_grad = torch.autograd.grad(full, features)[0]
    chunked_grad = torch.autograd.grad(chunked, features)[0]
    torch.testing.assert_close(chunked.float(), full.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(chunked_grad, full_grad, rtol=5e-2, atol=1e-4)
