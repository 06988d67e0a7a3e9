"""Where every command prints: results on stdout, messages (progress, warnings, errors) on stderr, and tables at
their natural width."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

stdout = Console(highlight=False)
"""A command's result: its tables and lines, what a pipe or a file receives."""
stderr = Console(stderr=True, highlight=False)
"""Everything else: status while a command works, warnings, errors."""


def print_table(table: Table) -> None:
    """Print ``table`` on stdout at its natural width: in a file or a pipe rich would squeeze it to 80 columns and
    cut numbers.

    >>> table = Table("width")
    >>> table.add_row("16")
    >>> print_table(table)
    ┏━━━━━━━┓
    ┃ width ┃
    ┡━━━━━━━┩
    │ 16    │
    └───────┘
    """
    if stdout.is_terminal:
        stdout.print(table)
        return
    width = max(80, Measurement.get(stdout, stdout.options.update_width(10_000), table).maximum)
    Console(highlight=False, width=width, file=sys.stdout).print(table)
