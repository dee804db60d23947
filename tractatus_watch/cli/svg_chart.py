"""One research answer's chart as inline SVG: no script, no font or style sheet to fetch, so
the HTML report opens anywhere, offline, and prints as it shows."""

from __future__ import annotations

import math
from html import escape
from typing import Final

from ..monitor.research import Chart, Series

WIDTH: Final = 720
HEIGHT: Final = 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 30, 50
# Colour-blind safe (Okabe-Ito), one per series, in order.
COLOURS: Final = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


class _Frame:
    """Data coordinates onto the plot area."""

    def __init__(self, xs: list[float], ys: list[float]) -> None:
        self.x0, self.x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
        self.y0, self.y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
        if self.x1 == self.x0:
            self.x0, self.x1 = self.x0 - 0.5, self.x1 + 0.5
        pad = (self.y1 - self.y0) * 0.08 or abs(self.y0) * 0.1 or 1.0
        self.y0, self.y1 = self.y0 - pad, self.y1 + pad

    def px(self, x: float) -> float:
        return _LEFT + (x - self.x0) / (self.x1 - self.x0) * (WIDTH - _LEFT - _RIGHT)

    def py(self, y: float) -> float:
        return HEIGHT - _BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (HEIGHT - _TOP - _BOTTOM)


def _values(chart: Chart) -> tuple[list[float], list[float]]:
    xs = [x for s in chart.series for x, y in zip(s.x, s.y) if _finite(y)]
    ys = [v for s in chart.series for part in (s.y, s.lo, s.hi) for v in part if _finite(v)]
    ys += [y for _, y in chart.hlines]
    xs += [x for _, x in chart.vlines]
    return [float(x) for x in xs], [float(y) for y in ys if y is not None]


def _floats(values: tuple[float | None, ...]) -> list[float]:
    return [float(v) if v is not None else math.nan for v in values]


def _runs(y: list[float]) -> list[list[int]]:
    """Index runs of consecutive finite points (a gap in the data breaks the line)."""
    out: list[list[int]] = []
    cur: list[int] = []
    for i, v in enumerate(y):
        if math.isfinite(v):
            cur.append(i)
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def render_svg(chart: Chart) -> str:
    """The chart as one <svg> element; a chart without data says so in its plot area."""
    xs, ys = _values(chart)
    f = _Frame(xs, ys)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="{WIDTH}" height="{HEIGHT}" role="img" class="chart" '
             f'data-points="{chart.points}" aria-label="{escape(chart.title)}">',
             f'<title>{escape(chart.title)}</title>',
             f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="14" '
             f'font-family="sans-serif">{escape(chart.title)}</text>']
    left, right, bottom = _LEFT, WIDTH - _RIGHT, HEIGHT - _BOTTOM
    parts.append(f'<rect x="{left}" y="{_TOP}" width="{right - left}" height="{bottom - _TOP}" '
                 'fill="none" stroke="#888"/>')
    for t in _ticks(f.y0, f.y1):
        y = f.py(t)
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                     f'font-family="sans-serif">{_label(t)}</text>')
    if chart.kind == "intervals":
        for i, name in enumerate(chart.labels):
            parts.append(f'<text x="{f.px(i):.1f}" y="{bottom + 16}" text-anchor="middle" '
                         f'font-size="11" font-family="sans-serif">{escape(name)}</text>')
    else:
        for t in _ticks(f.x0, f.x1, 6):
            parts.append(f'<text x="{f.px(t):.1f}" y="{bottom + 16}" text-anchor="middle" '
                         f'font-size="11" font-family="sans-serif">{_label(t)}</text>')
    parts.append(f'<text x="{(left + right) / 2}" y="{HEIGHT - 10}" text-anchor="middle" '
                 f'font-size="12" font-family="sans-serif">{escape(chart.x_label)}</text>'
                 f'<text transform="translate(16,{(bottom + _TOP) / 2}) rotate(-90)" '
                 f'text-anchor="middle" font-size="12" font-family="sans-serif">'
                 f'{escape(chart.y_label)}</text>')
    for k, (label, y) in enumerate(chart.hlines):
        py = f.py(y)
        # Labels spread along the line: close reference values do not print over each other.
        lx = right - 4 - k * 90
        parts.append(f'<line x1="{left}" x2="{right}" y1="{py:.1f}" y2="{py:.1f}" stroke="#555" '
                     f'stroke-dasharray="4 3"/><text x="{lx}" y="{py - 4:.1f}" '
                     f'text-anchor="end" font-size="10" font-family="sans-serif">'
                     f'{escape(label)}</text>')
    for label, x in chart.vlines:
        px = f.px(x)
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{_TOP}" y2="{bottom}" stroke="#555" '
                     f'stroke-dasharray="2 2"/><text x="{px + 4:.1f}" y="{_TOP + 12}" '
                     f'font-size="10" font-family="sans-serif">{escape(label)}</text>')
    for k, s in enumerate(chart.series):
        colour = COLOURS[k % len(COLOURS)]
        parts.append(_series(chart, s, f, colour))
        parts.append(f'<text x="{left + 8}" y="{_TOP + 14 + 14 * k}" font-size="11" '
                     f'font-family="sans-serif" fill="{colour}">{escape(s.name)}</text>')
    if not chart.points:
        parts.append(f'<text x="{(left + right) / 2}" y="{(bottom + _TOP) / 2}" '
                     'text-anchor="middle" font-size="13" font-family="sans-serif" '
                     'fill="#888">no data in this experiment</text>')
    parts.append("</svg>")
    return "".join(parts)


def _series(chart: Chart, s: Series, f: _Frame, colour: str) -> str:
    out: list[str] = []
    x, y = [float(v) for v in s.x], _floats(s.y)
    nan = [math.nan] * len(y)
    lo = _floats(s.lo) if len(s.lo) == len(y) else nan
    hi = _floats(s.hi) if len(s.hi) == len(y) else nan
    if chart.kind == "intervals":
        for i in range(len(y)):
            if not math.isfinite(y[i]):
                continue
            if math.isfinite(lo[i]) and math.isfinite(hi[i]):
                out.append(f'<line x1="{f.px(x[i]):.1f}" x2="{f.px(x[i]):.1f}" '
                           f'y1="{f.py(lo[i]):.1f}" y2="{f.py(hi[i]):.1f}" stroke="{colour}" '
                           'stroke-width="2"/>')
            out.append(f'<circle class="point" cx="{f.px(x[i]):.1f}" cy="{f.py(y[i]):.1f}" '
                       f'r="4" fill="{colour}"/>')
        return "".join(out)
    for run in _runs(y):
        if len(run) > 1 and all(math.isfinite(lo[i]) and math.isfinite(hi[i]) for i in run):
            edge = ([f"{f.px(x[i]):.1f},{f.py(hi[i]):.1f}" for i in run]
                    + [f"{f.px(x[i]):.1f},{f.py(lo[i]):.1f}" for i in reversed(run)])
            out.append(f'<polygon points="{" ".join(edge)}" fill="{colour}" '
                       'fill-opacity="0.18" stroke="none"/>')
        if len(run) > 1:
            pts = " ".join(f"{f.px(x[i]):.1f},{f.py(y[i]):.1f}" for i in run)
            out.append(f'<polyline class="line" points="{pts}" fill="none" stroke="{colour}" '
                       'stroke-width="1.8"/>')
        else:
            out.append(f'<circle class="point" cx="{f.px(x[run[0]]):.1f}" '
                       f'cy="{f.py(y[run[0]]):.1f}" r="3.5" fill="{colour}"/>')
    return "".join(out)
