"""The spool reader: ingests the NDJSON segments that `governance.spool.SpoolWriter` publishes.

A segment is written under a temporary name (`.…tmp`) and renamed when complete, so every
`seg-<time_ns:20>-<pid>-<seq:6>.ndjson` we see is whole. Names sort in time order, but a
segment can appear with a name below ones already read: two processes publish out of name
order, a producer's clock is behind, or a segment is copied in (or published) while `collect`
is down. So the cursor is the set of segments ingested, not a name (`SpoolCursor`):

- `mark` and `mark_ctime_ns`: every segment named <= `mark` whose inode changed (`st_ctime`:
  the kernel sets it at the rename that publishes a segment; no file API can set it back) at or
  before `mark_ctime_ns` is ingested;
- `seen`: the other segments ingested (names above the mark, and names below it that appeared
  later than `mark_ctime_ns`);
- `part`: the segment being read, how many bytes of it are ingested and the next line number.

The mark advances over the prefix of listed names that are all done, to a ctime just below
when the folder was listed (`CTIME_MARGIN_NS`, 1 s, below it, for timestamp granularity and the
listing's own duration); a segment renamed in after that listing has a later ctime, so it is
read however low its name. This assumes file times come from a clock within that second of
ours (a local disk, or an NTP-synced file server); while running, a lagging file server is
measured (a new name with a ctime before the previous listing) and the horizon moved back by
that much, and any name not listed before is read whatever its ctime. `seen` therefore only
holds the segments renamed within about a second of the last listing: the cursor stays a few
hundred bytes however many segments pass (a burst of N segments copied in at once is carried
by name until a pass a second later folds it into the mark and commits that, if it saves at
least COMPACT_SEEN names).
An old cursor (a bare segment name) means "everything up to this name", as it did.
The cursor commits in the same transaction as the rows it covers, so ingestion is exactly once
across crashes; every row also has a natural key, so a segment read twice stores nothing twice
(only its quarantined lines would be quarantined again). A segment whose inode changes after it
was ingested (`chmod`, `touch`, rewritten in place) is read again on the next start, for that
reason: rather twice than never.

A segment is streamed (`collectors.lines`): lines are split on b"\n" only, a line over
`max_line_bytes` (8 MiB) is quarantined with its length and a 64 KiB head and skipped without
being buffered, and records go to the sink every `batch_records` records or `batch_bytes`
bytes with a cursor whose `part` says how far into the segment they reach, so a crash halfway
through a big segment resumes there, without duplicates. A line that is not valid UTF-8 is
quarantined with its position and its text with each bad byte written as \\xNN (nothing is
replaced silently); the reader goes on with the next line.

Only regular files are read: a FIFO, socket, device, directory or symlink named like a segment
is skipped with one warning per name (our writer never makes one; following a symlink could
read a segment twice or a file outside the folder), and opening never blocks
(`O_NONBLOCK | O_NOFOLLOW`, then `fstat`). A file that cannot be opened is skipped the same way
and read once it changes (its ctime moves past the mark).

Segments younger than `settle_s` (by the earlier of their name's time and their ctime) are left
for the next pass, so segments of concurrent processes are mostly read in time order; that is
only ordering now, not correctness.

Retention (optional) deletes regular segments older than `retention_s` that the *committed*
cursor in the store says were ingested; never before, never the one being read, never anything
that is not a regular file.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Final, Mapping

from ..records.events import Quarantined
from ..records.spool_format import MAX_RAW, SEGMENT, parse_line, segment_time
from .lines import MAX_LINE_BYTES, LineReader, decode
from ..records.delivery import Records, Sink

log = logging.getLogger(__name__)

CTIME_MARGIN_NS: Final = 1_000_000_000
CURSOR_VERSION: Final = 2
READ_BUFFER: Final = 1024 * 1024


@dataclass
class SpoolCursor:
    """Which segments of a folder are ingested (see the module docstring)."""

    mark: str | None = None
    mark_ctime_ns: int | None = None  # None with a mark: an old cursor, whatever the ctime
    seen: set[str] = field(default_factory=set)
    part: tuple[str, int, int] | None = None  # (name, bytes ingested, next line number)

    def done(self, name: str, ctime_ns: int) -> bool:
        if self.part is not None and name == self.part[0]:
            return False
        if name in self.seen:
            return True
        return (self.mark is not None and name <= self.mark
                and (self.mark_ctime_ns is None or ctime_ns <= self.mark_ctime_ns))

    def encode(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, "mark": self.mark,
                           "mark_ctime_ns": self.mark_ctime_ns, "seen": sorted(self.seen),
                           "part": list(self.part) if self.part else None},
                          separators=(",", ":"))

    @classmethod
    def parse(cls, value: str | None) -> SpoolCursor:
        """A stored cursor: ours, an old one (the last segment name read) or None."""
        if not value:
            return cls()
        if SEGMENT.match(value):
            return cls(mark=value)
        try:
            d = json.loads(value)
            if not isinstance(d, dict) or d.get("v") != CURSOR_VERSION:
                raise ValueError("unknown version")
            mark, ctime, seen, part = d["mark"], d["mark_ctime_ns"], d["seen"], d["part"]
            if not (mark is None or isinstance(mark, str)) or \
                    not (ctime is None or isinstance(ctime, int)) or \
                    not all(isinstance(n, str) for n in seen):
                raise ValueError("bad field")
            return cls(mark=mark, mark_ctime_ns=ctime, seen=set(seen),
                       part=(str(part[0]), int(part[1]), int(part[2])) if part else None)
        except (ValueError, TypeError, KeyError, IndexError):
            raise ValueError(f"spool cursor not understood: {value[:120]!r}") from None

    def advance(self, ctimes: Mapping[str, int], horizon_ns: int,
                skipped: set[str] | frozenset[str] = frozenset()) -> None:
        """Re-express what is done more compactly, given a listing (name -> ctime, ns) such that
        anything renamed in after it has a ctime above `horizon_ns`: the mark moves over the
        longest prefix of listed names that are done (or `skipped`, special files that are never
        read), and names no longer listed are forgotten. What counts as done among the listed
        names does not change."""
        if self.part is not None and self.part[0] not in ctimes:
            self.part = None
        self.seen &= ctimes.keys()
        names = sorted(ctimes)
        prefix = 0
        for name in names:
            if name not in skipped and not self.done(name, ctimes[name]):
                break
            prefix += 1
        if prefix == 0:
            return
        if self.mark is not None and prefix < len(names) and names[prefix] <= self.mark:
            return  # a name below the mark is still unread: a new mark_ctime could hide it
        recent = {n for n in names[:prefix] if n not in skipped and ctimes[n] > horizon_ns}
        last = names[prefix - 1]
        self.mark = last if self.mark is None else max(last, self.mark)
        self.mark_ctime_ns = horizon_ns
        self.seen = {n for n in self.seen if n > self.mark} | recent


@dataclass(frozen=True, slots=True)
class _Entry:
    ctime_ns: int
    mtime: float
    kind: str


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISLNK, "symlink"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


REGULAR: Final = "regular file"
# Names whose `seen` shrinks by this much at the end of a quiet pass commit a cursor of their own.
COMPACT_SEEN: Final = 64


@dataclass
class SpoolStats:
    segments: int = 0
    lines: int = 0
    records: int = 0
    quarantined: int = 0
    late: int = 0
    deleted: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class SpoolReader:
    folder: Path
    # Segment names carry the time their segment *opened*; SpoolWriter publishes it up to
    # max_age_s (2 s by default) later. Waiting a little longer before reading keeps segments of
    # concurrent writers in time order (correctness does not depend on it: see SpoolCursor).
    settle_s: float = 3.0
    retention_s: float | None = None
    batch_records: int = 20_000
    batch_bytes: int = 16 * 1024 * 1024
    max_line_bytes: int = MAX_LINE_BYTES
    poll_s: float = 0.2
    stats: SpoolStats = field(default_factory=SpoolStats)
    max_buffered: int = field(default=0, init=False)  # most bytes ever held for one line
    _cursor: SpoolCursor = field(default_factory=SpoolCursor, init=False)
    _entries: dict[str, _Entry] | None = field(default=None, init=False)
    _skipped: set[str] = field(default_factory=set, init=False)
    _warned: set[str] = field(default_factory=set, init=False)
    _highest: str = field(default="", init=False)
    _out: Records = field(default_factory=Records, init=False)
    _out_bytes: int = field(default=0, init=False)
    _dirty: bool = field(default=False, init=False)
    _listing: tuple[dict[str, int], int] = field(default=({}, 0), init=False)
    _skew_ns: int = field(default=0, init=False)  # how far file ctimes lag our clock, if they do
    _listed_at: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).expanduser().resolve()

    @property
    def source(self) -> str:
        return f"spool:{self.folder}"

    @property
    def cursor(self) -> SpoolCursor:
        return self._cursor

    def resume(self, committed: str | None) -> None:
        """Start from the stored cursor (None: nothing read yet)."""
        self._cursor = SpoolCursor.parse(committed)
        self._entries = None
        self._skipped, self._warned = set(), set()
        self._highest = max([self._cursor.mark or "", *self._cursor.seen])

    # --- the folder -----------------------------------------------------------------------------

    def _list(self) -> tuple[dict[str, _Entry], set[str]]:
        """The segment-named entries of the folder, and the names not listed last time (all of
        them on the first pass after resume)."""
        listed_at = time.time_ns()
        try:
            names = [n for n in os.listdir(self.folder) if SEGMENT.match(n)]
        except FileNotFoundError:
            names = []
        known = self._entries if self._entries is not None else {}
        entries: dict[str, _Entry] = {}
        for name in names:
            entry = known.get(name)
            if entry is None or name in self._skipped:  # a skipped file may have been fixed
                try:
                    st = os.lstat(self.folder / name)
                except FileNotFoundError:
                    continue
                fresh = _Entry(st.st_ctime_ns, st.st_mtime, _kind(st.st_mode))
                if entry is not None and fresh != entry:
                    self._skipped.discard(name)
                    self._warned.discard(name)
                entry = fresh
            entries[name] = entry
        if self._entries is None:
            new = set(entries)
        else:
            new = set(entries) - known.keys()
            self._measure_skew(entries, new)
        self._entries = entries
        self._skipped &= entries.keys()
        self._warned &= entries.keys()
        # Whatever is renamed in from now on has a later ctime than this (see the docstring).
        horizon = listed_at - CTIME_MARGIN_NS - self._skew_ns
        self._listing = ({n: e.ctime_ns for n, e in entries.items()}, horizon)
        self._listed_at = listed_at
        return entries, new

    def _measure_skew(self, entries: dict[str, _Entry], new: set[str]) -> None:
        """A name that was not in the previous listing was renamed in after it started, so its
        ctime should not be earlier; if it is, the folder's clock (a file server's) is behind
        ours, and the horizon keeps that much further back."""
        for name in new:
            lag = self._listed_at - entries[name].ctime_ns
            if lag > self._skew_ns:
                self._skew_ns = lag
                if lag > CTIME_MARGIN_NS:
                    log.warning("spool: file times in %s lag this clock by %.1f s", self.folder,
                                lag / 1e9)

    def _skip(self, name: str, why: str) -> None:
        self._skipped.add(name)
        if name not in self._warned:
            self._warned.add(name)
            self.stats.skipped += 1
            log.warning("spool: skipping %s: %s", name, why,
                        extra={"fields": {"segment": name, "folder": str(self.folder)}})

    def _pending(self, entries: dict[str, _Entry], new: set[str], first: bool) -> list[str]:
        horizon = time.time() - self.settle_s
        todo: list[str] = []
        for name, entry in entries.items():
            if entry.kind != REGULAR:
                self._skip(name, f"not a regular file ({entry.kind})")
                continue
            if name in self._skipped:
                continue
            # While we run, a name we had not listed before is new whatever its ctime says
            # (robust to clock steps); after a restart the ctime decides.
            if first or name not in new:
                if self._cursor.done(name, entry.ctime_ns):
                    continue
            elif name in self._cursor.seen:
                continue
            t = segment_time(name)
            if t is None or min(t, entry.ctime_ns / 1e9) > horizon:
                continue  # not settled yet: next pass
            todo.append(name)
        todo.sort()
        part = self._cursor.part
        if part is not None and part[0] in todo:  # finish what a previous run started
            todo.remove(part[0])
            todo.insert(0, part[0])
        return todo

    # --- one segment ----------------------------------------------------------------------------

    def _open(self, name: str) -> BinaryIO | None:
        try:
            fd = os.open(self.folder / name,
                         os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            log.warning("spool: segment %s vanished before it was read", name)
            return None
        except OSError as exc:
            self._skip(name, f"cannot open: {exc.strerror or exc}")
            return None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):  # swapped in since the listing
                self._skip(name, f"not a regular file ({_kind(mode)})")
                os.close(fd)
                return None
            return os.fdopen(fd, "rb", buffering=READ_BUFFER)
        except BaseException:
            os.close(fd)
            raise

    def _quarantine(self, reason: str, raw: str) -> None:
        self._out.quarantined.append(Quarantined(source=self.source, reason=reason,
                                                 raw=raw[:MAX_RAW], ts=time.time()))

    def _add_line(self, name: str, data: bytes, number: int, length: int,
                  too_long: bool) -> None:
        if not too_long and not data.strip():
            return
        self.stats.lines += 1
        out = self._out
        before, before_q = len(out), len(out.quarantined)
        where = f"{name}:{number}"
        text, error = decode(data)
        if too_long:
            self._quarantine(f"{where}: line too long: {length} bytes (limit "
                             f"{self.max_line_bytes}); its first bytes are kept", text)
        elif error is not None:
            self._quarantine(f"{where}: {error}", text)
        else:
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                self._quarantine(f"{where}: invalid JSON: {exc.msg}", text)
            except (ValueError, RecursionError) as exc:  # too deep, too many digits
                self._quarantine(f"{where}: invalid JSON: {str(exc) or 'nested too deep'}",
                                 text)
            else:
                parse_line(obj, out, where, self.source, text)
        self._out_bytes += min(length, self.max_line_bytes)
        self.stats.records += len(out) - before
        self.stats.quarantined += len(out.quarantined) - before_q

    def _full(self) -> bool:
        return len(self._out) >= self.batch_records or self._out_bytes >= self.batch_bytes

    def _read_segment(self, name: str, sink: Sink) -> bool:
        """Ingest one segment (from where a previous run stopped in it); False if it could
        not be read."""
        part = self._cursor.part
        offset, number = (part[1], part[2]) if part is not None and part[0] == name else (0, 1)
        fh = self._open(name)
        if fh is None:
            return False
        if name < self._highest:
            log.warning("spool: segment %s appeared after later ones were read; ingesting",
                        name)
            self.stats.late += 1
        lines = LineReader(fh, max_line=self.max_line_bytes, offset=offset, number=number)
        quarantined = self.stats.quarantined
        try:
            with fh:
                if offset:
                    fh.seek(offset)
                for line in lines:
                    self._add_line(name, line.data, line.number, line.length, line.too_long)
                    if self._full():
                        self._cursor.part = (name, line.end, line.number + 1)
                        self._emit(sink)
        except OSError as exc:
            # What was read stays; the rest of this file is not readable now.
            self.max_buffered = max(self.max_buffered, lines.max_buffered)
            self._skip(name, f"read failed at byte {lines.offset}: {exc.strerror or exc}")
            self._cursor.part = None
            self._dirty = True
            return False
        self.max_buffered = max(self.max_buffered, lines.max_buffered)
        if self.stats.quarantined > quarantined:
            log.warning("spool: %d record(s) of %s quarantined", self.stats.quarantined -
                        quarantined, name, extra={"fields": {"segment": name}})
        self._cursor.part = None
        self._cursor.seen.add(name)
        self._highest = max(self._highest, name)
        self.stats.segments += 1
        self._dirty = True
        if self._full():
            self._emit(sink)
        return True

    def _emit(self, sink: Sink) -> None:
        """Hand what was read to the sink, with the cursor that covers exactly that."""
        ctimes, horizon = self._listing
        self._cursor.advance(ctimes, horizon, self._skipped)
        out = self._out
        out.cursor = (self.source, self._cursor.encode())
        out.stats = self.stats.as_dict()
        self._out, self._out_bytes, self._dirty = Records(), 0, False
        sink(out)

    # --- passes ---------------------------------------------------------------------------------

    def poll_once(self, sink: Sink) -> int:
        """Ingest every settled segment not read yet; returns how many were read whole."""
        first = self._entries is None
        entries, new = self._list()
        done = 0
        for name in self._pending(entries, new, first):
            if self._read_segment(name, sink):
                done += 1
        if not self._dirty:
            # A quiet pass still compacts the cursor, and commits it if that saves much.
            before = len(self._cursor.seen)
            self._cursor.advance(*self._listing, self._skipped)
            self._dirty = before - len(self._cursor.seen) >= COMPACT_SEEN
        if self._dirty or len(self._out):
            self._emit(sink)
        return done

    def apply_retention(self, committed: str | None) -> int:
        """Delete segments older than retention_s that the committed cursor says are done."""
        if self.retention_s is None or not committed:
            return 0
        cursor = SpoolCursor.parse(committed)
        cutoff = time.time() - self.retention_s
        removed = 0
        try:
            names = [n for n in os.listdir(self.folder) if SEGMENT.match(n)]
        except FileNotFoundError:
            return 0
        for name in names:
            path = self.folder / name
            try:
                st = os.lstat(path)
                if (stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff
                        and cursor.done(name, st.st_ctime_ns)):
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
