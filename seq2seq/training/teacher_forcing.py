"""Teacher-forcing schedules: ε_i, the probability of feeding the ground-truth token at training step i.

The parameters' ranges are checked with the rest of the config (:mod:`seq2seq.config.checks`).

Following scheduled sampling (Bengio et al. 2015, §2.4):

* ``always``          ε_i = 1 (pure teacher forcing)
* ``constant``        ε_i = ratio
* ``linear``          ε_i = max(ε_min, k − c·i)
* ``exponential``     ε_i = k^i             (k < 1)
* ``inverse_sigmoid`` ε_i = k / (k + exp(i / k))   (k ≥ 1)
"""

from __future__ import annotations

import math
from typing import Any

SCHEDULES = ("always", "constant", "linear", "exponential", "inverse_sigmoid")
FEEDBACK = ("argmax", "sample")  # how the model's own token is chosen when the gold one is not fed


def teacher_forcing_ratio(cfg: Any, step: int) -> float:
    """ε at training step ``step`` for the ``teacher_forcing`` config node (its ``schedule`` key)."""
    name = cfg.schedule
    if name == "always":
        return 1.0
    if name == "constant":
        return float(cfg.ratio)
    if name == "linear":
        return max(float(cfg.min_ratio), float(cfg.k) - float(cfg.c) * step)
    if name == "exponential":
        return float(cfg.k) ** step
    if name == "inverse_sigmoid":
        k = float(cfg.k)
        # exp overflows for very large i / k; the limit is 0.
        exponent = step / k
        return 0.0 if exponent > 700 else k / (k + math.exp(exponent))
    raise ValueError(f"teacher_forcing.schedule={name!r}: choose one of {SCHEDULES}")
