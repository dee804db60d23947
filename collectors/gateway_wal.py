"""The gateway's write-ahead log: what the gateway acknowledges is on disk before it says so.

The log is a spool folder (`records/spool_format.py`, written by `governance.spool_writer`, read
back by `collectors.spool_reader`), private to one gateway. The drain thread appends each group
it takes from the tee to the open segment
and syncs it (one write, one fdatasync per group: group commit) before the requests that
carried the group may be answered; it seals the segment (rename) each time it hands records to
the store, and the cursor committed with those records names the newest sealed segment, so
once the store has that cursor, every segment up to it is dropped. At the next start, whatever
the folder holds is replayed into the store first: a segment a crash left under its temporary
name is cut after its last complete line (a torn group was never acknowledged) and published.
The writer drops what it already had by natural key, so replaying committed records stores
nothing twice.

A record that cannot be stored as UTF-8 (a lone surrogate in a string) is turned into a
quarantine record here, with its ids, so it never reaches the writer and the rest of its group
lands.
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

from ..records.events import Quarantined
from ..governance.spool_writer import SpoolWriter
from ..records.files import PRIVATE_FILE
from ..records.spool_format import QUARANTINE_EVENT, SEGMENT_GLOB
from ..records.agl import MAX_QUARANTINE_RAW
from ..records.delivery import Records, Sink
from .spool_reader import SpoolReader

if TYPE_CHECKING:
    from ..storage.target import StoreTarget

log = logging.getLogger(__name__)

FOLDER_MODE: Final = 0o700
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
    """The quarantined record as ASCII JSON (a surrogate becomes an escape); whatever it is."""
    for show in (lambda v: json.dumps(v, default=str), ascii):
        try:
            return show(value)[:MAX_QUARANTINE_RAW]
        except _UNWRITABLE:  # nested deeper than the encoder goes, say
            continue
    return f"<{type(value).__name__} that cannot be shown>"


class WriteAheadLog:
    """One gateway's log folder. `append` and `seal` from the drain thread; `drop_through`
    from any thread."""

    def __init__(self, folder: str | os.PathLike[str], *, source: str = "gateway") -> None:
        self.folder = Path(folder).expanduser()
        self.source = source
        self.folder.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
        os.chmod(self.folder, FOLDER_MODE)  # mkdir's mode is filtered by the umask
        self._publish_partial()
        self._spool = SpoolWriter(self.folder, max_bytes=_NEVER_BYTES, max_age_s=_NEVER_S,
                                  fsync=True)
        self._lock = threading.Lock()
        self._segments: deque[str] = deque()  # sealed or replayed, not yet committed
        self.abandoned = 0  # segments left unsealed after a failed write (next start reads them)

    def __repr__(self) -> str:
        return f"WriteAheadLog({str(self.folder)!r})"

    def pending(self) -> list[str]:
        """Names of the published segments on disk, in name order."""
        return sorted(p.name for p in self.folder.glob(SEGMENT_GLOB) if p.is_file())

    # --- start: recovery and replay ----------------------------------------------------------

    def _publish_partial(self) -> None:
        """Publish what a crash left under a temporary name, cut after its last complete line:
        every group that was synced (and so acknowledged) ends with one."""
        found = False
        for tmp in self.folder.glob(".seg-*.ndjson.tmp"):
            found = True
            with open(tmp, "rb+") as fh:  # one delivery's worth: small
                end = fh.read().rfind(b"\n") + 1
                fh.truncate(end)
                os.fsync(fh.fileno())
            if end == 0:
                tmp.unlink()
                continue
            os.chmod(tmp, PRIVATE_FILE)
            tmp.rename(self.folder / tmp.name[1:-len(".tmp")])
        if found:
            _fsync_folder(self.folder)

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

    # --- drain thread: append, seal ----------------------------------------------------------

    def append(self, records: Records) -> None:
        """Write `records` to the open segment and sync it. Records that cannot be stored
        move to `records.quarantined`. Raises OSError when the folder cannot be written:
        nothing of this group is then durable (the segment is abandoned, as a crash would
        leave it, and the next start reads what it holds)."""
        if not len(records):
            return
        try:
            self._write(records)
            self._spool.sync()
        except OSError:
            if self._spool.abandon() is not None:
                self.abandoned += 1
            raise

    def seal(self) -> str | None:
        """Publish the open segment; returns its name (None: nothing open, or the rename
        failed, and then the segment stays for the next start)."""
        try:
            path = self._spool.rotate()
        except OSError as exc:
            if self._spool.abandon() is not None:
                self.abandoned += 1
            log.warning("gateway: cannot seal a write-ahead log segment; the next start "
                        "replays it", extra={"fields": {"folder": str(self.folder),
                                                        "error": str(exc)}})
            return None
        if path is None:
            return None
        try:
            os.chmod(path, PRIVATE_FILE)  # the folder is private already; the file is too
        except OSError:
            pass
        with self._lock:
            self._segments.append(path.name)
        return path.name

    def _write(self, records: Records) -> None:
        bad: list[Quarantined] = []
        records.decisions = self._each(records.decisions, bad, lambda d: (
            "decision", d.to_payload(), f"decision {d.decision_id} of rollout {d.rollout_id}"))
        records.rewards = self._each(records.rewards, bad, lambda r: (
            "reward", asdict(r), f"reward {r.reward_id}"))
        records.rollouts = self._each(records.rollouts, bad, lambda t: (
            "rollout", asdict(t), f"rollout {t.rollout_id} ({t.status})"))
        records.events = self._each(records.events, bad, lambda e: ("event", {
            "event_id": e.event_id, "event_type": e.event_type, "ts": e.ts,
            "rollout_id": e.rollout_id, "payload": _payload_text(e.payload),
            "run_id": e.run_id}, f"event {e.event_id}"))
        records.witnessed = self._each(records.witnessed, bad, lambda w: (
            "witnessed", w.to_payload(), f"witnessed action {w.witness_id}"))
        records.quarantined.extend(bad)
        for q in records.quarantined:  # made writable in place: the store gets the same text
            q.source, q.reason, q.raw = _safe_text(q.source), _safe_text(q.reason), \
                _safe_text(q.raw)
            self._spool.write("event", {
                "event_id": "", "event_type": QUARANTINE_EVENT, "ts": q.ts, "rollout_id": "",
                "payload": {"source": q.source, "reason": q.reason, "raw": q.raw},
                "run_id": ""})

    def _each(self, items: list[T], bad: list[Quarantined],
              line: Callable[[T], tuple[str, Any, str]]) -> list[T]:
        kept: list[T] = []
        for item in items:
            what, data = "record", item
            try:
                kind, data, what = line(item)
                # Checked here, not left to the line encoder: the store cannot hold a string
                # UTF-8 cannot encode, whatever escape the log could write it with.
                json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
            except _UNWRITABLE as exc:
                bad.append(Quarantined(
                    source=self.source, ts=time.time(), raw=_raw(data),
                    reason=_safe_text(f"{what}: cannot be stored as UTF-8 JSON: {exc}")))
                continue
            self._spool.write(kind, data)
            kept.append(item)
        return kept

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
        """The newest sealed segment not dropped yet."""
        with self._lock:
            return self._segments[-1] if self._segments else None

    def close(self) -> None:
        """Seal what is open (a clean stop seals before its last delivery: nothing is)."""
        self.seal()
        self._spool.close()


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)


def _payload_text(payload: Any) -> Any:
    """An event payload as the store keeps it (JSON text, ASCII-escaped), so what the log
    replays stores exactly what the direct path stores, surrogates in payloads included."""
    if payload is None or isinstance(payload, str):
        return payload
    return json.dumps(payload, default=str)
