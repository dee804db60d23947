"""The gateway's write-ahead log: what the gateway acknowledges is on disk before it says so.

The log is a spool folder (`governance.spool` format, read back by `collectors.spool`), private
to one gateway: the drain thread writes each drained group of normalised records as one segment
(one write, one fsync, one rename: group commit), and only then may the requests that carried
them be answered. Once the store has committed a segment's records (the gateway's cursor names
the newest segment it covers, and commits with those rows) the segment is dropped. Whatever
the folder still holds at the next start is replayed into the store first; the writer drops
what it already had by natural key, so a replay of committed records stores nothing twice.

A record that cannot be written as UTF-8 JSON (a lone surrogate in a string) cannot be stored
either: it is turned into a quarantine record here, with its ids, so it never reaches the
writer and the rest of its group lands.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Final, TypeVar

from ..governance.events import Quarantined
from ..governance.spool import SEGMENT_GLOB, SpoolWriter
from .agl import MAX_QUARANTINE_RAW
from .sink import Records, Sink
from .spool import QUARANTINE_EVENT, SpoolReader

if TYPE_CHECKING:
    from ..storage.target import StoreTarget

log = logging.getLogger(__name__)

FOLDER_MODE: Final = 0o700
FILE_MODE: Final = 0o600
# Segments are sealed by us, one per drained group: never by size or age.
_NEVER_BYTES: Final = 1 << 40
_NEVER_S: Final = 10_000_000.0  # a timer wait must stay below threading.TIMEOUT_MAX
_UNWRITABLE: Final = (ValueError, RecursionError)  # UnicodeEncodeError is a ValueError
T = TypeVar("T")


def wal_folder(target: StoreTarget, host: str, port: int) -> Path:
    """Where the log of a gateway on host:port writing to `target` lives: next to a database
    file (`<db>.gateway-wal`), else (a lake) in the user's state folder, named by the gateway's
    address and the store, so a log is never replayed into another store."""
    if target.kind == "duckdb" and target.path is not None:
        return Path(f"{target.path}.gateway-wal")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    store = hashlib.sha256(f"{target.label}\n{target.data_path or ''}".encode()).hexdigest()[:12]
    return Path(state) / "tractatus-watch" / "gateway-wal" / f"{host}:{port}-{store}"


def _safe_text(text: str) -> str:
    """Text that encodes as UTF-8 (lone surrogates written as escapes)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _raw(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)  # ASCII: any surrogate becomes an escape
    except _UNWRITABLE:
        text = ascii(value)
    return text[:MAX_QUARANTINE_RAW]


class WriteAheadLog:
    """One gateway's log folder. `append` from the drain thread; `drop_through` from any."""

    def __init__(self, folder: str | os.PathLike[str], *, source: str = "gateway") -> None:
        self.folder = Path(folder).expanduser()
        self.source = source
        self.folder.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
        os.chmod(self.folder, FOLDER_MODE)  # mkdir's mode is filtered by the umask
        self._discard_partial()
        self._spool = SpoolWriter(self.folder, max_bytes=_NEVER_BYTES, max_age_s=_NEVER_S, fsync=True)
        self._lock = threading.Lock()
        self._segments: deque[str] = deque()  # appended or replayed, not yet committed

    def __repr__(self) -> str:
        return f"WriteAheadLog({str(self.folder)!r})"

    def pending(self) -> list[str]:
        """Names of the segments on disk, in name order."""
        return sorted(p.name for p in self.folder.glob(SEGMENT_GLOB) if p.is_file())

    # --- start: replay ---------------------------------------------------------------------

    def replay(self, sink: Sink) -> tuple[str | None, int]:
        """Hand every segment left by an earlier run to `sink` (records only, no cursor: the
        caller commits the cursor after them); returns (newest segment, records)."""
        names = self.pending()
        if not names:
            return None, 0
        count = 0

        def records_only(records: Records) -> None:
            nonlocal count
            records.cursor, records.stats = None, None
            count += len(records)
            if len(records):
                sink(records)

        # settle_s=0: nothing writes to this folder while we replay it.
        SpoolReader(self.folder, settle_s=0.0).poll_once(records_only)
        with self._lock:
            self._segments.extend(names)
        log.info("gateway: replayed the write-ahead log", extra={"fields": {
            "folder": str(self.folder), "segments": len(names), "records": count}})
        return names[-1], count

    # --- drain thread: append ----------------------------------------------------------------

    def append(self, records: Records) -> str | None:
        """Write `records` as one fsynced segment; returns its name (None if `records` is
        empty). Records that cannot be written move to `records.quarantined`. Raises OSError
        when the folder cannot be written (nothing is then durable)."""
        if not len(records):
            return None
        try:
            path = self._write(records)
        except OSError:
            self._spool.discard()
            self._discard_partial()
            raise
        os.chmod(path, FILE_MODE)  # the folder is private already; the file is too
        with self._lock:
            self._segments.append(path.name)
        return path.name

    def _write(self, records: Records) -> Path:
        bad: list[Quarantined] = []
        spool = self._spool
        records.decisions = self._each(records.decisions, bad, lambda d: (
            spool.write("decision", d.to_payload())), lambda d: (
            f"decision {d.decision_id} of rollout {d.rollout_id}", d.to_payload()))
        records.rewards = self._each(records.rewards, bad, lambda r: (
            spool.write("reward", asdict(r))), lambda r: (f"reward {r.reward_id}", asdict(r)))
        records.rollouts = self._each(records.rollouts, bad, lambda t: (
            spool.write("rollout", asdict(t))), lambda t: (
            f"rollout {t.rollout_id} ({t.status})", asdict(t)))
        records.events = self._each(records.events, bad, lambda e: spool.write_event(
            e.event_id, e.event_type, _payload_text(e.payload), ts=e.ts,
            rollout_id=e.rollout_id, run_id=e.run_id), lambda e: (
            f"event {e.event_id}", e.payload))
        records.quarantined.extend(bad)
        for q in records.quarantined:  # made writable in place: the store gets the same text
            q.source, q.reason, q.raw = _safe_text(q.source), _safe_text(q.reason), \
                _safe_text(q.raw)
            spool.write_event("", QUARANTINE_EVENT, {"source": q.source, "reason": q.reason,
                                                     "raw": q.raw}, ts=q.ts)
        path = spool.rotate()
        assert path is not None  # at least one line was written
        return path

    def _each(self, items: list[T], bad: list[Quarantined], write: Callable[[T], None],
              describe: Callable[[T], tuple[str, Any]]) -> list[T]:
        kept: list[T] = []
        for item in items:
            try:
                write(item)
            except _UNWRITABLE as exc:
                what, raw = describe(item)
                bad.append(Quarantined(
                    source=self.source, ts=time.time(), raw=_raw(raw),
                    reason=_safe_text(f"{what}: cannot be stored as UTF-8 JSON: {exc}")))
            else:
                kept.append(item)
        return kept

    def _discard_partial(self) -> None:
        # A segment still under its temporary name was never acknowledged (the rename is the
        # commit point): left by a crash or a failed write, it is dropped.
        for tmp in self.folder.glob(".seg-*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass

    # --- after the store committed -----------------------------------------------------------

    def drop_through(self, name: str) -> int:
        """Delete every segment up to and including `name` (in the order they were logged);
        returns how many. An unknown name (another run's, or already dropped) deletes nothing."""
        with self._lock:
            if name not in self._segments:
                return 0
            done: list[str] = []
            while self._segments:
                done.append(self._segments.popleft())
                if done[-1] == name:
                    break
        for seg in done:
            try:
                (self.folder / seg).unlink()
            except OSError:  # gone already, or the folder is: a segment left is only replayed
                pass
        return len(done)

    @property
    def undropped(self) -> int:
        with self._lock:
            return len(self._segments)

    def newest(self) -> str | None:
        with self._lock:
            return self._segments[-1] if self._segments else None

    def close(self) -> None:
        self._spool.close()


def _payload_text(payload: Any) -> Any:
    """An event payload as the store keeps it (JSON text, ASCII-escaped), so what the log
    replays stores exactly what the direct path stores, surrogates in payloads included."""
    if payload is None or isinstance(payload, str):
        return payload
    return json.dumps(payload, default=str)
