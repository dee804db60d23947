"""Source health for the status line: what each collector is doing, how fast, how late.

The dashboard takes any callable returning a list of `SourceHealth` (or dicts with the same
keys), so a caller can report sources however it likes. `SourceMonitor` builds one around the
collectors that `collectors/runner.run_sources` runs: it wraps each source so the records it
hands to the sink are counted per source, without the collectors knowing about the dashboard.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, Literal

State = Literal["starting", "connected", "reconnecting", "stopped", "failed"]

RATE_WINDOW_S: Final = 10.0
# A source whose error count rose this recently, with nothing ingested since, is retrying.
RECONNECT_GRACE_S: Final = 5.0


@dataclass(frozen=True)
class SourceHealth:
    name: str
    state: str = "connected"
    missed: int = 0                  # rollouts the source could not capture (poller)
    rate: float | None = None        # records per second over the last seconds
    lag_s: float | None = None       # now - time of the newest record ingested
    last_update: float | None = None  # epoch seconds of the last ingest
    detail: str = ""                 # e.g. the error of a failed source


HealthProvider = Callable[[], Sequence["SourceHealth | Mapping[str, Any]"]]

_FIELDS = {f.name for f in fields(SourceHealth)}


def as_health(item: SourceHealth | Mapping[str, Any]) -> SourceHealth:
    if isinstance(item, SourceHealth):
        return item
    known = {k: v for k, v in item.items() if k in _FIELDS}
    if "lag" in item and "lag_s" not in known:
        known["lag_s"] = item["lag"]
    return SourceHealth(**known)


class _Counter:
    def __init__(self, name: str, clock: Callable[[], float]) -> None:
        self.name = name
        self.clock = clock
        self.state: str = "starting"
        self.detail = ""
        self.events: deque[tuple[float, int]] = deque()
        self.last_update: float | None = None
        self.newest_ts: float | None = None
        self.errors_seen = 0
        self.error_at: float | None = None
        self.lock = threading.Lock()

    def add(self, n: int, newest: float | None) -> None:
        now = self.clock()
        with self.lock:
            self.events.append((now, n))
            self.last_update = now
            if newest is not None:
                self.newest_ts = max(newest, self.newest_ts or newest)

    def rate(self, now: float) -> float:
        with self.lock:
            while self.events and self.events[0][0] < now - RATE_WINDOW_S:
                self.events.popleft()
            return sum(n for _, n in self.events) / RATE_WINDOW_S


class _Watched:
    """A collector source whose records are counted on their way to the sink."""

    def __init__(self, inner: Any, counter: _Counter) -> None:
        self.inner = inner
        self.counter = counter

    @property
    def source(self) -> str:
        return str(self.inner.source)

    def run(self, sink: Callable[[Any], None], stop: threading.Event,
            get_cursor: Callable[[str], str | None] | None = None) -> None:
        counter = self.counter

        def counted(records: Any) -> None:
            sink(records)
            decisions = getattr(records, "decisions", ())
            newest = max((d.ts for d in decisions), default=None)
            counter.add(len(records), newest)

        counter.state = "connected"
        try:
            self.inner.run(counted, stop, get_cursor)
        except BaseException as exc:
            counter.state, counter.detail = "failed", str(exc) or type(exc).__name__
            raise
        counter.state = "stopped"


class SourceMonitor:
    """Wrap sources with `wrap` before handing them to `run_sources`; call the monitor for
    their health."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._watched: list[_Watched] = []

    def wrap(self, source: Any) -> _Watched:
        watched = _Watched(source, _Counter(str(source.source), self.clock))
        self._watched.append(watched)
        return watched

    def __call__(self) -> list[SourceHealth]:
        now = self.clock()
        out = []
        for w in self._watched:
            c = w.counter
            stats = getattr(w.inner, "stats", None)
            errors = int(getattr(stats, "errors", 0) or 0)
            if errors > c.errors_seen:
                c.errors_seen, c.error_at = errors, now
            state = c.state
            if (state == "connected" and c.error_at is not None
                    and now - c.error_at < RECONNECT_GRACE_S
                    and (c.last_update is None or c.last_update < c.error_at)):
                state = "reconnecting"
            out.append(SourceHealth(
                name=c.name, state=state, missed=int(getattr(stats, "missed", 0) or 0),
                rate=c.rate(now), lag_s=None if c.newest_ts is None else now - c.newest_ts,
                last_update=c.last_update, detail=c.detail))
        return out
