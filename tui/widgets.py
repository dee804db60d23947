"""Small widgets the views share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid
from textual.widget import Widget
from textual.strip import Strip
from textual.widgets import Static
from textual_hires_canvas import Canvas
from textual_plot import HiResMode, PlotWidget
from textual_plot.axis_formatter import NumericAxisFormatter
from textual_plot.plot_widget import Legend

from . import fmt
from .table import Fit, Table


class _Canvas(Canvas):
    """A canvas whose empty lines carry a style: Textual's NO_COLOR filter fails on the
    style-less blank strip the canvas returns before its first draw."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        if not strip.cell_length:
            return Strip.blank(0, self.rich_style)
        return strip


class _SafeAxis(NumericAxisFormatter):
    """textual-plot's numeric axis, minus its crash on a range too narrow for float spacing:
    a series of one x value widens to +-1e-6, ticks that far apart can round to the same float
    and the label code takes log10(0) ("math domain error")."""

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        if not max_ - min_ > 1e-9 * max(1.0, abs(min_), abs(max_)):
            return [(min_ + max_) / 2]
        ticks = super().get_ticks(min_, max_, max_ticks)
        return sorted(set(ticks))

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        if len(ticks) >= 2 and not ticks[1] - ticks[0] > 0:
            return [f"{t:g}" for t in ticks]
        return super().get_labels_for_ticks(ticks)


def round_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """Ticks for an axis of rounds: whole numbers only, 1, 2 or 5 times a power of ten apart
    (never 0.5 steps over 5 rounds), at most `max_ticks` of them, inside [lo, hi]."""
    first, last = math.ceil(lo - 1e-9), math.floor(hi + 1e-9)
    if last < first:
        return [float(round((lo + hi) / 2))]
    span = last - first
    step = 1
    while span // step + 1 > max(max_ticks, 1):
        for factor in (2, 5 / 2, 2):  # 1 -> 2 -> 5 -> 10 -> 20 -> 50 ...
            step = round(step * factor)
            if span // step + 1 <= max_ticks:
                break
    start = math.ceil(first / step) * step
    return [float(t) for t in range(start, last + 1, step)]


def percent_ticks(max_ticks: int = 8) -> list[float]:
    """A rate axis is always 0-100%: 0, 25, 50, 75, 100% (0, 50, 100 when there is room for
    fewer than five ticks)."""
    step = 0.25 if max_ticks >= 5 else 0.5
    return [i * step for i in range(int(round(1 / step)) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks of a log10 axis (values are log10 of the data): the powers of ten in range, and
    2 and 5 times them when fewer than three powers fit."""
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    ticks = [float(d) for d in decades if lo - 1e-9 <= d <= hi + 1e-9]
    if len(ticks) < 3:
        ticks = sorted(t for d in decades for m in (1, 2, 5)
                       if lo - 1e-9 <= (t := d + math.log10(m)) <= hi + 1e-9)
    return ticks


class _RoundAxis(NumericAxisFormatter):
    """The x axis of every chart here: rounds, integers."""

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        return round_ticks(min_, max_, max_ticks)

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return [str(int(t)) for t in ticks]


class _PercentAxis(NumericAxisFormatter):
    """A rate (0-1) axis labelled in percent, on the fixed 0-100% scale."""

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        return percent_ticks(max_ticks)

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return [f"{t * 100:.0f}%" for t in ticks]


class _LogAxis(NumericAxisFormatter):
    """An axis whose values are log10 of the data, labelled with the data (1, 10, 100)."""

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        # A range inside one decade with no 1-2-5 mark in it: its middle, as _SafeAxis.
        return log_ticks(min_, max_) or [(min_ + max_) / 2]

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return [f"{10 ** t:g}" for t in ticks]


def decades(values: Sequence[float]) -> tuple[float, float]:
    """The log10 range of whole decades around positive `values` (at least one decade): a log
    axis of 8 agents reads 1 to 10, of 1 to 100 agents 1 to 100."""
    logs = [math.log10(v) for v in values if v > 0]
    if not logs:
        return 0.0, 1.0
    lo, hi = math.floor(min(logs) + 1e-9), math.ceil(max(logs) - 1e-9)
    return float(lo), float(max(hi, lo + 1))


def ema(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average with `weight` on the past
    (0 = off), debiased so the first points are not pulled towards 0; NaNs stay gaps and do
    not reset the average."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing must be in [0, 1), not {weight}")
    out, last, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(float("nan"))
            continue
        last = last * weight + (1 - weight) * v
        n += 1
        out.append(last / (1 - weight ** n))
    return out


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
        self.set_x_formatter(_RoundAxis())
        self.set_y_formatter(_SafeAxis())
        self._y_kind = "value"
        self._x_log = False

    def compose(self) -> ComposeResult:
        # PlotWidget's own layout, with canvases that survive NO_COLOR.
        with Grid():
            yield _Canvas(1, 1, id="margin-top")
            yield _Canvas(1, 1, id="margin-left")
            yield _Canvas(1, 1, id="plot")
            yield _Canvas(1, 1, id="margin-bottom")
        yield Legend(id="legend")

    def draw(self, series: Sequence[tuple[Sequence[float], Sequence[float], str, str]], *,
             vlines: Sequence[float] = (),
             ylimits: tuple[float | None, float | None] = (None, None),
             subtitle: str = "", scale: Literal["value", "rate", "count", "log"] = "value",
             xlog: tuple[float, float] | None = None) -> None:
        """Replace the plot with line series (x, y, style, label) and vertical markers.
        `scale="rate"`: a 0-1 rate on the fixed 0-100% scale (ylimits ignored); `"count"`: counts
        from 0, whole-number ticks; `"log"`: the series' y are log10 of the data, labelled with
        the data. `xlog=(lo, hi)`: the x are
        log10 of the data (not rounds), on that log10 range (see `decades`)."""
        if (xlog is not None) != self._x_log:
            self._x_log = xlog is not None
            self.set_x_formatter(_LogAxis() if self._x_log else _RoundAxis())
        if scale != self._y_kind:
            self._y_kind = scale
            self.set_y_formatter({"rate": _PercentAxis(), "count": _RoundAxis(),
                                  "log": _LogAxis()}.get(scale, _SafeAxis()))
        if scale == "rate":
            ylimits = (0.0, 1.0)
        elif scale == "count":
            # From 0; all zeros still get a scale (0 at the bottom, not a lone 0 tick).
            top = max((v for _, y, _, _ in series for v in y if math.isfinite(v)), default=0)
            ylimits = (0.0, ylimits[1] if ylimits[1] is not None or top >= 1 else 1.0)
        # The canvas sets every pixel of every segment in Python: one point per character
        # column keeps a noisy series cheap (each segment may span the whole height) and shows
        # all that the cells can.
        columns = max(20, (self.size.width or 60) - self.margin_left - 2)
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
        self.set_xlimits(*(xlog or (None, None)))
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

