"""Text for numbers, times and small trends, shared by the views (plain functions, no Textual)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Sequence

from ..analysis.alerts.engine import to_epoch
from ..records.durations import parse_positive_seconds

BARS = "▁▂▃▄▅▆▇█"


def num(value: int | float | None) -> str:
    if value is None:
        return "–"
    return f"{int(value):,}"


def pct(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * 100:.{digits}f}%"


def dec(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def us(value: float | None) -> str:
    """A latency given in microseconds, in the unit that keeps it short."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value >= 1_000_000:
        return f"{value / 1e6:.2f}s"
    if value >= 1_000:
        return f"{value / 1e3:.1f}ms"
    return f"{value:.0f}µs"


# Stored timestamps are naive UTC; one conversion for the whole tool.
epoch = to_epoch


def utc_naive(epoch_s: float) -> datetime:
    """Epoch seconds as the naive UTC datetime the stored TIMESTAMP columns hold."""
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).replace(tzinfo=None)


def clock(value: datetime | float | None, with_date: bool = False) -> str:
    """A stored time as UTC text (the data's own zone, so views agree with SQL output)."""
    e = epoch(value)
    if e is None:
        return "–"
    t = datetime.fromtimestamp(e, tz=timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "<1s"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.0f}d"


def duration(text: str) -> float:
    """A positive duration (records/durations.py: `90s`, `30m`, `1h30m`, `1d`) as seconds."""
    return parse_positive_seconds(text)


def spark(values: Sequence[float | None], width: int | None = None, lo: float = 0.0,
          hi: float = 1.0) -> str:
    """A one-line trend on a fixed scale (rates: 0-100%), so rows compare with each other and
    a constant reads as its level: 0 is a blank, anything above it at least the lowest bar,
    `hi` the full bar. With `width`, the values are averaged into that many buckets (the
    newest rounds stay at the right edge)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    if width and len(vals) > width:
        n = len(vals)
        buckets = [vals[i * n // width:(i + 1) * n // width] for i in range(width)]
        vals = [sum(b) / len(b) for b in buckets]
    return "".join(bar(v, lo, hi) for v in vals)


def bar(value: float, lo: float = 0.0, hi: float = 1.0) -> str:
    """One block of a fixed-scale sparkline (see spark)."""
    if not hi > lo:
        raise ValueError(f"empty scale {lo}..{hi}")
    share = (value - lo) / (hi - lo)
    if share <= 0:
        return " "
    return BARS[min(len(BARS), math.ceil(share * len(BARS) - 1e-9)) - 1]


def middle(text: str, width: int) -> str:
    """`text` in at most `width` cells with "…" in the middle: a run id's prefix (the demo)
    and its end (the time it started) both stay readable."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]
