"""Sinusoidal position encodings (Vaswani et al. 2017, §3.5), added to the Transformer's input embeddings.

``PE(pos, 2i) = sin(pos / 10000^(2i/d))``, ``PE(pos, 2i+1) = cos(pos / 10000^(2i/d))``. Computed for the
positions asked for, so no length limit is baked in and nothing enters the checkpoint; an incremental decoder
asks for one position per step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoids(positions: Tensor, size: int) -> Tensor:
    """Encodings of integer ``positions`` ``(...)`` → ``(..., size)`` (``size`` even), interleaved sin/cos."""
    if size % 2:
        raise ValueError(f"sinusoidal positions need an even size, got {size}")
    rates = torch.exp(
        torch.arange(0, size, 2, device=positions.device, dtype=torch.float) * (-math.log(10000.0) / size)
    )  # (size/2,) = 1 / 10000^(2i/d)
    angles = positions.unsqueeze(-1).float() * rates  # (..., size/2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (..., size)


class SinusoidalPositions(nn.Module):
    """Adds ``PE(offset … offset + T - 1)`` to inputs ``(B, T, d)``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, inputs: Tensor, offset: int = 0) -> Tensor:
        positions = torch.arange(offset, offset + inputs.size(1), device=inputs.device)  # (T,)
        return inputs + sinusoids(positions, self.size).to(inputs.dtype)
