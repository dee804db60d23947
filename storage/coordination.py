"""Locks between processes that write one DuckLake store, held in its PostgreSQL catalog.

DuckLake lets concurrent appends commit, so two writers of the same run could each miss the
other's uncommitted rows in their natural-key anti-join. A per-run advisory lock, taken before
the transaction starts, makes writers of one run take turns (writers of other runs never wait),
and the next holder's snapshot then sees what the previous one committed. Session-level
advisory locks are released by PostgreSQL when a process dies, so a crash never leaves one
behind. A DuckDB file has one writer process: there, every lock is granted at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import re
import threading
import time
from typing import Callable, Final, Iterable, Iterator, Protocol, TypeVar

import duckdb

from .errors import StoreError
from .target import redact

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for `name` (same in every process)."""
    digest = hashlib.blake2b(f"tractatus-watch:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Coordinator(Protocol):
    def locked(self, names: Iterable[str]) -> contextlib.AbstractContextManager[None]: ...
    def try_lead(self, name: str) -> bool: ...
    def close(self) -> None: ...


class LocalCoordinator:
    """One process owns the file: nothing to coordinate."""

    def locked(self, names: Iterable[str]) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def try_lead(self, name: str) -> bool:
        return True

    def close(self) -> None:
        pass


class PostgresCoordinator:
    """Advisory locks on one PostgreSQL session of its own (one per user: writer, alert loop)."""

    def __init__(self, conninfo: str) -> None:
        import psycopg

        self._conninfo = conninfo
        self._mutex = threading.Lock()
        self._led: set[str] = set()
        try:
            self._con = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot reach the DuckLake catalog {redact(conninfo)}: "
                             f"{str(exc).strip().splitlines()[0]}") from None

    @contextlib.contextmanager
    def locked(self, names: Iterable[str]) -> Iterator[None]:
        # Sorted, so two writers needing the same runs can never wait on each other in a cycle.
        keys = sorted({lock_key(n) for n in names})
        with self._mutex:
            taken: list[int] = []
            try:
                for key in keys:
                    self._con.execute("SELECT pg_advisory_lock(%s)", [key])
                    taken.append(key)
                yield
            finally:
                for key in reversed(taken):
                    self._con.execute("SELECT pg_advisory_unlock(%s)", [key])

    def try_lead(self, name: str) -> bool:
        """Become (or stay) the one process doing `name`; held until this session ends."""
        with self._mutex:
            if name in self._led:
                return True
            row = self._con.execute("SELECT pg_try_advisory_lock(%s)",
                                    [lock_key(f"lead:{name}")]).fetchone()
            if row and row[0]:
                self._led.add(name)
            return name in self._led

    def close(self) -> None:
        """Release every lock, then disconnect. PostgreSQL frees a session's locks only when
        its backend has processed the disconnect, after `close()` returned (measured: 1 in 4
        times a lock was still held right after), so a standby asking at once would find the
        lead taken. Unlocking first makes a clean stop hand over before this returns."""
        import psycopg

        with self._mutex:
            try:
                if not self._con.closed:
                    self._con.execute("SELECT pg_advisory_unlock_all()")
            except psycopg.Error as exc:  # a dead session's locks are freed by the server
                log.info("releasing locks before disconnecting failed: %s",
                         str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            finally:
                self._led.clear()
                self._con.close()


T = TypeVar("T")


# A commit that failed writing (the disk, a file size limit) says "Failed to commit" too, but
# another attempt meets the same wall: that is the writer's death, not a lost race.
_IO_FAILURE: Final = re.compile(r"Could not write|File too large|No space left|Disk quota|"
                                r"IO Error|Read-only file system", re.IGNORECASE)


def is_conflict(exc: BaseException) -> bool:
    """A commit another writer's snapshot beat (DuckLake gave up on its own retries)."""
    text = str(exc)
    if _IO_FAILURE.search(text):
        return False
    return isinstance(exc, duckdb.TransactionException) or "conflict" in text.lower() or (
        "Failed to commit" in text)


def retry_conflicts(attempt: Callable[[], T], *, tries: int = 8, first_wait_s: float = 0.05,
                    max_wait_s: float = 2.0) -> T:
    """Run a whole transaction again, with jittered exponential backoff, while it loses commit
    races. Each attempt starts a fresh snapshot, so its reads (the anti-join) see the winner."""
    wait = first_wait_s
    for n in range(1, tries + 1):
        try:
            return attempt()
        except duckdb.Error as exc:
            if n == tries or not is_conflict(exc):
                raise
            log.info("commit conflict (attempt %d/%d), retrying: %s", n, tries,
                     str(exc).splitlines()[0])
            time.sleep(wait * (0.5 + random.random()))
            wait = min(max_wait_s, wait * 2)
    raise AssertionError("unreachable")
