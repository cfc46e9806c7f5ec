"""Where the console writes: coloured tables on a terminal, plain aligned text otherwise.

On a TTY, tables and the timeline go through ``rich`` (colour, box-free tables); in a pipe
or a file the same content is plain text with two-space columns, so scripts and tests read
it exactly. Every line is flushed at once (``follow`` streams).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ops.timeline import Line

__all__ = ["Output"]

_KIND_STYLES = {
    "visitor": "bold cyan",
    "terra": "bold green",
    "state": "dim",
    "stream": "green",
    "chunk": "green",
    "thinking": "magenta",
    "tool": "yellow",
    "reset": "bold red",
}


class Output:
    """One output stream (stdout by default) and the error stream."""

    def __init__(
        self, stream: TextIO | None = None, errors: TextIO | None = None, *, tty: bool | None = None
    ) -> None:
        self.stream = stream or sys.stdout
        self.errors = errors or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._console = (
            Console(file=self.stream, force_terminal=True, highlight=False) if self.tty else None
        )

    # --- plain lines -------------------------------------------------------------------
    def text(self, value: str, style: str | None = None) -> None:
        """Print ``value`` as is (styled on a terminal)."""
        if self._console is not None:
            self._console.print(Text(value, style=style or ""), soft_wrap=True)
        else:
            self.stream.write(value + "\n")
        self.stream.flush()

    def json(self, value: Any) -> None:
        """One JSON line."""
        self.stream.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.stream.flush()

    def note(self, value: str) -> None:
        """A remark for the person (stderr: never mixed into the data on stdout)."""
        self.errors.write(value + "\n")
        self.errors.flush()

    # --- structured -----------------------------------------------------------------------
    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Rows under headers; the last column is not padded."""
        if self._console is not None:
            table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
            for header in headers:
                table.add_column(header, overflow="fold")
            for row in rows:
                table.add_row(*(Text(cell) for cell in row))
            self._console.print(table)
            self.stream.flush()
            return
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        for cells in [list(headers), *rows]:
            padded = [cell.ljust(width) for cell, width in zip(cells[:-1], widths, strict=False)]
            self.stream.write("  ".join([*padded, cells[-1]]).rstrip() + "\n")
        self.stream.flush()

    def timeline(self, line: Line) -> None:
        """One timeline line, with a date line first when the day changed."""
        if line.quiet:
            return
        if line.new_day is not None:
            self.text(f"-- {line.new_day} (UTC) --", style="bold")
        rendered = line.render()
        if self._console is None:
            self.text(rendered)
            return
        styled = Text(rendered)
        start = rendered.find(line.kind, 25)
        style = _KIND_STYLES.get(line.kind, "")
        if line.kind == "terra" and line.data.get("status") == "error":
            style = "bold red"
        if start >= 0 and style:
            styled.stylize(style, start, start + len(line.kind))
        styled.stylize("dim", 0, 25)
        self._console.print(styled, soft_wrap=True)
        self.stream.flush()
