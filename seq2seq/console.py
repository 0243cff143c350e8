"""The rich console every command prints its tables with."""

from __future__ import annotations

from rich.console import Console

PIPE_WIDTH = 160  # logs and pipes get this many columns instead of rich's 80, so tables are not squeezed


def make_console(stderr: bool = False) -> Console:
    """A console as wide as the terminal, or :data:`PIPE_WIDTH` columns when writing to a file or pipe."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH)
