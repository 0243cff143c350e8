"""The project's compiled CPU operators (``csrc/*.cpp``), built on first use and loaded into ``torch.ops.seq2seq_kernels``.

The additive attention score's pass over the keys (:mod:`~seq2seq.models.attention_kernel`), the decoder's whole
teacher-forced loop (:mod:`~seq2seq.models.fused_step`), the encoder's GRU loops (:mod:`~seq2seq.models.gru_kernel`)
and the training loss's softmax and gradient (:mod:`~seq2seq.training.chunked_loss`). They are compiled with the
C++ compiler PyTorch's own extensions use (``CXX``, else ``c++``), against the installed PyTorch's headers, for the
vector width PyTorch itself chose on this CPU, and kept in ``~/.cache/seq2seq/kernels`` (``SEQ2SEQ_KERNEL_CACHE``) under a key of the sources,
PyTorch's and Python's versions, the compiler and the flags: about half a minute, once per machine and version.
``speed.compiled_kernels``: ``auto`` (the default) uses them where they build and the Python operators where they
do not (no compiler); ``true`` requires them; ``false`` never builds them.
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

log = logging.getLogger(__name__)

SOURCES = Path(__file__).with_name("csrc")  # *.cpp compiled into one library; *.h part of the key
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
    """The operators could not be built or loaded here; the message says why and what to do."""


def wanted(setting: object) -> bool:
    """``speed.compiled_kernels`` as a switch: ``false`` off; ``true`` on, raising :class:`KernelUnavailable` where
    they cannot be built; ``auto`` (the default) on where they build."""
    if setting is False or setting == "false":
        return False
    if setting is True or setting == "true":
        try:
            load()
        except KernelUnavailable as error:
            raise KernelUnavailable(
                f"speed.compiled_kernels=true: {error}; or set speed.compiled_kernels=auto"
            ) from None
        return True
    try:
        load()
    except KernelUnavailable as error:
        log.info("speed.compiled_kernels=auto: the Python operators instead (%s)", error)
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


def cache_dir() -> Path:
    """Where the built libraries are kept: ``SEQ2SEQ_KERNEL_CACHE``, else ``~/.cache/seq2seq/kernels``."""
    root = os.environ.get("SEQ2SEQ_KERNEL_CACHE") or Path.home() / ".cache" / "seq2seq" / "kernels"
    return Path(root)


@lru_cache(maxsize=1)
def load() -> str:
    """Build (once per key: module docstring) and load the operators; the library's path. Raises
    :class:`KernelUnavailable` with the reason where it cannot."""
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX") or "c++"
    if shutil.which(compiler) is None:
        raise KernelUnavailable(f"no C++ compiler {compiler!r} on PATH (apt-get install g++, or set CXX)")
    flags = _flags()
    texts = [path.read_text() for path in sorted(SOURCES.glob("*.[ch]*"))]
    key = hashlib.sha256(
        "\n".join([*texts, torch.__version__, compiler, sys.version, *flags]).encode()
    ).hexdigest()
    folder = cache_dir() / key[:16]
    library = folder / "seq2seq_kernels.so"
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
        torch.ops.seq2seq_kernels.fused_loop  # noqa: B018 (looked up, not used)
    except (AttributeError, RuntimeError):
        return False
    return True


def _build(compiler: str, flags: list[str], cpp_extension, library: Path) -> None:
    partial = library.with_suffix(f".{os.getpid()}.tmp")
    command = [
        compiler,
        *flags,
        *(f"-I{path}" for path in cpp_extension.include_paths()),
        *(str(path) for path in sorted(SOURCES.glob("*.cpp"))),
        "-o",
        str(partial),
        *(f"-L{path}" for path in cpp_extension.library_paths()),
        *(f"-Wl,-rpath,{path}" for path in cpp_extension.library_paths()),
        "-lc10",
        "-ltorch_cpu",
    ]
    log.info("building the compiled operators (once): %s", library)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise KernelUnavailable(f"{compiler} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    os.replace(partial, library)  # whole or not at all
