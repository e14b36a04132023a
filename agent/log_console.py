"""The console every command prints through: readable in a terminal and in a log alike.

Piped to a file or a CI log, rich fits everything to 80 columns and cuts table cells to
"harm…" (issue 20). There, text wraps at 240 columns and a table is printed at the width its
cells need, however wide: a log line may be long, but no number in it is lost.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

LOG_WIDTH = 240


class LogConsole(Console):
    """A rich console that never cuts a table's cells when it is not a terminal. Only tables
    printed at the top level are measured (one inside a Panel or Group is fitted as before):
    every command prints its tables that way."""

    def print(self, *objects, **kwargs) -> None:  # type: ignore[override]
        if self.is_terminal:
            return super().print(*objects, **kwargs)
        wide = self.options.update(max_width=100_000)
        need = max((Measurement.get(self, wide, o).maximum for o in objects if isinstance(o, Table)), default=0)
        if need <= self.width:
            return super().print(*objects, **kwargs)
        width = self.width
        self.width = need
        try:
            super().print(*objects, **kwargs)
        finally:
            self.width = width


def stdout_console() -> LogConsole:
    """The commands' console: the terminal's width, or LOG_WIDTH (tables wider) when piped."""
    return LogConsole(width=None if sys.stdout.isatty() else LOG_WIDTH)
