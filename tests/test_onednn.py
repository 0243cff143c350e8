"""speed.onednn_matmul: oneDNN's products equal torch's within float32 rounding, and run only where they should."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from seq2seq.models import onednn
from seq2seq.models.decoder import StackedCell
from seq2seq.models.decoding import Decoding, decode
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.training.chunked_loss import linear_cross_entropy
from seq2seq.training.module import set_model_speed

pytestmark = pytest.mark.skipif(not onednn.active(True, torch.zeros(2, 2)), reason="PyTorch without oneDNN")
ONEDNN = "mkldnn._linear_pointwise"


def counted(run):
    """FLOPs per operator while ``run()`` executes (FlopCounterMode)."""
    with FlopCounterMode(display=False) as counter:
        run()
    return {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_and_its_gradients_equal_torch(bias):
    torch.manual_seed(0)
    layer = nn.Linear(20, 30, bias=bias)
    x = torch.randn(3, 7, 20, requires_grad=True)
    grad = torch.randn(3, 7, 30)
    params = [x, layer.weight] + ([layer.bias] if bias else [])
    flops = counted(lambda: onednn.linear(x, layer.weight, layer.bias).backward(grad))
    ours = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    F.linear(x, layer.weight, layer.bias).backward(grad)
    for a, b in zip(ours, [p.grad for p in params], strict=True):
        close(a, b)
    close(onednn.linear(x, layer.weight, layer.bias), layer(x))
    # forward and ∂x through oneDNN on 21 rows padded to 24, ∂W (inner dimension the 21 rows) unpadded
    assert onednn.bucket(21) == 24
    assert flops == {ONEDNN: 2 * 20 * 30 * (24 + 24 + 21)}


def test_row_counts_are_padded_to_few_distinct_buckets():
    """At most 12.5 % more rows; multiples of 8 up to 64, then 8 counts per doubling."""
    buckets = [onednn.bucket(rows) for rows in range(1, 1025)]
    assert all(
        rows <= b <= max(rows + 7, rows * 1.125) for rows, b in zip(range(1, 1025), buckets, strict=True)
    )
    assert len(set(buckets)) == 8 + 8 * 4  # 8, 16, …, 64; then 72, 80, …, 1024
    assert onednn.bucket(1) == 8 and onednn.bucket(65) == 72 and onednn.bucket(1050) == 1152
    tall = torch.randn(onednn.PAD_ROWS_UP_TO + 1, 12)  # not padded: its product counts its own rows
    assert counted(lambda: onednn.linear(tall, torch.randn(7, 12))) == {ONEDNN: 2 * tall.size(0) * 12 * 7}
    x = torch.randn(2, 5, 12)  # 10 rows, padded to 16 and cut back
    weight = torch.randn(7, 12)
    close(onednn.linear(x, weight), F.linear(x, weight))
    assert onednn.linear(x, weight).shape == (2, 5, 7)


def test_the_no_autograd_products_equal_torch():
    torch.manual_seed(1)
    x, weight = torch.randn(9, 12), torch.randn(12, 16)  # weight (I, O), as the step loop reads it
    add, bias = torch.randn(9, 16), torch.randn(16)
    close(onednn.addmm(add, x, weight), torch.addmm(add, x, weight))
    close(onednn.addmm(bias, x, weight), torch.addmm(bias, x, weight))
    close(onednn.mm(x, weight), x @ weight)
    a, b, c = torch.randn(40, 12), torch.randn(40, 16), torch.randn(40, 5)
    close(onednn.mm_tn(a, b), a.t() @ b)  # (12, 16): the larger side, 16, inner
    close(onednn.mm_tn(a, c), a.t() @ c)  # (12, 5): 12 inner, the result a transposed view
    assert onednn.mm_tn(a, c).shape == (12, 5)
    assert set(counted(lambda: onednn.addmm(add, x, weight))) == {ONEDNN}
    # 9 rows padded to 16, or (pad_rows=False: a training loop's products, all of one batch's rows) not
    assert counted(lambda: onednn.addmm(add, x, weight)) == {ONEDNN: 2 * 16 * 12 * 16}
    assert counted(lambda: onednn.mm(x, weight, pad_rows=False)) == {ONEDNN: 2 * 9 * 12 * 16}
    close(onednn.addmm(add, x, weight, pad_rows=False), torch.addmm(add, x, weight))
    close(onednn.addmm(bias, x, weight, pad_rows=False), torch.addmm(bias, x, weight))
    close(onednn.mm(x, weight, pad_rows=False), x @ weight)


def test_switched_off_or_strided_operands_stay_with_torch_exactly(monkeypatch):
    torch.manual_seed(2)
    x, full = torch.randn(9, 12), torch.randn(30, 24)
    columns = full[
        :, 4:16
    ]  # (30, 12) with row stride 24: oneDNN's reference kernel would be hundreds× slower
    assert not onednn.active(True, columns) and onednn.active(True, full) and onednn.active(True, full.t())
    assert torch.equal(onednn.linear(x, columns), F.linear(x, columns))
    assert torch.equal(onednn.linear(x, full[:, :12].contiguous(), enabled=False), x @ full[:, :12].t())
    assert ONEDNN not in counted(lambda: onednn.linear(x, columns))
    assert ONEDNN not in counted(lambda: onednn.mm(x, full[:12], enabled=False))
    assert not onednn.active(True, x.double()) and not onednn.active(False, x)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # PyTorch's own switch is respected
    assert not onednn.active(True, x)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm", "rnn"])
def test_a_decoder_step_without_autograd_equals_the_torch_cells(rnn_type):
    torch.manual_seed(3)
    cell = StackedCell(rnn_type, 6, 8, num_layers=2, dropout=0.0)
    cell.onednn_matmul = True  # the default is the CPU's (onednn.preferred)
    x = torch.randn(5, 6)
    h = torch.randn(2, 5, 8)
    hidden = (h, torch.randn(2, 5, 8)) if rnn_type == "lstm" else h
    with torch.no_grad():
        flops = counted(lambda: cell(x, hidden))
        out, new = cell(x, hidden)
        cell.onednn_matmul = False
        ref_out, ref_new = cell(x, hidden)
    assert set(flops) == {ONEDNN}
    close(out, ref_out)
    for a, b in zip(*(n if rnn_type == "lstm" else (n,) for n in (new, ref_new)), strict=True):
        close(a, b)


def _model(on: bool | int, **speed) -> EncoderDecoder:
    torch.manual_seed(4)
    model = EncoderDecoder(23, 29, embedding_size=16, hidden_size=24, attention="bahdanau")
    set_model_speed(model, {"onednn_matmul": on, **speed})
    return model


def _batch():
    g = torch.Generator().manual_seed(5)
    src, tgt = torch.randint(4, 23, (6, 9), generator=g), torch.randint(4, 29, (6, 8), generator=g)
    lengths = torch.tensor([9, 9, 7, 6, 4, 2])
    src[torch.arange(9) >= lengths.unsqueeze(1)] = 0
    return src, lengths, tgt


def _source_batch(src: torch.Tensor, lengths: torch.Tensor) -> SimpleNamespace:
    """What decode reads of a batch: ``src`` and ``src_lengths``."""
    return SimpleNamespace(src=src, src_lengths=lengths)


def _inputs(src, lengths, tgt) -> tuple:
    """The model's arguments for the decoder features of a teacher-forced batch."""
    return src, lengths, tgt[:, :-1]


def _chunked_loss(model: EncoderDecoder, features, tgt, use_onednn: bool | int) -> torch.Tensor:
    """The chunked training loss of decoder ``features`` (chunks of 16 rows, no label smoothing)."""
    flat, generator = features.reshape(-1, features.size(-1)), model.decoder.generator
    return linear_cross_entropy(flat, generator, tgt[:, 1:].reshape(-1), 0, 0.0, 16, use_onednn)


def _loss(model: EncoderDecoder, src, lengths, tgt, use_onednn: bool | int) -> torch.Tensor:
    """The chunked training loss of one batch."""
    features, _ = model(*_inputs(src, lengths, tgt), features=True)
    return _chunked_loss(model, features, tgt, use_onednn)


def _loss_by_phase(
    model: EncoderDecoder, src, lengths, tgt, use_onednn: bool | int
) -> tuple[torch.Tensor, dict]:
    """The chunked training loss after its backward, and the FLOPs by operator of each phase: the features'
    forward, the chunked loss (its three products run in its forward), the backward."""
    kept: dict[str, torch.Tensor] = {}

    def forward():
        kept["features"] = model(*_inputs(src, lengths, tgt), features=True)[0]

    def loss():
        kept["loss"] = _chunked_loss(model, kept["features"], tgt, use_onednn)

    phases = {"forward": counted(forward), "loss": counted(loss)}
    phases["backward"] = counted(lambda: kept["loss"].backward())
    return kept["loss"], phases


@pytest.mark.parametrize("compiled", ["auto", False])  # auto: compiled operators where a compiler built them
def test_a_training_loss_and_its_gradients_equal_with_and_without_onednn(compiled):
    """Encoder (GRU kernel), step loop (step weights, or the compiled loop) and chunked loss: float32, in training
    mode, with oneDNN for every product and with a row limit of 8 (``onednn.preferred`` on AMD CPUs without
    AVX-512: the steps' 6 rows through oneDNN, the products over all 42 target tokens through torch)."""
    src, lengths, tgt = _batch()
    results, flops = {}, {}
    for setting in (True, 8, False):
        model = _model(setting, compiled_kernels=compiled).train()
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        loss, flops[setting] = _loss_by_phase(model, src, lengths, tgt, setting)
        results[setting] = (loss.detach(), {n: p.grad for n, p in model.named_parameters()})
    loss_off, grads_off = results[False]
    for setting in (True, 8):
        loss_on, grads_on = results[setting]
        close(loss_on, loss_off)
        assert grads_on.keys() == grads_off.keys()
        for name in grads_on:
            torch.testing.assert_close(grads_on[name], grads_off[name], rtol=1e-4, atol=1e-6, msg=name)

    def torch_products(setting, phase):
        return sum(n for op, n in flops[setting][phase].items() if op in ("aten.mm", "aten.addmm"))

    loss_products = 3 * 2 * tgt[:, 1:].numel() * 24 * 29  # logits, ∂L/∂x, ∂L/∂W over every target token
    assert flops[True]["loss"][ONEDNN] >= loss_products and torch_products(True, "loss") == 0
    assert ONEDNN not in flops[8]["loss"] and torch_products(8, "loss") == loss_products
    # the weights' gradients over all tokens (encoder kernel, step loop) go to torch with the limit
    assert torch_products(8, "backward") > torch_products(True, "backward")
    if compiled is False:  # (the compiled loop's own products are not seen by the counter)
        assert flops[8]["forward"].get(ONEDNN, 0) > 0  # the steps' 6 rows


def test_the_decoder_input_product_over_all_steps_goes_through_onednn():
    """W_ie y + b_ih for every target step at once: its embedding columns of W_ih are packed for oneDNN, so torch's
    addmm is left with the bridge's (B, H) × (H, H) alone."""
    src, lengths, tgt = _batch()
    model = _model(True).train()
    counts = counted(lambda: model(src, lengths, tgt[:, :-1], features=True))
    bridge = model.decoder.bridge
    assert counts["aten.addmm"] == 2 * src.size(0) * bridge.in_features * bridge.out_features
    cell = model.decoder.rnn.cells[0]
    steps_product = 2 * tgt[:, :-1].numel() * model.decoder.embedding.embedding_dim * cell.weight_ih.size(0)
    assert counts[ONEDNN] >= steps_product


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_decoding_gives_the_same_outputs_with_and_without_onednn(search):
    src, lengths, _ = _batch()
    batch = _source_batch(src, lengths)
    outputs = []
    for on in (True, False):
        model = _model(on).eval()
        flops = counted(lambda m=model: decode(m, batch, Decoding(search, beam_size=3)))
        outputs.append(decode(model, batch, Decoding(search, beam_size=3)))
        assert (ONEDNN in flops) is on
    assert outputs[0].tokens == outputs[1].tokens
    assert sum(map(len, outputs[0].tokens)) > 0


def test_within_a_block_a_parameter_is_read_from_a_row_major_copy_made_once_and_dropped_with_the_block():
    """onednn.row_major_copies: the copy a search reads (one per batch it hands back, decode_stream)."""
    torch.manual_seed(0)
    layer = nn.Linear(12, 40)
    x = torch.randn(5, 12)
    assert onednn._row_major(layer.weight) is layer.weight  # outside a block: no copy
    with torch.no_grad(), onednn.row_major_copies():
        first = onednn._row_major(layer.weight)
        assert first.shape == (40, 12) and first.t().is_contiguous() and not layer.weight.t().is_contiguous()
        assert torch.equal(first, layer.weight) and first.data_ptr() != layer.weight.data_ptr()
        assert onednn._row_major(layer.weight).data_ptr() == first.data_ptr()  # made once in the block
        close(onednn.linear(x, layer.weight, layer.bias), F.linear(x, layer.weight, layer.bias))
        plain = torch.randn(40, 12)
        assert onednn._row_major(plain) is plain and onednn._row_major(layer.bias) is layer.bias
        with onednn.row_major_copies():  # an inner block makes its own
            assert onednn._row_major(layer.weight).data_ptr() != first.data_ptr()
        assert onednn._row_major(layer.weight).data_ptr() == first.data_ptr()
    assert onednn._row_major(layer.weight) is layer.weight
    with pytest.raises(RuntimeError, match="inside"), onednn.row_major_copies():
        raise RuntimeError("inside")
    assert onednn._BLOCKS.copies == []  # closed by the error too


def test_a_block_after_a_fused_adam_step_reads_the_new_weights():
    """Fused Adam updates parameters in place without bumping their version counters: a copy kept across blocks
    (keyed on the version) went stale; one per block cannot."""
    torch.manual_seed(1)
    layer = nn.Linear(12, 40)
    x = torch.randn(5, 12)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1, fused=True)
    for _ in range(2):
        with torch.no_grad(), onednn.row_major_copies():
            close(onednn.linear(x, layer.weight, layer.bias), F.linear(x, layer.weight, layer.bias))
        version = layer.weight._version
        layer(x).square().sum().backward()
        optimizer.step()
        assert layer.weight._version == version  # the trap this design avoids


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_decoding_reads_row_major_copies_and_sees_training_between_searches(search, monkeypatch):
    """decode_stream opens a block per batch: the output layer is read from a copy, and after fused Adam steps
    the search decodes as a fresh copy of the trained model does."""
    src, lengths, tgt = _batch()
    batch = _source_batch(src, lengths)
    model = _model(True)
    read_from_copies = []
    real = onednn._row_major
    monkeypatch.setattr(onednn, "_row_major", lambda w: read_from_copies.append(w) or real(w))
    before = decode(model.eval(), batch, Decoding(search, beam_size=3)).tokens
    assert any(w is model.decoder.generator.weight for w in read_from_copies)
    assert real(model.decoder.generator.weight) is model.decoder.generator.weight  # the block is closed
    optimizer, changed = torch.optim.Adam(model.parameters(), lr=0.05, fused=True), False
    for _ in range(3):
        _loss(model.train(), src, lengths, tgt, True).backward()
        optimizer.step()
        optimizer.zero_grad()
        after = decode(model.eval(), batch, Decoding(search, beam_size=3))
        fresh = _model(True)
        fresh.load_state_dict(model.state_dict())
        assert after.tokens == decode(fresh.eval(), batch, Decoding(search, beam_size=3)).tokens
        changed |= after.tokens != before
    assert changed  # training moved the outputs, so stale copies would have shown


AVX2 = "flags\t\t: fpu sse2 avx fma avx2\n"
AMD = f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n{AVX2}\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\n{AVX2}"
AMD_AVX512 = AMD.replace("avx2\n", "avx2 avx512f avx512bw\n")
INTEL = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 143\nflags\t\t: avx2 avx512f amx_tile\n"
ARM = "processor\t: 0\nCPU implementer\t: 0x41\n"


def test_auto_chooses_by_cpu():
    assert onednn.preferred(AMD_AVX512) is True  # every product
    assert onednn.preferred(AMD) == onednn.FEW_ROWS and onednn.preferred(AMD) is not True  # a step's few rows
    one_of_two = AMD_AVX512.replace("avx512f avx512bw\n", "\n", 1)
    assert onednn.preferred(one_of_two) == onednn.FEW_ROWS
    assert (
        onednn.preferred(INTEL) is False and onednn.preferred(ARM) is False and onednn.preferred("") is False
    )
    assert onednn.preferred(AMD + INTEL) is False  # a mixed list: not measured, torch's choice
    with open("/proc/cpuinfo") as file:  # this machine: auto follows its own vendor and flags lines
        here = file.read()
    amd_only = "AuthenticAMD" in here and "GenuineIntel" not in here
    expected = (True if "avx512f" in here.split() else onednn.FEW_ROWS) if amd_only else False
    assert onednn.wanted("auto") == onednn.preferred(here) == expected
    assert onednn.wanted(True) is True and onednn.wanted(False) is False


def test_a_row_limit_sends_tall_products_to_torch_and_few_rows_to_onednn():
    torch.manual_seed(3)
    layer, limit = nn.Linear(12, 40), 16
    few, tall = torch.randn(8, 12), torch.randn(3, 11, 12)  # 8 rows; 33 rows
    assert onednn.active(limit, few, layer.weight) and not onednn.active(limit, tall, layer.weight)
    assert onednn.active(limit, tall, layer.weight, rows=16) and not onednn.active(limit, few, rows=17)
    assert onednn.active(True, tall, layer.weight)  # no limit
    assert ONEDNN in counted(lambda: onednn.linear(few, layer.weight, layer.bias, limit))
    assert ONEDNN not in counted(lambda: onednn.linear(tall, layer.weight, layer.bias, limit))
    close(onednn.linear(tall, layer.weight, layer.bias, limit), F.linear(tall, layer.weight, layer.bias))
    grads = torch.randn(33, 40)  # a weight's gradient: the limit is on its inner dimension, the tokens
    assert ONEDNN not in counted(lambda: onednn.mm_tn(grads, tall.reshape(33, 12), limit))
    assert ONEDNN in counted(lambda: onednn.mm_tn(grads[:8], few, limit))
    close(onednn.mm_tn(grads[:8], few, limit), grads[:8].t() @ few)


@pytest.mark.parametrize("setting", [True, False, "auto"])
def test_the_setting_reaches_every_layer(setting):
    model = EncoderDecoder(23, 29, embedding_size=16, hidden_size=24, attention="bahdanau")
    set_model_speed(model, {"onednn_matmul": setting})
    expected = onednn.wanted(setting)
    layers = [model, model.encoder, model.decoder, model.decoder.rnn]
    assert [layer.onednn_matmul for layer in layers] == [expected] * 4
