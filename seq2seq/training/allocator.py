"""Keep freed memory in the process: no page faults for tensors the next step allocates again.

A training update on CPU allocates and frees the same tensors at every step (gates, attention energies, their
gradients: about 1 MiB each on the benchmark's models). glibc's ``malloc`` serves blocks above its
``mmap`` threshold (128 KiB, adapted upwards at run time) with fresh ``mmap`` calls and gives them back with
``munmap``, and it trims the top of its heap when more than its trim threshold is free. So every step touches
new pages, and each first touch is a page fault: 5,000–17,000 per update on the benchmark's models, 0.02–0.04 s
of system CPU time per update (``docs/performance.md``). :func:`keep_freed_memory` raises the ``mmap`` threshold to its
maximum (32 MiB on 64-bit glibc), stops trimming and pads the heap's growth (``mallopt(3)``), so blocks are
reused from the heap. The peak resident memory stays what the live tensors need; only memory that would have
gone back to the system between steps stays with the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from typing import Any

log = logging.getLogger(__name__)

# mallopt(3) parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # the largest glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 * 1024 * 1024

_DONE: list[bool] = []


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def keep_freed_memory(speed: Any = None) -> bool:
    """Tune glibc's ``malloc`` to keep freed blocks for reuse (once per process). False where there is no glibc,
    or where a run's ``speed`` config, when given, sets ``keep_freed_memory`` false (absent counts as on)."""
    if speed is not None and not speed.get("keep_freed_memory", True):
        return False
    if _DONE:
        return _DONE[0]
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:  # musl, macOS, Windows: their allocators, left as they are
        _DONE.append(False)
        return False
    done = all(
        mallopt(option, value) == 1
        for option, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
        )
    )
    if not done:
        log.warning("mallopt refused a setting: freed memory may still go back to the system between steps")
    _DONE.append(done)
    return done


def release_freed_memory() -> None:
    """Hand what is free back to the system now (``malloc_trim(3)``, where glibc has it), after collecting
    garbage: between two jobs of one process, so that the second starts as a fresh process would."""
    gc.collect()
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)
