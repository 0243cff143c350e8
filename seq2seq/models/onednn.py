"""Float32 CPU products through oneDNN: :func:`linear` (autograd or not), :func:`addmm`, :func:`mm`, :func:`mm_tn`.

PyTorch sends a CPU float32 ``mm``/``addmm``/``linear`` to MKL's ``sgemm``; on CPUs MKL does not tune for (AMD),
that runs at a fraction of what the same machine's oneDNN (bundled with PyTorch, reached through
``torch.ops.mkldnn._linear_pointwise``) reaches for the same product in full float32: 1.7-2.5× faster at this
project's shapes, from the decoder step's ``(B, H) × (H, 3H)`` to the output layer's ``(N, H) × (H, V)``
(docs/performance.md). The result differs from MKL's only in summation order (float32 rounding).

A weight's gradient ``∂L/∂yᵀ x`` (inner dimension the tokens) is computed with the larger of its two sides as the
product's output rows (:func:`mm_tn`: 2-3× faster than the other way round for the output layer's). Each
function takes ``enabled`` (``speed.onednn_matmul``, whose default ``auto`` is :func:`preferred`): ``True`` for
every product, ``False`` for none, or a number of rows, the most a product may have to go to oneDNN (on AMD CPUs
without AVX-512, where MKL is the faster library for the tall products over a batch's tokens and oneDNN for a
step's few rows). The products stay with torch too when PyTorch lacks oneDNN or has it switched off
(``torch.backends.mkldnn.enabled``), for anything but float32 CPU tensors, and for strided operands
(:func:`active`).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.utils.flop_counter import register_flop_formula

_OP = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
# oneDNN keeps a compiled kernel, and PyTorch's ideep a cache entry, per product shape — about 0.6 MiB each, up to
# 1024 of each by default; 32 here (the benchmark's decoding at 32 ran as fast as at 1024). Read when oneDNN is first
# used (a user's setting wins)
for _name in ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY"):
    os.environ.setdefault(_name, "32")


if _OP is not None:  # FlopCounterMode counts these products as it counts ``addmm``: 2 per multiply–add

    @register_flop_formula(_OP)
    def _linear_flops(x_shape: list[int], *args: Any, out_shape: list[int], **kwargs: Any) -> int:
        return 2 * math.prod(out_shape) * x_shape[-1]


CHOICES = (True, False, "auto")
FEW_ROWS = 256  # auto on an AMD CPU without AVX-512: oneDNN for products of at most this many rows, MKL above


def preferred(cpuinfo: str | None = None) -> bool | int:
    """What ``speed.onednn_matmul=auto`` sends to oneDNN, by the CPU (``/proc/cpuinfo``, or ``cpuinfo`` when given):

    - every float32 product (``True``) on AMD CPUs with AVX-512 (``avx512f``), where MKL, which keeps its AVX-512
      kernels for Intel CPUs, was the slower library at almost every shape of this project, often by half;
    - products of at most :data:`FEW_ROWS` rows on AMD CPUs without it (Zen 3, AVX2), where both libraries run AVX2
      kernels: oneDNN is the faster at a step's few rows, MKL at the tall products over a batch's tokens (the
      loss's, the weights' gradients: 1.1-1.5×); the mix made a training update 9-10 % faster than oneDNN alone
      and 3-13 % faster than MKL alone;
    - none (``False``) on an Intel CPU, where MKL made the toy set-up's update 1.3× faster, nor where neither was
      measured (ARM, other systems, a mixed list): torch's own choice there (docs/performance.md).
    """
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    lines = [line.split(":", 1) for line in text.splitlines() if ":" in line]
    vendors = {value.strip() for key, value in lines if key.strip() == "vendor_id"}
    if vendors != {"AuthenticAMD"}:
        return False
    flags = [set(value.split()) for key, value in lines if key.strip() == "flags"]
    return True if flags and all("avx512f" in own for own in flags) else FEW_ROWS


@lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError:  # not Linux
        return ""


def wanted(setting: Any) -> bool | int:
    """``speed.onednn_matmul`` as :func:`active` takes it: ``auto`` (the default) :func:`preferred`; ``true``,
    ``false`` or a row limit as they are."""
    if setting == "auto":
        return preferred()
    return setting if isinstance(setting, int) else bool(setting)


def active(enabled: bool | int, *tensors: Tensor, rows: int | None = None) -> bool:
    """Whether a product of these tensors goes through oneDNN: ``enabled`` (``True``, or a row limit the product's
    ``rows`` are within; by default the first tensor's rows, all but its last dimension), available, all float32
    CPU tensors, none strided."""
    if not (enabled and _OP is not None and torch.backends.mkldnn.is_available()):
        return False
    if not torch.backends.mkldnn.enabled:
        return False
    if enabled is not True:
        first = tensors[0]
        if rows is None:
            rows = first.numel() // max(first.size(-1), 1) if first.dim() > 1 else 1
        if rows > enabled:
            return False
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and _dense(t) for t in tensors)


def _dense(t: Tensor) -> bool:
    """Rows or columns packed: oneDNN's fast kernels; a strided slice (e.g. some columns of a weight) falls to
    its reference kernel, hundreds of times slower, so such products stay with MKL."""
    return t.is_contiguous() or (t.dim() == 2 and t.t().is_contiguous()) or t.dim() == 1 and t.stride(0) == 1


PAD_ROWS_UP_TO = 256


def _product(x: Tensor, weight: Tensor, bias: Tensor | None, pad_rows: bool = True) -> Tensor:
    """``x weightᵀ (+ bias)`` by oneDNN, no autograd: ``x`` ``(..., K)``, ``weight`` ``(N, K)`` (any strides).

    A contiguous ``x`` of at most :data:`PAD_ROWS_UP_TO` rows is padded with zero rows to :func:`bucket` rows (the
    result cut back): oneDNN compiles and keeps a kernel per shape, and a decoding batch that shrinks step by
    step would otherwise make one for every row count. Taller ones (a loss chunk, all steps at once) are not:
    copying them cost more than compiling a kernel. Nor are those of ``pad_rows=False``: a training batch's steps
    all have its row count, and padding 19 rows to 24 is a quarter more work in every product of the loop.
    """
    if not x.is_contiguous():
        return _OP(x, weight, bias, "none", [], "")
    flat = x.reshape(-1, x.size(-1))
    rows = flat.size(0)
    padded = bucket(rows) if pad_rows and rows <= PAD_ROWS_UP_TO else rows
    if padded != rows:
        flat = torch.nn.functional.pad(flat, (0, 0, 0, padded - rows))  # zero rows
    out = _OP(flat, weight, bias, "none", [], "")
    return (out[:rows] if padded != rows else out).view(*x.shape[:-1], out.size(-1))


def bucket(rows: int) -> int:
    """``rows`` rounded up to a multiple of 8 up to 64, then of an eighth of its power of two: at most 12.5 % more
    rows, 8 distinct counts per doubling."""
    step = 8 if rows <= 64 else 1 << (rows.bit_length() - 4)
    return -(-rows // step) * step


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, enabled: bool | int = True) -> Tensor:
    """``F.linear(x, weight, bias)``: ``(..., K)``, weight ``(N, K)``, bias ``(N,)`` → ``(..., N)``. Without autograd
    inside :func:`row_major_copies` a parameter is read from its row-major copy."""
    if not active(enabled, x, weight, *([] if bias is None else [bias])):
        return torch.nn.functional.linear(x, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _Linear.apply(x, weight, bias)
    return _product(x, _row_major(weight), bias)


_BLOCKS = threading.local()  # .copies: per open row_major_copies() block, id(parameter) → (parameter, copy)


@contextmanager
def row_major_copies() -> Iterator[None]:
    """Within the block, :func:`linear` without autograd reads each parameter ``(N, K)`` from a row-major ``(K, N)``
    copy made at its first product and dropped with the block. For a stretch of work that does not change
    parameters: a search between two batches (:func:`~seq2seq.models.decoding.decode_stream`), never training.

    oneDNN multiplies ``x Wᵀ`` faster from that layout, the most at decoding's few rows: the Bible's output layer
    (``288 → 8000``) 1.25–1.77× at 8–64 rows (docs/performance.md). Nothing outlives the block, so no change to a
    parameter can be missed (fused Adam updates parameters without bumping their version counters).
    """
    stack = _BLOCKS.__dict__.setdefault("copies", [])
    stack.append({})
    try:
        yield
    finally:
        stack.pop()


def _row_major(weight: Tensor) -> Tensor:
    """``weight`` as the transposed view of its copy in the innermost :func:`row_major_copies` block (a 2-D
    contiguous parameter), else as it is."""
    stack = getattr(_BLOCKS, "copies", None)
    copyable = isinstance(weight, torch.nn.Parameter) and weight.dim() == 2 and weight.is_contiguous()
    if not (stack and copyable):
        return weight
    copies = stack[-1]
    if id(weight) not in copies:  # kept with its copy, the parameter's id is its own while the block is open
        copies[id(weight)] = (weight, weight.detach().t().contiguous())
    return copies[id(weight)][1].t()


def addmm(
    add: Tensor, x: Tensor, weight: Tensor, enabled: bool | int = True, pad_rows: bool = True
) -> Tensor:
    """``torch.addmm(add, x, weight)`` without autograd: ``add + x @ weight``; ``x`` ``(B, I)``, ``weight`` ``(I, O)``,
    ``add`` ``(B, O)`` or ``(O,)``. ``pad_rows``: see :func:`_product` (False where every call has the same rows)."""
    if not active(enabled, x, add, weight):  # x first: a row limit counts its rows
        return torch.addmm(add, x, weight)
    if add.dim() == 1:
        return _product(x, weight.t(), add, pad_rows)
    return _product(x, weight.t(), None, pad_rows).add_(add)


def mm(x: Tensor, weight: Tensor, enabled: bool | int = True, pad_rows: bool = True) -> Tensor:
    """``x @ weight`` without autograd: ``x`` ``(M, K)``, ``weight`` ``(K, N)``; ``pad_rows`` as :func:`addmm`'s."""
    return _product(x, weight.t(), None, pad_rows) if active(enabled, x, weight) else x @ weight


def mm_tn(a: Tensor, b: Tensor, enabled: bool | int = True) -> Tensor:
    """``a.t() @ b`` without autograd — a weight's gradient, ``a`` ``(N, I)``, ``b`` ``(N, O)`` → ``(I, O)`` (maybe
    a transposed view). oneDNN is fastest with the larger of ``I``, ``O`` as its output's inner dimension. A row
    limit in ``enabled`` applies to ``N`` (the tokens: this product's inner dimension, the tall side)."""
    if not active(enabled, a, b):
        return a.t() @ b
    if a.size(1) >= b.size(1):
        return _product(b.t(), a.t(), None).t()
    return _product(a.t(), b.t(), None)


class _Linear(torch.autograd.Function):
    """``x Wᵀ + b`` with its forward and both gradients through oneDNN."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _product(x, weight, bias)

    @staticmethod
    @once_differentiable  # the written-out backward is not itself differentiable: a double backward raises
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = _product(grad, weight.t(), None) if ctx.needs_input_grad[0] else None
        flat_grad, flat_x = grad.reshape(-1, grad.size(-1)), x.reshape(-1, x.size(-1))
        grad_w = mm_tn(flat_grad, flat_x) if ctx.needs_input_grad[1] else None
        grad_b = flat_grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b
