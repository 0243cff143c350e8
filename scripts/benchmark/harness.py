"""The measurement both systems share: thread pinning, peak memory, batch shapes, timing loops, matching.

``run.py`` (``make bench``) runs two measuring processes, one per system, one after the other:
``seq2seq_side.py`` for this project and ``joeynmt_side.py`` in JoeyNMT's own virtualenv. Both time their
updates with :func:`time_updates`, their decoding with :func:`time_decoding`, pin their threads with
:func:`pin_threads` and read their own peak memory with :func:`peak_rss_mib`, so the method is the same on
both sides. This module therefore imports only the standard library and torch (JoeyNMT's virtualenv loads
it through ``sys.path``), as do ``flops.py`` and ``report.py``.

Units: a *target token* is a non-padding label (``y_1 … y_n EOS``), as JoeyNMT's "Tokens per Sec" counts
them; *output tokens* are decoded tokens without EOS.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from flops import FlopProfile

# ------------------------------------------------------------------------------------------ process set-up


def pin_threads(threads: int) -> list[int]:
    """Run this process on the first ``threads`` CPUs it may use (as ``taskset``) with that many torch threads."""
    if threads < 1:
        raise ValueError(f"--threads={threads}: must be at least 1")
    available = sorted(os.sched_getaffinity(0))
    if threads > len(available):
        raise ValueError(f"--threads={threads} but this process may use only CPUs {available}")
    cpus = available[:threads]
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)
    return cpus


def status_mib(key: str) -> float:
    """A memory line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, …) in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key} line")


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: ``VmHWM``, its own (not the parent's before ``exec``)."""
    return status_mib("VmHWM")


def reset_peak_rss() -> float | None:
    """Return freed heap pages to the system (``malloc_trim``) and restart ``VmHWM`` at the resident memory now
    (``/proc/self/clear_refs``); returns that resident memory in MiB, or None where Linux does not allow it."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
        return status_mib("VmRSS")
    except (OSError, RuntimeError):
        return None


def check_device(device: str) -> torch.device:
    """``cpu`` or ``cuda``; a clear error (no traceback) where CUDA is asked for but torch sees no GPU."""
    if device not in ("cpu", "cuda"):
        raise SystemExit(f"--device={device}: choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"--device=cuda: torch {torch.__version__} sees no CUDA device here; run on a machine with an "
            "NVIDIA GPU and a CUDA build of torch, or leave --device at cpu"
        )
    return torch.device(device)


def synchronize() -> None:
    """Wait for queued GPU work (a timer read after it then covers it); nothing on the CPU."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def peak_gpu_mib() -> float | None:
    """Peak memory torch allocated on the current GPU (MiB), None without one in use."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return None


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """``precision`` ``bf16`` / ``fp16``: ``torch.autocast`` on that device; ``32``: nothing."""
    if precision == "32":
        yield
        return
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision {precision!r}: choose 32, bf16 or fp16")
    with torch.autocast(device.type, dtype=dtypes[precision]):
        yield


# ------------------------------------------------------------------------------------------ batches, timing


@dataclass(frozen=True)
class BatchShape:
    """What a training batch holds: real and padded token counts and attention reads.

    Attributes:
        sentences: ``B``.
        src_tokens, tgt_tokens: real source tokens and real target tokens (labels, with EOS).
        src_padded, tgt_padded: ``B · S`` and ``B · T`` of the padded tensors.
        src_tgt_pairs: ``Σ_i |x_i| · |y_i|``, the (target step, source position) pairs attention scores.
    """

    sentences: int
    src_tokens: int
    tgt_tokens: int
    src_padded: int
    tgt_padded: int
    src_tgt_pairs: int

    @classmethod
    def from_lengths(cls, src_lengths: Sequence[int], tgt_lengths: Sequence[int]) -> BatchShape:
        """From per-sentence lengths of a right-padded batch (padded width = the longest)."""
        src, tgt = [int(n) for n in src_lengths], [int(n) for n in tgt_lengths]
        if len(src) != len(tgt) or not src:
            raise ValueError(f"need equal, non-empty length lists; got {len(src)} and {len(tgt)}")
        return cls(
            sentences=len(src),
            src_tokens=sum(src),
            tgt_tokens=sum(tgt),
            src_padded=len(src) * max(src),
            tgt_padded=len(tgt) * max(tgt),
            src_tgt_pairs=sum(s * t for s, t in zip(src, tgt, strict=True)),
        )


@dataclass(frozen=True)
class UpdateRecord:
    """One timed update: the batch it consumed and its wall time (fetching the batch included)."""

    shape: BatchShape
    seconds: float


def time_updates(
    next_batch: Callable[[], Any],
    update: Callable[[Any], None],
    shape_of: Callable[[Any], BatchShape],
    warmup: int,
    updates: int,
) -> list[UpdateRecord]:
    """Run ``warmup + updates`` updates; return the records of the last ``updates``.

    Each record's time covers ``next_batch()`` (collation) and ``update(batch)`` (forward, backward,
    optimiser step; on a GPU until its queued work is done); ``shape_of`` is read outside the timed region.
    """
    if updates < 1 or warmup < 0:
        raise ValueError(f"need updates >= 1 and warmup >= 0, got updates={updates}, warmup={warmup}")
    records = []
    for step in range(warmup + updates):
        synchronize()
        start = time.perf_counter()
        batch = next_batch()
        update(batch)
        synchronize()
        seconds = time.perf_counter() - start
        if step >= warmup:
            records.append(UpdateRecord(shape_of(batch), seconds))
    return records


def cycle(make_iterable: Callable[[int], Iterable[Any]]) -> Callable[[], Any]:
    """``next_batch`` for :func:`time_updates`: batches of epoch 0, 1, … (``make_iterable(epoch)``) in turn."""
    state: dict[str, Any] = {"epoch": 0, "it": iter(make_iterable(0))}

    def next_batch() -> Any:
        for _ in range(2):
            try:
                return next(state["it"])
            except StopIteration:
                state["epoch"] += 1
                state["it"] = iter(make_iterable(state["epoch"]))
        raise RuntimeError("the training loader yields no batches")

    return next_batch


def padding_efficiency(shapes: Iterable[BatchShape]) -> dict[str, float]:
    """Real tokens / tokens in the padded tensors: source, target and both together."""
    shapes = list(shapes)
    src = sum(s.src_tokens for s in shapes), sum(s.src_padded for s in shapes)
    tgt = sum(s.tgt_tokens for s in shapes), sum(s.tgt_padded for s in shapes)
    return {
        "source": src[0] / src[1],
        "target": tgt[0] / tgt[1],
        "all": (src[0] + tgt[0]) / (src[1] + tgt[1]),
    }


def summarise_training(records: Sequence[UpdateRecord], profile: FlopProfile) -> dict[str, Any]:
    """Throughput (median over updates of per-update tokens/s, and overall), batch sizes, padding, FLOP/s."""
    if not records:
        raise ValueError("no timed updates to summarise")
    shapes = [r.shape for r in records]
    seconds = sum(r.seconds for r in records)
    tgt = sum(s.tgt_tokens for s in shapes)
    src = sum(s.src_tokens for s in shapes)
    flops = sum(profile.training(s) for s in shapes)
    return {
        "updates": len(records),
        "seconds": seconds,
        "tgt_tokens_per_s": statistics.median(r.shape.tgt_tokens / r.seconds for r in records),
        "src_tgt_tokens_per_s": statistics.median(
            (r.shape.src_tokens + r.shape.tgt_tokens) / r.seconds for r in records
        ),
        "tgt_tokens_per_s_overall": tgt / seconds,
        "tgt_tokens_per_update": tgt / len(records),
        "src_tokens_per_update": src / len(records),
        "sentences_per_update": sum(s.sentences for s in shapes) / len(records),
        "padding_efficiency": padding_efficiency(shapes),
        "flops_per_tgt_token": flops / tgt,
        "model_flops_per_s": flops / seconds,
    }


def time_decoding(batches: Iterable[Any], search: Callable[[Any], list[int]]) -> dict[str, float]:
    """Decode every batch; ``search(batch)`` returns each sentence's output length (tokens, EOS excluded).

    The time covers the whole loop: collating batches and searching.
    """
    lengths: list[int] = []
    synchronize()
    start = time.perf_counter()
    for batch in batches:
        lengths.extend(search(batch))
    synchronize()
    seconds = time.perf_counter() - start
    if not lengths:
        raise ValueError("no sentences were decoded")
    return {
        "sentences": len(lengths),
        "output_tokens": sum(lengths),
        "seconds": seconds,
        "output_tokens_per_s": sum(lengths) / seconds,
        "sentences_per_s": len(lengths) / seconds,
        "mean_output_length": sum(lengths) / len(lengths),
    }


def length_before_eos(row: Sequence[int], eos_id: int, pad_id: int) -> int:
    """Tokens of a decoded row before its first EOS (the whole row when there is none), padding skipped."""
    n = 0
    for token in row:
        if token == eos_id:
            break
        n += token != pad_id
    return n


# ------------------------------------------------------------------------------------------ matching the set-up


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def closest_size(target: int, count: Callable[[int], int], candidates: Iterable[int]) -> tuple[int, int]:
    """The candidate size whose parameter count ``count(size)`` is nearest ``target``: ``(size, count)``."""
    best = min(((abs(count(c) - target), c) for c in candidates), default=None)
    if best is None:
        raise ValueError("no candidate sizes to choose from")
    return best[1], count(best[1])


def mean_target_tokens(batches: Iterable[Sequence[int]], tgt_lengths: Sequence[int]) -> float:
    """Mean real target tokens per batch (``tgt_lengths`` already count EOS)."""
    totals = [sum(tgt_lengths[i] for i in batch) for batch in batches]
    return sum(totals) / len(totals)


def calibrate_budget(
    mean_for_budget: Callable[[int], float], target: float, low: int, high: int
) -> tuple[int, float]:
    """The smallest budget in ``[low, high]`` whose mean target tokens per batch reach ``target`` (bisection).

    ``mean_for_budget`` must grow with the budget (it does for a token-budget sampler, up to noise).
    """
    if low > high:
        raise ValueError(f"empty budget range [{low}, {high}]")
    while low < high:
        mid = (low + high) // 2
        if mean_for_budget(mid) < target:
            low = mid + 1
        else:
            high = mid
    return low, mean_for_budget(low)
