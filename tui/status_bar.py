"""The status line: sources (state, missed, ingest rate, lag, last update), data freshness,
refresh. The app feeds it a `Status` after every refresh and key that changes one of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text

from . import fmt
from ..monitor.health import SourceHealth
from .widgets import TextLine

ICONS = {"connected": ("●", "green"), "reconnecting": ("◐", "yellow"),
         "starting": ("○", "yellow"), "stopped": ("■", "dim")}
FAILED = ("✖", "bold red")


@dataclass(frozen=True)
class Status:
    now: float                        # the app's clock
    paused: bool
    interval: float                   # seconds between refreshes
    refreshed: bool                   # at least one refresh has completed
    sources: Sequence[SourceHealth] = ()
    ingest_rows: int | None = None    # rows the live writer committed (live, no sources)
    store: str | None = None          # the store read (history only; None when live)
    last_ts: datetime | None = None   # the newest data of the run shown
    error: str = ""                   # the last refresh's error


class StatusBar(TextLine):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._ingest: tuple[float, int] | None = None  # the last (time, committed rows)
        self._ingest_rate: float | None = None

    def show(self, s: Status) -> None:
        parts: list[Text] = []
        if s.paused:
            parts.append(Text(" PAUSED ", style="reverse bold yellow"))
        parts.extend(_source(h) for h in s.sources)
        if s.ingest_rows is not None:
            parts.append(self._ingest_part(s.now, s.ingest_rows))
        if s.store is not None:
            parts.append(Text(s.store))
            if s.last_ts is not None:
                parts.append(Text(f"data to {fmt.clock(s.last_ts, True)[5:]}"))
        elif not s.sources and s.last_ts is not None:
            parts.append(Text(f"lag {fmt.ago(s.now - (fmt.epoch(s.last_ts) or s.now))}"))
        refresh = f"updated {fmt.clock(s.now)} " if s.refreshed else ""
        parts.append(Text(f"{refresh}every {s.interval:g}s", style="dim"))
        if s.error:
            parts.append(Text(s.error[:60], style="bold red"))
        self.set(Text(" │ ", style="dim").join(parts))

    def _ingest_part(self, now: float, rows: int) -> Text:
        if self._ingest is not None and now > self._ingest[0]:
            self._ingest_rate = (rows - self._ingest[1]) / (now - self._ingest[0])
        self._ingest = (now, rows)
        part = Text(f"ingest {fmt.num(rows)} rows")
        if self._ingest_rate is not None:
            part.append(f" {self._ingest_rate:,.0f}/s")
        return part


def _source(h: SourceHealth) -> Text:
    icon, style = ICONS.get(h.state, FAILED)
    part = Text.assemble((f"{icon} ", style), f"{_short(h.name)} {h.state}")
    if h.missed:
        part.append(f" missed {h.missed:,}", style="yellow")
    if h.rate is not None:
        part.append(f" {h.rate:,.0f}/s")
    if h.lag_s is not None:
        part.append(f" lag {fmt.ago(h.lag_s)}")
    if h.last_update is not None:
        part.append(f" last {fmt.clock(h.last_update)}", style="dim")
    if h.detail:
        part.append(f" {h.detail[:40]}", style="red")
    return part


def _short(name: str, width: int = 32) -> str:
    """A source name for the status line: the end of a long path or URL matters most."""
    return name if len(name) <= width else "…" + name[-(width - 1):]
