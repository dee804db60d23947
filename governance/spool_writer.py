"""The spool writer (the format: records/spool_format.py).

A segment is renamed to its final name when it is rotated (it reached `max_bytes`, or it is
`max_age_s` old) or the writer closes; within one process the names sort in write order (the name
is fixed when the segment opens; renames happen in the same order). A crash leaves at most one
`.tmp` file per process, which readers ignore.

Segments and their temporary files are created 0600 and a folder the writer creates 0700,
whatever the umask (`mode=` and `dir_mode=` choose otherwise); an existing folder is left as
it is.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from ..records.events import Decision, Reward
from ..records.files import PRIVATE_DIR, PRIVATE_FILE, make_dirs
from ..records.spool_format import RECORD_TYPES, encode_line, segment_name

class SpoolWriter:
    """Thread-safe writer of spool segments; also a Governor sink."""

    def __init__(self, folder: str | Path, *, max_bytes: int = 8 * 1024 * 1024,
                 max_age_s: float = 2.0, fsync: bool = True, mode: int = PRIVATE_FILE,
                 dir_mode: int = PRIVATE_DIR) -> None:
        if max_bytes <= 0 or max_age_s <= 0:
            raise ValueError("max_bytes and max_age_s must be positive")
        self.folder = Path(folder)
        make_dirs(self.folder, dir_mode)
        self.mode = mode
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.fsync = fsync
        self._lock = threading.Lock()          # guards the open segment
        self._rename_lock = threading.Lock()   # keeps renames in segment order
        self._file: IO[bytes] | None = None
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._opened = 0.0
        self._size = 0
        self._dir_synced = False
        self._seq = 0
        self._closed = False
        self.segments_written = 0
        self.records_written = 0
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._age_loop, name="spool-rotate", daemon=True)
        self._timer.start()
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"SpoolWriter({str(self.folder)!r}, segments={self.segments_written})"

    # --- records ---------------------------------------------------------------------------------

    def write(self, record_type: str, data: Any) -> None:
        if record_type not in RECORD_TYPES:
            raise ValueError(f"unknown record type {record_type!r}")
        line = encode_line(record_type, data)
        rotate: tuple[IO[bytes], Path, Path] | None = None
        with self._lock:
            if self._closed:
                raise RuntimeError("spool writer is closed")
            if self._file is None:
                self._open()
            assert self._file is not None
            self._file.write(line)
            self._size += len(line)
            self.records_written += 1
            if self._size >= self.max_bytes or time.monotonic() - self._opened >= self.max_age_s:
                rotate = self._detach()
        if rotate is not None:
            self._seal(*rotate)

    def emit_decision(self, decision: Decision) -> None:
        self.write("decision", decision.to_payload())

    def emit_reward(self, reward: Reward) -> None:
        self.write("reward", asdict(reward))

    def write_rollout(self, data: dict[str, Any]) -> None:
        self.write("rollout", data)

    def write_event(self, event_id: str, event_type: str, payload: Any, *, ts: float | None = None,
                    rollout_id: str = "", run_id: str = "") -> None:
        self.write("event", {"event_id": event_id, "event_type": event_type,
                             "ts": time.time() if ts is None else ts, "rollout_id": rollout_id,
                             "payload": payload, "run_id": run_id})

    # --- segments --------------------------------------------------------------------------------

    def _open(self) -> None:
        self._seq += 1
        name = segment_name(time.time_ns(), os.getpid(), self._seq)
        self._final = self.folder / name
        self._tmp = self.folder / f".{name}.tmp"
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.mode)
        try:
            os.fchmod(fd, self.mode)  # the umask may have taken bits away from `mode`
            self._file = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        self._opened = time.monotonic()
        self._size = 0
        self._dir_synced = False

    def _detach(self) -> tuple[IO[bytes], Path, Path] | None:
        """Take the open segment away from writers (call with `_lock` held). The rename lock
        is taken here, before `_lock` is released, so segments are sealed in the order they
        were detached."""
        if self._file is None:
            return None
        assert self._tmp is not None and self._final is not None
        out = (self._file, self._tmp, self._final)
        self._file = self._tmp = self._final = None
        self._rename_lock.acquire()
        return out

    def _seal(self, f: IO[bytes], tmp: Path, final: Path) -> Path:
        """Flush, fsync and rename one detached segment (outside `_lock`: writers go on)."""
        try:
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
            f.close()
            os.rename(tmp, final)
            if self.fsync:
                self._fsync_dir()
            self.segments_written += 1
            return final
        finally:
            self._rename_lock.release()

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self.folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass  # some filesystems refuse fsync on directories; the rename stands
        finally:
            os.close(fd)

    def rotate(self) -> Path | None:
        """Seal the open segment now; returns its published path (None: nothing was open)."""
        with self._lock:
            detached = self._detach()
        return self._seal(*detached) if detached is not None else None

    flush = rotate

    def sync(self) -> None:
        """Make the lines written so far durable without publishing the segment (a
        write-ahead log's commit): one fdatasync, and the folder's fsync once per segment,
        which makes its temporary name durable too. A crash then leaves them in the `.tmp`."""
        with self._lock:
            if self._file is None:
                return
            self._file.flush()
            os.fdatasync(self._file.fileno())
            if not self._dir_synced:
                self._fsync_dir()
                self._dir_synced = True

    def abandon(self) -> Path | None:
        """Stop writing the open segment and leave it unpublished, as a crash would (after a
        failed write its tail is unknown); returns its temporary path, if one was open."""
        with self._lock:
            detached = self._detach()
        if detached is None:
            return None
        f, tmp, _final = detached
        try:
            f.close()
        except OSError:
            pass  # the buffered tail cannot be written: that is why we abandon it
        finally:
            self._rename_lock.release()
        return tmp

    def _age_loop(self) -> None:
        # Without writes a segment would stay hidden forever: age is also checked on a timer.
        interval = max(0.05, self.max_age_s / 4)
        while not self._stop.wait(interval):
            detached = None
            with self._lock:
                if self._file is not None and time.monotonic() - self._opened >= self.max_age_s:
                    detached = self._detach()
            if detached is not None:
                self._seal(*detached)

    def close(self, timeout: float | None = None) -> None:
        """Seal the open segment and stop. `timeout` is accepted for the sink protocol."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            detached = self._detach()
        self._stop.set()
        if detached is not None:
            self._seal(*detached)
        if self._timer is not threading.current_thread():
            self._timer.join(timeout=5.0)
        atexit.unregister(self.close)

    def __enter__(self) -> SpoolWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["SpoolWriter"]
