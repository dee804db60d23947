"""Small widgets the views share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
from rich.text import Text
from textual.widgets import DataTable, Static
from textual_plot import HiResMode, PlotWidget


class Chart(PlotWidget, can_focus=False):
    """A braille plot that never takes focus: a focused plot binds +, - and the arrows itself,
    which would shadow the dashboard's interval keys."""

    DEFAULT_CSS = """
    Chart { height: 1fr; min-height: 6; border: round $secondary-muted; }
    """

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id, allow_pan_and_zoom=False)
        self.border_title = title
        # Set without watchers: the margins' grid does not exist before mount.
        self.set_reactive(PlotWidget.margin_top, 0)
        self.set_reactive(PlotWidget.margin_bottom, 2)
        self.set_reactive(PlotWidget.margin_left, 7)

    def draw(self, series: Sequence[tuple[Sequence[float], Sequence[float], str, str]], *,
             vlines: Sequence[float] = (), ylimits: tuple[float | None, float | None] = (None, None),
             subtitle: str = "") -> None:
        """Replace the plot with line series (x, y, style, label) and vertical markers."""
        # The canvas draws every segment in Python (~0.1 ms each): more points than braille
        # columns cost time and show nothing more.
        columns = max(20, (self.size.width or 60) - self.margin_left - 2) * 2
        series = [(*downsample(x, y, columns), style, label) for x, y, style, label in series]
        self.clear()
        # Without colour, lines differ by their dots: braille, then quadrant blocks.
        modes = ((HiResMode.BRAILLE, HiResMode.QUADRANT, HiResMode.HALFBLOCK)
                 if self.app.no_color else (HiResMode.BRAILLE,))
        for i, (x, y, style, label) in enumerate(series):
            if len(x):
                self.plot(x, y, line_style=style, hires_mode=modes[i % len(modes)], label=label)
        for v in vlines:
            self.add_v_line(v, line_style="red")
        self.set_ylimits(*ylimits)
        self.border_subtitle = subtitle


def downsample(x: Sequence[float], y: Sequence[float],
               points: int) -> tuple[list[float], list[float]]:
    """At most `points` points: the mean of x and of y over consecutive equal-size buckets
    (NaNs ignored, so a gap stays a gap only when a whole bucket is empty)."""
    if len(x) <= points:
        return list(x), list(y)
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    edges = np.linspace(0, len(xs), points + 1).astype(int)
    out_x, out_y = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi <= lo:
            continue
        bucket = ys[lo:hi]
        finite = bucket[np.isfinite(bucket)]
        out_x.append(float(xs[lo:hi].mean()))
        out_y.append(float(finite.mean()) if finite.size else float("nan"))
    return out_x, out_y


class Empty(Static):
    """What to do when a panel has nothing to show: never a blank panel."""

    DEFAULT_CSS = """
    Empty { color: $text-muted; padding: 1 2; height: auto; }
    """


def fill_table(table: DataTable[Any], columns: Sequence[str], rows: Sequence[Sequence[Any]],
               keys: Sequence[str] | None = None) -> None:
    """Replace a table's content, keeping the cursor on the same row index when possible."""
    cursor = table.cursor_row
    if [str(c.label) for c in table.columns.values()] != list(columns):
        table.clear(columns=True)
        table.add_columns(*columns)
    else:
        table.clear()
    if keys is None:
        table.add_rows(rows)
    else:
        for row, key in zip(rows, keys):
            table.add_row(*row, key=key)
    if rows:
        table.move_cursor(row=min(max(cursor, 0), len(rows) - 1), animate=False)


def right(text: str) -> Text:
    return Text(text, justify="right")


def frame_rows(df: pl.DataFrame) -> list[tuple[Any, ...]]:
    return list(df.iter_rows())
