"""What every analysis entry point shares: checking its integer options and turning a user's mistake into one line.

Both name the analysis's config file, so the message says where to fix it; exit status 2 is a usage error.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig


def positive_int(config: str, name: str, value: Any, allow_null: bool = False) -> int | None:
    """``value`` as an int ≥ 1 (or None when ``allow_null``); otherwise a ValueError naming ``config`` and ``name``."""
    if value is None and allow_null:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        null = " or null" if allow_null else ""
        raise ValueError(f"{config}: option `{name}` must be a positive integer{null}, got {value!r}.")
    return int(value)


def run_or_exit(run: Callable[[DictConfig], Any], cfg: DictConfig) -> None:
    """Run an analysis; a ValueError or FileNotFoundError (bad option, checkpoint or data) → ``error: …``, exit 2."""
    try:
        run(cfg)
    except (ValueError, FileNotFoundError) as err:  # CheckpointError, DataError: ValueErrors
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
