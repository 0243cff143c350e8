"""Bahdanau's additive score as one compiled CPU pass over the keys, forward and backward (``csrc/additive_score.cpp``).

In the sigmoid form of :mod:`~seq2seq.models.step_attention` a step's scores are (Bahdanau, Cho & Bengio 2015,
App. A, with ``tanh(x) = 2σ(2x) − 1``)::

    g = σ(K + 2 W q_t)  (B, S, A)        e_bs = 2 Σ_a v_a g_bsa       K = 2 U h̄ (the doubled keys)

Written as operators, the forward is three passes over a ``(B, S, A)`` tensor (an add into a new tensor, σ in
place, the product with ``v``) and the backward seven (``g`` again, ``∂v``, σ', ``∂d``, and the keys' running
sum); in the step loop each such pass takes several times its time in isolation (``docs/performance.md``). The
kernel reads ``K`` once in the forward, keeping nothing of size ``(B, S, A)``, and in the backward reads it once more
and adds to the keys' running sum once, with ``grad`` = ``∂L/∂(gv)`` ``(B, S)`` (twice ``∂L/∂e``)::

    ∂v = Σ_bs grad_bs g_bs      ∂(W q)_b = 2 v ⊙ Σ_s grad_bs g_bs (1 − g_bs)      keys_grad_bs += grad_bs g_bs (1 − g_bs)

(``keys_grad`` times ``v`` is the keys' gradient, as :class:`~seq2seq.models.step_attention.StepAttention` keeps
it). Positions with ``grad`` 0 — padding, where α is 0 — are skipped.

The kernel is compiled on first use with the C++ compiler PyTorch's own extensions use (``CXX``, else ``c++``),
against the installed PyTorch's headers, for the vector width PyTorch itself chose on this CPU, and kept in
``~/.cache/seq2seq/kernels`` (``SEQ2SEQ_KERNEL_CACHE``) under a key of the source, PyTorch's version and the flags:
about half a minute, once. ``speed.attention_kernel``: ``auto`` uses it where it builds and the step loop's
read where it does not (no compiler); ``true`` requires it. Tested equal to the operators in float64
(``tests/test_attention_kernel.py``).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "additive_score.cpp"
CHOICES = (True, False, "auto")

# the vector instructions of each of PyTorch's CPU capabilities (torch.backends.cpu.get_cpu_capability())
_CAPABILITY_FLAGS = {
    "AVX512": [
        "-DCPU_CAPABILITY=AVX512",
        "-DCPU_CAPABILITY_AVX512",
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mfma",
    ],
    "AVX2": ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma"],
}


class KernelUnavailable(ValueError):
    """The kernel could not be built or loaded here; the message says why and what to do."""


def wanted(setting: object) -> bool:
    """``speed.attention_kernel`` as a switch: ``false`` off; ``true`` on, raising :class:`KernelUnavailable` where it
    cannot be built; ``auto`` (the default) on where it builds."""
    if setting is False or setting == "false":
        return False
    if setting is True or setting == "true":
        try:
            load()
        except KernelUnavailable as error:
            raise KernelUnavailable(
                f"speed.attention_kernel=true: {error}; or set speed.attention_kernel=auto"
            ) from None
        return True
    try:
        load()
    except KernelUnavailable as error:
        log.info("speed.attention_kernel=auto: the step loop's attention read instead (%s)", error)
        return False
    return True


def _flags() -> list[str]:
    capability = torch.backends.cpu.get_cpu_capability()
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        "-O3",
        "-std=c++17",
        "-fPIC",
        "-shared",
        "-fopenmp",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *_CAPABILITY_FLAGS.get(capability, []),
    ]


def _cache_dir() -> Path:
    root = os.environ.get("SEQ2SEQ_KERNEL_CACHE") or Path.home() / ".cache" / "seq2seq" / "kernels"
    return Path(root)


@lru_cache(maxsize=1)
def load() -> str:
    """Build (once per source, PyTorch version and flags) and load the kernel; its library's path. Raises
    :class:`KernelUnavailable` with the reason where it cannot."""
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX") or "c++"
    if shutil.which(compiler) is None:
        raise KernelUnavailable(f"no C++ compiler {compiler!r} on PATH (apt-get install g++, or set CXX)")
    flags = _flags()
    key = hashlib.sha256(
        "\n".join([SOURCE.read_text(), torch.__version__, compiler, sys.version, *flags]).encode()
    ).hexdigest()[:16]
    folder = _cache_dir() / key
    library = folder / "additive_score.so"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "lock", "w") as lock:  # one build at a time (test workers, sweep jobs)
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not library.exists():
                _build(compiler, flags, cpp_extension, library)
    except OSError as error:
        raise KernelUnavailable(f"cannot build in {folder}: {error} (set SEQ2SEQ_KERNEL_CACHE)") from error
    if not _registered():  # (a second library registering the same operators would be refused)
        torch.ops.load_library(str(library))
    return str(library)


def _registered() -> bool:
    try:
        torch.ops.seq2seq_kernels.additive_score  # noqa: B018 (looked up, not used)
    except (AttributeError, RuntimeError):
        return False
    return True


def _build(compiler: str, flags: list[str], cpp_extension, library: Path) -> None:
    partial = library.with_suffix(f".{os.getpid()}.tmp")
    command = [
        compiler,
        *flags,
        *(f"-I{path}" for path in cpp_extension.include_paths()),
        str(SOURCE),
        "-o",
        str(partial),
        *(f"-L{path}" for path in cpp_extension.library_paths()),
        *(f"-Wl,-rpath,{path}" for path in cpp_extension.library_paths()),
        "-lc10",
        "-ltorch_cpu",
    ]
    log.info("building the additive-attention kernel (once): %s", library)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise KernelUnavailable(f"{compiler} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    os.replace(partial, library)  # whole or not at all


def active(enabled: bool, *tensors: Tensor) -> bool:
    """Whether the kernel computes a read of these tensors: ``enabled`` (``speed.attention_kernel``, already built),
    CPU float32 or float64 tensors of one dtype, the first (the keys) contiguous."""
    if not enabled or not tensors or not tensors[0].is_contiguous():
        return False
    dtype = tensors[0].dtype
    return dtype in (torch.float32, torch.float64) and all(
        t.device.type == "cpu" and t.dtype == dtype for t in tensors
    )


def scores(keys: Tensor, query: Tensor, v: Tensor) -> Tensor:
    """``e = 2 Σ_a v_a σ(K + 2 W q)`` ``(B, S)`` from the doubled keys ``(B, S, A)``, the projected query ``W q``
    ``(B, A)`` (its rows may be a slice of a wider tensor) and ``v`` ``(A,)``, without autograd."""
    return torch.ops.seq2seq_kernels.additive_score(keys, _rows(query), v.contiguous())


def scores_backward(
    keys: Tensor, query: Tensor, v: Tensor, grad: Tensor, keys_grad: Tensor
) -> tuple[Tensor, Tensor]:
    """``(∂(W q) (B, A), ∂v (A,))`` for ``grad`` ``= ∂L/∂(gv)`` ``(B, S)``; adds ``grad ⊙ σ'`` to ``keys_grad``
    ``(B, S, A)`` in place (module docstring)."""
    v = v.contiguous()
    v_rows, query_rows = torch.ops.seq2seq_kernels.additive_score_backward(
        keys, _rows(query), v, grad.contiguous(), keys_grad
    )
    return query_rows.mul_(v).mul_(2), v_rows.sum(0)


def _rows(t: Tensor) -> Tensor:
    """``t`` with packed rows (a column slice of a contiguous tensor stays a view)."""
    return t if t.stride(-1) == 1 else t.contiguous()
