"""keep_freed_memory: what one update allocated and freed is reused by the next, without page faults (glibc)."""

import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys, torch
from seq2seq.training.allocator import keep_freed_memory
modes = {"keep": lambda: keep_freed_memory(), "off": lambda: keep_freed_memory({"keep_freed_memory": False})}
kept = modes[sys.argv[1]]() if sys.argv[1] in modes else None
faults = []
for update in range(6):  # an update: a step loop saves 40 tensors of about 1.3 MiB for backward, then frees them
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    saved = [torch.empty(327680 + 16 * step).fill_(1.0) for step in range(40)]
    del saved
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, *faults)
"""


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    kept, *faults = out.stdout.split()
    return kept, [int(f) for f in faults]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_an_updates_freed_memory_is_reused_without_page_faults():
    kept, with_it = _faults("keep")
    _, without = _faults("default")
    switched_off, off = _faults("off")  # speed.keep_freed_memory=false: glibc's defaults stay
    assert kept == "True" and switched_off == "False"
    pages = 40 * 327680 * 4 // 4096  # 12,800 pages written per update
    assert with_it[0] > pages / 2 and without[0] > pages / 2  # the first update writes fresh pages either way
    assert (
        without[1] > pages / 2
    )  # glibc's defaults: it gave them back, the second update faults them in again
    assert off[1] > pages / 2
    assert sum(with_it[1:]) < pages / 5  # kept: the five updates after the first, few (a few hundred here)
