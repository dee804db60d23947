"""Small widgets the views share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

from . import fmt
# The charts live in .chart; these names stay importable from here.
from .chart import Chart as Chart
from .chart import decades as decades
from .chart import downsample as downsample
from .chart import ema as ema
from .table import Fit, Table


class TextLine(Widget):
    """Text in a box whose size does not depend on it (a status line, a cell of a row):
    updating it repaints the line without laying out the screen again, as Static.update
    would."""

    DEFAULT_CSS = """
    TextLine { height: 1; }
    """

    def __init__(self, text: str | Text = "", *, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._text: str | Text = text

    @property
    def text(self) -> str | Text:
        return self._text

    def set(self, text: str | Text) -> None:
        if text != self._text:
            self._text = text
            self.refresh()

    def render(self) -> str | Text:
        return self._text


class Spark(Widget):
    """A one-line trend on a fixed scale (fmt.spark: 0-100% for rates), averaged into the
    cells it has. Textual's Sparkline scales each row to its own range: a constant 100% drew
    as the lowest bar and a lone 0% as a full one."""

    DEFAULT_CSS = """
    Spark { height: 1; color: $error; }
    """

    def __init__(self, *, lo: float = 0.0, hi: float = 1.0, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self.lo, self.hi = lo, hi
        self._values: tuple[float, ...] = ()

    def set(self, values: Sequence[float]) -> None:
        if tuple(values) != self._values:
            self._values = tuple(values)
            self.refresh()

    def render(self) -> str:
        width, n = max(self.size.width, 1), len(self._values)
        # Fewer rounds than cells: each round gets an equal run of cells.
        values = [self._values[i * n // width] for i in range(width)] if 0 < n < width \
            else self._values
        return fmt.spark(values, width, self.lo, self.hi)


class Empty(Static):
    """What to do when a panel has nothing to show: never a blank panel."""

    DEFAULT_CSS = """
    Empty { color: $text-muted; padding: 1 2; height: auto; }
    """


def fill_table(table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               keys: Sequence[str] | None = None, fit: Fit | None = None) -> None:
    table.set_rows(columns, rows, keys, fit)


def fit_strip(items: Sequence[tuple[Text, Text]], width: int, sep: str = "  ") -> Text:
    """A strip of (full, short) items in `width` cells: the full forms where they fit on one
    line (items switch to their short form, the biggest saving first, until the line fits).
    If no form fits one line, the full forms are broken into lines between items, never
    inside one (a figure is never split from its label)."""
    chosen = [full for full, _ in items]
    savings = sorted(range(len(items)),
                     key=lambda i: items[i][1].cell_len - items[i][0].cell_len)
    for i in [None, *savings]:
        if i is not None:
            chosen[i] = items[i][1]
        if sum(t.cell_len for t in chosen) + len(sep) * (len(chosen) - 1) <= width:
            return Text(sep).join(chosen)
    # Two lines either way: the full forms, then.
    chosen = [full for full, _ in items]
    out, line = Text(), 0
    for t in chosen:
        if line and line + len(sep) + t.cell_len > width:
            out.append("\n")
            line = 0
        elif line:
            out.append(sep)
            line += len(sep)
        out.append_text(t)
        line += t.cell_len
    return out


def right(text: str) -> Text:
    return Text(text, justify="right")

