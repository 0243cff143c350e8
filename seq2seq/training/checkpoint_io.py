"""Checkpoints written atomically, with the umask's file mode (:class:`AtomicCheckpointIO`).

Lightning's default writer goes through fsspec, whose local "transaction" writes a temporary file (mode
0600) and moves it into place; a kill during a move across file systems can leave a truncated
``last.ckpt`` — the very file a resume needs. Here the checkpoint is serialised in memory and written by
:func:`seq2seq.data.atomic.write_atomic` (temporary file in the same directory, then one rename).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from seq2seq.data.atomic import write_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's Torch checkpoint IO, writing each file whole or not at all."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomic(path, buffer.getvalue())
