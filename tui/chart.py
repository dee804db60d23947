"""Line charts in braille: the axes' ticks, smoothing and downsampling, and the Chart widget.

A chart is computed once per `draw()` (and once per size or style change) into one Strip per
line; painting it only returns those strips. Each series is rasterised with numpy: the line
between two points fills every dot it passes, as a line plot does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

Scale = Literal["value", "rate", "count", "log"]
FloatArray = npt.NDArray[np.float64]
Values = Sequence[float] | FloatArray
Series = tuple[Values, Values, str, str]  # x, y, style, label
IntArray = npt.NDArray[np.int64]


# --- ticks and labels of the axes ------------------------------------------------------------

def nice_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """At most `max_ticks` ticks inside [lo, hi], 1, 2 or 5 times a power of ten apart (the
    smallest such step that is not too many)."""
    span = hi - lo
    if not span > 0:
        return [lo]
    power = 10.0 ** math.floor(math.log10(span / max(max_ticks, 1)))
    for step in (m * power for m in (1, 2, 5, 10, 20, 50)):
        first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
        if last - first + 1 <= max(max_ticks, 1):
            break
    # k * step, rounded to the step's decimals: 3 * 0.2 reads 0.6, not 0.6000000000000001.
    digits = max(0, -math.floor(math.log10(step))) + 1
    return [round(k * step, digits) for k in range(first, last + 1)]


class Axis:
    """Ticks of an axis and their labels."""

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        raise NotImplementedError

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        raise NotImplementedError


class _SafeAxis(Axis):
    """A numeric axis: round ticks labelled with the decimals their spacing needs. A range too
    narrow for float spacing (a series of one value, widened by 1e-6) gets one tick, its
    middle, instead of ticks that round to the same float."""

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        if not max_ - min_ > 1e-9 * max(1.0, abs(min_), abs(max_)):
            return [(min_ + max_) / 2]
        return sorted(set(nice_ticks(min_, max_, max_ticks)))

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        if len(ticks) < 2 or not ticks[1] - ticks[0] > 0:
            return [f"{t:g}" for t in ticks]
        decimals = max(0, -math.floor(math.log10(ticks[1] - ticks[0])))
        return [f"{t:.{decimals}f}" for t in ticks]


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


class _RoundAxis(Axis):
    """The x axis of every chart here: rounds, integers."""

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        return round_ticks(min_, max_, max_ticks)

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return [str(int(t)) for t in ticks]


class _PercentAxis(Axis):
    """A rate (0-1) axis labelled in percent, on the fixed 0-100% scale."""

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        return percent_ticks(max_ticks)

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return [f"{t * 100:.0f}%" for t in ticks]


class _LogAxis(Axis):
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


def short_number(label: str, value: float, width: int) -> str:
    """A tick label in `width` cells: as it is when it fits, else with a k/M/G suffix (or in
    exponent form when tiny); never cut into a different number."""
    if len(label) <= width:
        return label
    size = abs(value)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= div:
            for digits in (3, 2, 1):
                if len(text := f"{value / div:.{digits}g}{suffix}") <= width:
                    return text
    return f"{value:.0e}" if len(f"{value:.0e}") <= width else label[:width]


# --- the series ------------------------------------------------------------------------------

def ema(values: Values, weight: float) -> list[float]:
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


def downsample(x: Sequence[float], y: Sequence[float],
               points: int) -> tuple[list[float], list[float]]:
    """At most `points` points: the mean of x and of y over consecutive equal-size buckets
    (NaNs ignored, so a gap stays a gap only when a whole bucket is empty)."""
    if len(x) <= points:
        return list(x), list(y)
    xs, ys = _downsample(np.asarray(x, dtype=float), np.asarray(y, dtype=float), points)
    return xs.tolist(), ys.tolist()


def _downsample(xs: FloatArray, ys: FloatArray, points: int) -> tuple[FloatArray, FloatArray]:
    # Bucket i starts at floor(i * n / points): more points than buckets, so none is empty.
    edges = np.arange(points, dtype=np.int64) * len(xs) // points
    sizes = np.diff(edges, append=len(xs))
    finite = np.isfinite(ys)
    counts = np.add.reduceat(finite.astype(np.int64), edges)
    sums = np.add.reduceat(np.where(finite, ys, 0.0), edges)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return np.add.reduceat(xs, edges) / sizes, means


# --- dots: braille, quadrant and half blocks -------------------------------------------------

@dataclass(frozen=True)
class Dots:
    """A way to draw dots in a cell: `bits[row][col]` is the bit of each dot, `chars[code]`
    the character of a cell whose dots' bits add up to `code`."""

    name: str
    bits: tuple[tuple[int, ...], ...]
    chars: str

    @property
    def width(self) -> int:
        return len(self.bits[0])

    @property
    def height(self) -> int:
        return len(self.bits)


BRAILLE = Dots("braille", ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80)),
               " " + "".join(chr(0x2800 + code) for code in range(1, 256)))
QUADRANT = Dots("quadrant", ((1, 2), (4, 8)), " ▘▝▀▖▌▞▛▗▚▐▜▄▙▟█")
HALF = Dots("half", ((1,), (2,)), " ▀▄█")
# Without colour the lines of a chart differ by their dots, in this order.
MONO_DOTS = (BRAILLE, QUADRANT, HALF)
_BITS = {d.name: np.array(d.bits, dtype=np.int64) for d in MONO_DOTS}
_CHARS = {d.name: np.array(list(d.chars)) for d in MONO_DOTS}


def _clip(x0: FloatArray, y0: FloatArray, x1: FloatArray, y1: FloatArray,
          width: float, height: float) -> tuple[FloatArray, ...]:
    """Segments cut to the box [-0.5, width - 0.5] x [-0.5, height - 0.5] (Liang-Barsky, on
    arrays): the part of each segment inside, and which segments have one."""
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = np.zeros_like(x0), np.ones_like(x0)
    keep = np.ones(x0.shape, dtype=bool)
    for p, q in ((-dx, x0 + 0.5), (dx, width - 0.5 - x0),
                 (-dy, y0 + 0.5), (dy, height - 0.5 - y0)):
        flat = p == 0
        keep &= ~(flat & (q < 0))  # parallel to this edge and outside it
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(flat, 0.0, q / np.where(flat, 1.0, p))
        t0 = np.where(~flat & (p < 0), np.maximum(t0, r), t0)
        t1 = np.where(~flat & (p > 0), np.minimum(t1, r), t1)
    keep &= t0 <= t1
    return (x0 + t0 * dx, y0 + t0 * dy, x0 + t1 * dx, y0 + t1 * dy, keep)


def line_dots(fx: FloatArray, fy: FloatArray, width: int,
              height: int) -> tuple[IntArray, IntArray]:
    """The dots (column, row) of a line through points in dot coordinates on a grid of
    `width` x `height` dots: every dot each segment between two finite points passes, and
    every finite point (a point alone between gaps is a dot). NaN points are gaps."""
    finite = np.isfinite(fx) & np.isfinite(fy)
    pairs = np.flatnonzero(finite[:-1] & finite[1:])
    x0, y0, x1, y1 = fx[pairs], fy[pairs], fx[pairs + 1], fy[pairs + 1]
    inside = finite & (fx > -0.5) & (fx < width - 0.5) & (fy > -0.5) & (fy < height - 0.5)
    if not inside[finite].all():  # only a fixed scale has points off it: cut the segments
        x0, y0, x1, y1, keep = _clip(x0, y0, x1, y1, width, height)
        x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    # Enough samples per segment that consecutive ones are at most a dot apart.
    steps = np.ceil(np.maximum(np.abs(x1 - x0), np.abs(y1 - y0))).astype(np.int64) + 1
    seg = np.repeat(np.arange(steps.size), steps)
    k = np.arange(seg.size) - np.repeat(np.cumsum(steps) - steps, steps)
    t = k / np.maximum(steps - 1, 1)[seg]
    px = np.concatenate([x0[seg] + t * (x1 - x0)[seg], fx[inside]])
    py = np.concatenate([y0[seg] + t * (y1 - y0)[seg], fy[inside]])
    return (np.clip(np.rint(px), 0, width - 1).astype(np.int64),
            np.clip(np.rint(py), 0, height - 1).astype(np.int64))


def cell_codes(px: IntArray, py: IntArray, dots: Dots, columns: int, rows: int) -> IntArray:
    """Dots as the character codes of a `rows` x `columns` grid of cells (0: empty)."""
    codes = np.zeros(rows * columns, dtype=np.int64)
    bits = _BITS[dots.name][py % dots.height, px % dots.width]
    np.bitwise_or.at(codes, (py // dots.height) * columns + px // dots.width, bits)
    return codes.reshape(rows, columns)


# --- the frame -------------------------------------------------------------------------------

UP, RIGHT, DOWN, LEFT = 1, 2, 4, 8
HEAVY = {RIGHT | LEFT: "━", UP | DOWN: "┃", RIGHT | DOWN: "┏", DOWN | LEFT: "┓",
         UP | RIGHT: "┗", UP | LEFT: "┛", UP | RIGHT | LEFT: "┻", RIGHT | DOWN | LEFT: "┳",
         UP | DOWN | LEFT: "┫", UP | RIGHT | DOWN: "┣", UP | RIGHT | DOWN | LEFT: "╋"}


def _frame_edges(width: int, left: int, ticks: Sequence[int],
                 marks: Sequence[int]) -> tuple[str, str]:
    """The frame's top and bottom edges from column `left` on: corners, the x ticks pointing
    out, and the markers' columns joined to the frame."""
    top = [RIGHT | LEFT] * (width - left)
    bottom = [RIGHT | LEFT] * (width - left)
    top[0], top[-1] = RIGHT | DOWN, DOWN | LEFT
    bottom[0], bottom[-1] = UP | RIGHT, UP | LEFT
    for c in ticks:
        top[c - left] |= UP
        bottom[c - left] |= DOWN
    for c in marks:
        top[c - left] |= DOWN
        bottom[c - left] |= UP
    return "".join(HEAVY[q] for q in top), "".join(HEAVY[q] for q in bottom)


@dataclass(frozen=True)
class Line:
    """A series as drawn: its points, style, label and the dots it is drawn with."""

    x: FloatArray
    y: FloatArray
    style: str
    label: str
    dots: Dots


def _limits(values: list[FloatArray], lo: float | None, hi: float | None,
            default: tuple[float, float]) -> tuple[float, float]:
    finite = [v[np.isfinite(v)] for v in values]
    data = np.concatenate(finite) if finite else np.empty(0)
    if lo is None:
        lo = float(data.min()) if data.size else default[0]
    if hi is None:
        hi = float(data.max()) if data.size else default[1]
    return lo, hi


def _spread(lo: float, hi: float, pad: float) -> tuple[float, float]:
    """A range of one value (or an inverted one, from a fixed end the data lies beyond)
    widened by `pad` on each side, so that it has a scale."""
    if hi > lo:
        return lo, hi
    lo, hi = min(lo, hi), max(lo, hi)
    return lo - pad, hi + pad


class Chart(Widget, can_focus=False):
    """A braille line chart: y labels on the left, a heavy frame with ticks, x labels below;
    series drawn in order (a later one over an earlier one), red vertical markers behind them.
    It never takes focus: the dashboard's keys stay the dashboard's."""

    DEFAULT_CSS = """
    Chart { height: 1fr; min-height: 6; border: round $secondary-muted; }
    Chart > .chart--axis { color: $secondary; }
    Chart > .chart--tick { color: $secondary; text-style: bold; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"chart--axis", "chart--tick"}
    LABEL_WIDTH: ClassVar[int] = 6  # y labels; a space, then the frame
    MARKER_STYLE: ClassVar[str] = "red"

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._title_markup = title
        self.border_title = title
        self.lines: tuple[Line, ...] = ()
        self.vlines: tuple[float, ...] = ()
        self.y_kind: Scale = "value"
        self.x_axis: Axis = _RoundAxis()
        self.y_axis: Axis = _SafeAxis()
        self._ylimits: tuple[float | None, float | None] = (None, None)
        self._xlog: tuple[float, float] | None = None
        self._version = 0
        self._strips: list[Strip] = []
        self._built_for: tuple[int, int, int] | None = None

    def set_title(self, title: str) -> None:
        # Only when it changed: each time it is set Textual parses its markup and repaints.
        if title != self._title_markup:
            self._title_markup = self.border_title = title

    def draw(self, series: Sequence[Series], *, vlines: Sequence[float] = (),
             ylimits: tuple[float | None, float | None] = (None, None),
             subtitle: str = "", scale: Scale = "value",
             xlog: tuple[float, float] | None = None) -> None:
        """Replace the chart with line series (x, y, style, label) and vertical markers.
        `scale="rate"`: a 0-1 rate on the fixed 0-100% scale (ylimits ignored); `"count"`: counts
        from 0, whole-number ticks; `"log"`: the series' y are log10 of the data, labelled with
        the data. `xlog=(lo, hi)`: the x are log10 of the data (not rounds), on that log10 range
        (see `decades`). A NaN in a series is a gap in its line."""
        mono = self.app.no_color
        self.lines = tuple(
            Line(np.asarray(x, dtype=float), np.asarray(y, dtype=float), style, label,
                 MONO_DOTS[i % len(MONO_DOTS)] if mono else BRAILLE)
            for i, (x, y, style, label) in enumerate(series))
        self.vlines = tuple(float(v) for v in vlines)
        self.y_kind = scale
        self.y_axis = {"rate": _PercentAxis(), "count": _RoundAxis(),
                       "log": _LogAxis()}.get(scale, _SafeAxis())
        self.x_axis = _LogAxis() if xlog is not None else _RoundAxis()
        if scale == "rate":
            ylimits = (0.0, 1.0)
        elif scale == "count":
            # From 0; all zeros still get a scale (0 at the bottom, not a lone 0 tick).
            top = _limits([ln.y for ln in self.lines], 0.0, None, (0.0, 0.0))[1]
            ylimits = (0.0, ylimits[1] if ylimits[1] is not None or top >= 1 else 1.0)
        self._ylimits, self._xlog = ylimits, xlog
        self._version += 1
        # One refresh per draw: setting the subtitle refreshes the widget itself.
        if subtitle != (self.border_subtitle or ""):
            self.border_subtitle = subtitle
        else:
            self.refresh()

    # --- painting: the cached strips -------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._version += 1  # the theme's colours are in the strips

    def render_line(self, y: int) -> Strip:
        width, height = self.size
        if self._built_for != (width, height, self._version):
            self._strips = self.build(width, height)
            self._built_for = (width, height, self._version)
        if 0 <= y < len(self._strips):
            return self._strips[y]
        return Strip.blank(width, self.rich_style)

    def limits(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(x0, x1), (y0, y1): the data range the plot area spans."""
        x0, x1 = self._xlog or _limits([*(ln.x for ln in self.lines),
                                        np.asarray(self.vlines, dtype=float)],
                                       None, None, (0.0, 1.0))
        y0, y1 = _limits([ln.y for ln in self.lines], *self._ylimits, (0.0, 1.0))
        # One value: widened (a lone round in the middle, a constant value with ticks round
        # it; rates and counts have their fixed scale).
        x0, x1 = _spread(x0, x1, 1e-6)
        y0, y1 = _spread(y0, y1, (abs(y0) * 0.1 or 1.0) if self.y_kind == "value" else 1e-6)
        return (x0, x1), (y0, y1)

    def build(self, width: int, height: int) -> list[Strip]:
        """The chart's lines for a content area of `width` x `height` cells."""
        base = self.rich_style
        left = self.LABEL_WIDTH + 1
        columns, rows = width - left - 2, height - 3
        if columns < 1 or rows < 1:
            return [Strip.blank(width, base)] * height
        axis = base + self.get_component_rich_style("chart--axis", partial=True)
        tick = base + self.get_component_rich_style("chart--tick", partial=True)
        (x0, x1), (y0, y1) = self.limits()

        def to_column(value: float) -> int:
            return left + 1 + round((value - x0) / (x1 - x0) * (2 * columns - 1)) // 2

        def to_row(value: float) -> int:
            return 1 + round((y1 - value) / (y1 - y0) * (4 * rows - 1)) // 4

        chars = np.full((rows, columns), " ")
        owner = np.zeros((rows, columns), dtype=np.int64)  # 0 empty, -1 marker, i + 1 series i
        marks = sorted({c for v in self.vlines if x0 <= v <= x1
                        and left < (c := to_column(v)) <= left + columns})
        chars[:, [c - left - 1 for c in marks]] = "│"
        owner[:, [c - left - 1 for c in marks]] = -1
        for i, line in enumerate(self.lines):
            self._raster(line, i + 1, chars, owner, (x0, x1), (y0, y1))
        styles = {0: base, -1: base + Style.parse(self.MARKER_STYLE)}
        styles.update({i + 1: base + Style.parse(ln.style) for i, ln in enumerate(self.lines)})

        y_ticks = self._y_ticks(y0, y1, rows, to_row)
        x_ticks, x_text = self._x_ticks(x0, x1, width, to_column)
        top, bottom = _frame_edges(width, left, x_ticks, marks)
        margin = Segment(" " * left, base)
        plot = [Strip([Segment(label.rjust(self.LABEL_WIDTH) + " ", tick), *segments], width)
                for label, segments in self._plot_rows(chars, owner, y_ticks, styles, axis)]
        return [Strip([margin, Segment(top, axis)], width), *plot,
                Strip([margin, Segment(bottom, axis)], width),
                Strip([Segment(x_text, tick)], width)]

    @staticmethod
    def _plot_rows(chars: npt.NDArray[np.str_], owner: IntArray, y_ticks: dict[int, str],
                   styles: dict[int, Style], axis: Style) -> list[tuple[str, list[Segment]]]:
        """Each plot row's y label and its segments: the frame's sides (with a tick where
        the row has a label) and one segment per run of cells of the same owner."""
        rows, columns = chars.shape
        texts = np.ascontiguousarray(chars).view(f"<U{columns}")[:, 0].tolist()
        # A blank cell looks the same in any series' colour: blanks join the run before them
        # (the first ones the run after), so a row is cut only where the series drawn changes:
        # a few segments per row instead of two per dot, and Textual's cost is per segment.
        cols = np.arange(columns)
        last = np.maximum.accumulate(np.where(owner != 0, cols, -1), axis=1)
        first = np.minimum.accumulate(np.where(owner != 0, cols, columns)[:, ::-1], axis=1)
        take = np.where(last >= 0, last, np.minimum(first[:, ::-1], columns - 1))
        owner = np.take_along_axis(owner, take, axis=1)
        cuts: list[list[int]] = [[0] for _ in range(rows)]
        changed_r, changed_c = np.nonzero(owner[:, 1:] != owner[:, :-1])
        for r, c in zip(changed_r.tolist(), changed_c.tolist()):
            cuts[r].append(c + 1)
        owners = owner.tolist()
        out = []
        for r in range(rows):
            label = y_ticks.get(r + 1, "")
            text = texts[r].ljust(columns)  # numpy drops trailing NULs, never spaces
            row_cuts, row_owners = cuts[r] + [columns], owners[r]
            out.append((label, [
                Segment(HEAVY[UP | DOWN | LEFT] if label else HEAVY[UP | DOWN], axis),
                *(Segment(text[a:b], styles[row_owners[a]])
                  for a, b in zip(row_cuts[:-1], row_cuts[1:])),
                Segment(HEAVY[UP | RIGHT | DOWN] if label else HEAVY[UP | DOWN], axis)]))
        return out

    def _raster(self, line: Line, index: int, chars: npt.NDArray[np.str_],
                owner: IntArray, xs: tuple[float, float], ys: tuple[float, float]) -> None:
        """Draw one series over the cells (its cells replace what was there)."""
        rows, columns = chars.shape
        dots = line.dots
        width, height = columns * dots.width, rows * dots.height
        x, y = line.x, line.y
        if len(x) > width:  # one point per dot column shows all the cells can
            x, y = _downsample(x, y, width)
        n = min(len(x), len(y))
        if not n:
            return
        fx = (x[:n] - xs[0]) / (xs[1] - xs[0]) * (width - 1)
        fy = (ys[1] - y[:n]) / (ys[1] - ys[0]) * (height - 1)
        px, py = line_dots(fx, fy, width, height)
        codes = cell_codes(px, py, dots, columns, rows)
        drawn = codes > 0
        chars[drawn] = _CHARS[dots.name][codes[drawn]]
        owner[drawn] = index

    def _y_ticks(self, y0: float, y1: float, rows: int,
                 to_row: Callable[[float], int]) -> dict[int, str]:
        """Row -> label of the y ticks: about one every other row, the first of a row kept."""
        ticks = [t for t in self.y_axis.get_ticks(y0, y1, max(2, min(8, rows // 2)))
                 if y0 - 1e-9 * abs(y1 - y0) <= t <= y1 + 1e-9 * abs(y1 - y0)]
        out: dict[int, str] = {}
        for t, label in zip(ticks, self.y_axis.get_labels_for_ticks(ticks)):
            out.setdefault(to_row(t), short_number(label, t, self.LABEL_WIDTH))
        return out

    def _x_ticks(self, x0: float, x1: float, width: int,
                 to_column: Callable[[float], int]) -> tuple[list[int], str]:
        """The x ticks' columns and the line of their labels: as many ticks as fit with a
        space between labels (at most 8)."""
        for max_ticks in range(8, 0, -1):
            ticks = [t for t in self.x_axis.get_ticks(x0, x1, max_ticks)
                     if x0 - 1e-9 <= t <= x1 + 1e-9]
            placed, end = [], -1
            for t, label in zip(ticks, self.x_axis.get_labels_for_ticks(ticks)):
                c = to_column(t)
                start = min(max(c - (len(label) - 1) // 2, 0), width - len(label))
                if start <= end:
                    break
                placed.append((c, start, label))
                end = start + len(label)
            else:
                break
        text = [" "] * width
        for _, start, label in placed:
            text[start:start + len(label)] = label
        return sorted({c for c, _, _ in placed}), "".join(text)

