"""Lightning's and PyTorch's messages that say nothing about this run, silenced by their exact text.

- Lightning's "💡 Tip: … litlogger" advertisement, printed by every ``Trainer`` (a log record of
  ``pytorch_lightning.utilities.rank_zero``): dropped by a logging filter on that logger.
- "``isinstance(treespec, LeafSpec)`` is deprecated", which Lightning's own ``utilities/_pytree.py`` raises
  against newer PyTorch at every fit and test: ignored by message.

Nothing else is filtered: every other warning still shows. :func:`silence` is idempotent.
"""

from __future__ import annotations

import logging
import warnings

TIP = "💡 Tip:"
PYTREE = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIP)


_FILTER = _DropTip()


def silence() -> None:
    """Install both filters (call before building a ``Trainer``)."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)  # whichever Lightning package logs it
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    warnings.filterwarnings("ignore", message=PYTREE)
