"""The spool reader: ingests the NDJSON segments that `governance.spool.SpoolWriter` publishes.

A segment is written under a temporary name (`.…tmp`) and renamed when complete, so every
`seg-<time_ns:20>-<pid>-<seq:6>.ndjson` we see is whole. Names sort in time order; the cursor is
the name of the last segment ingested and commits in the same transaction as that segment's rows,
so after a crash ingestion resumes right after it (exactly once). Every row also has a natural
key, so reading a segment twice stores nothing twice.

Names are fixed when a segment opens and published up to `max_age_s` later, so two processes
can publish out of name order. Segments younger than `settle_s` are left for the next pass, and
a segment that shows up with a name below the cursor while we run is still ingested (and logged),
so neither case loses data.

Retention (optional) deletes segments older than `retention_s` once the *committed* cursor in
the store is past them; never before.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Final

from ..governance.events import (
    Decision, Event, Quarantined, Reward, RolloutTransition, ValidationError, parse_ts,
)
from .sink import Records, Sink

log = logging.getLogger(__name__)

# A record a producer already judged bad travels as an event of this type (the spool has no
# quarantine record type) and is stored in quarantine, not in events.
QUARANTINE_EVENT: Final = "tractatus_watch.quarantine"
SEGMENT: Final = re.compile(r"^seg-(?P<ns>\d{20})-(?P<pid>\d+)-(?P<seq>\d{6})\.ndjson$")
MAX_RAW: Final = 65_536


def segment_time(name: str) -> float | None:
    m = SEGMENT.match(name)
    return int(m["ns"]) / 1e9 if m else None


def _event(data: Any) -> Event:
    if not isinstance(data, dict):
        raise ValidationError("event", "expected an object")
    for key in ("event_id", "event_type"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValidationError(key, "missing")
    return Event(event_id=data["event_id"], event_type=data["event_type"],
                 ts=parse_ts(data.get("ts")), rollout_id=str(data.get("rollout_id") or ""),
                 payload=data.get("payload"), run_id=str(data.get("run_id") or ""))


def parse_line(obj: Any, out: Records, where: str, source: str, raw: str) -> None:
    """Append the records of one spool line to `out`; bad lines (or bad items of a packed
    `decisions` line) go to quarantine with `where` (segment:line)."""

    def bad(reason: str, text: str = raw) -> None:
        out.quarantined.append(Quarantined(source=source, reason=f"{where}: {reason}",
                                           raw=text[:MAX_RAW], ts=time.time()))

    if not isinstance(obj, dict):
        bad("expected an object")
        return
    kind, data = obj.get("type"), obj.get("data")
    try:
        if kind == "decision":
            out.decisions.append(Decision.from_payload(data))
        elif kind == "decisions":
            if not isinstance(data, list):
                raise ValidationError("data", "expected a list of decisions")
            for i, item in enumerate(data):
                try:
                    out.decisions.append(Decision.from_payload(item))
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    bad(f"data[{i}].{exc}", json.dumps(item, default=str))
        elif kind == "reward":
            out.rewards.append(Reward.from_payload(data))
        elif kind == "rollout":
            out.rollouts.append(RolloutTransition.from_payload(data))
        elif kind == "event" and isinstance(data, dict) and \
                data.get("event_type") == QUARANTINE_EVENT:
            p = data.get("payload") if isinstance(data.get("payload"), dict) else {}
            out.quarantined.append(Quarantined(
                source=str(p.get("source") or source), reason=str(p.get("reason") or where),
                raw=str(p.get("raw") or "")[:MAX_RAW], ts=time.time()))
        elif kind == "event":
            out.events.append(_event(data))
        else:
            bad(f"type: unknown record type {kind!r}")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # Odd input never stops the reader: whatever fails to parse is quarantined.
        bad(str(exc))


@dataclass
class SpoolStats:
    segments: int = 0
    lines: int = 0
    records: int = 0
    quarantined: int = 0
    late: int = 0
    deleted: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class SpoolReader:
    folder: Path
    # Segment names carry the time their segment *opened*; SpoolWriter publishes it up to
    # max_age_s (2 s by default) later. Waiting longer than that before reading a name means
    # no segment of another process can still appear below the cursor.
    settle_s: float = 3.0
    retention_s: float | None = None
    batch_records: int = 20_000
    poll_s: float = 0.2
    stats: SpoolStats = field(default_factory=SpoolStats)
    _last: str | None = field(default=None, init=False)
    _listed: set[str] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).expanduser().resolve()

    @property
    def source(self) -> str:
        return f"spool:{self.folder}"

    def resume(self, committed: str | None) -> None:
        """Start after the stored cursor (None: from the first segment)."""
        self._last = committed or None
        self._listed = None

    def _pending(self) -> list[str]:
        try:
            names = [n for n in os.listdir(self.folder) if SEGMENT.match(n)]
        except FileNotFoundError:
            return []
        horizon = time.time() - self.settle_s
        todo: list[str] = []
        listed = set(names)
        for name in names:
            t = segment_time(name)
            if t is None or t > horizon:
                listed.discard(name)  # not yet settled: consider it again next time
                continue
            if self._last is None or name > self._last:
                todo.append(name)
            elif self._listed is not None and name not in self._listed:
                log.warning("spool: segment %s appeared after later ones were read; ingesting",
                            name)
                self.stats.late += 1
                todo.append(name)
        self._listed = listed
        return sorted(todo)

    def _read_segment(self, name: str, out: Records) -> bool:
        try:
            with open(self.folder / name, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            log.warning("spool: segment %s vanished before it was read", name)
            return False
        for lineno, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            self.stats.lines += 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                out.quarantined.append(Quarantined(
                    source=self.source, reason=f"{name}:{lineno}: invalid JSON: {exc.msg}",
                    raw=line[:MAX_RAW], ts=time.time()))
                continue
            parse_line(obj, out, f"{name}:{lineno}", self.source, line)
        return True

    def poll_once(self, sink: Sink) -> int:
        """Ingest every settled segment not read yet; returns how many."""
        done = 0
        out = Records()
        for name in self._pending():
            before_q = len(out.quarantined)
            before = len(out)
            if self._read_segment(name, out):
                done += 1
                self.stats.segments += 1
                self.stats.records += len(out) - before
                self.stats.quarantined += len(out.quarantined) - before_q
            if self._last is None or name > self._last:
                self._last = name
            out.cursor = (self.source, self._last)
            if len(out) >= self.batch_records:
                out.stats = self.stats.as_dict()
                sink(out)
                out = Records()
        if out.cursor is not None:
            out.stats = self.stats.as_dict()
            sink(out)
        return done

    def apply_retention(self, committed: str | None) -> int:
        """Delete segments older than retention_s that the committed cursor is past."""
        if self.retention_s is None or not committed:
            return 0
        cutoff = time.time() - self.retention_s
        removed = 0
        for name in os.listdir(self.folder):
            if not SEGMENT.match(name) or name > committed:
                continue
            path = self.folder / name
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        self.stats.deleted += removed
        return removed

    def run(self, sink: Sink, stop: threading.Event,
            get_cursor: Callable[[str], str | None] | None = None) -> None:
        """Follow the folder until `stop` is set; ends with a last pass."""
        self.resume(get_cursor(self.source) if get_cursor else None)
        last_retention = 0.0
        while not stop.is_set():
            n = self.poll_once(sink)
            now = time.monotonic()
            if self.retention_s is not None and get_cursor and now - last_retention > 5.0:
                self.apply_retention(get_cursor(self.source))
                last_retention = now
            if n == 0:
                stop.wait(self.poll_s)
        self.poll_once(sink)
