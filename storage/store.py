"""Opening a database: location, locking, permissions, settings and migrations."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb

from .errors import SchemaTooNew, StoreError, StoreLocked, StoreMissing
from .schema import LATEST_VERSION, current_version, migrate

# DuckDB's cache grows ~45 MB per 1M rows without a limit; 256MB kept a 10M-row ingest at
# ~735 MB RSS with no slowdown (DESIGN.md).
DEFAULT_MEMORY_LIMIT = "256MB"


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.+?) \(PID (?P<pid>\d+)\)")


def _holder(message: str) -> str:
    match = _LOCK_HOLDER.search(message)
    if not match:
        return "another process"
    pid = int(match["pid"])
    try:
        import psutil

        cmd = " ".join(psutil.Process(pid).cmdline()[:4])
        return f"PID {pid} ({cmd})" if cmd else f"PID {pid}"
    except Exception:  # the holder may have exited or be invisible to us
        return f"PID {pid}"


@dataclass
class Store:
    """One open database. The connection belongs to its creator's thread; other threads call
    `cursor()` for their own (DuckDB cursors see consistent snapshots)."""

    path: Path
    con: duckdb.DuckDBPyConnection
    read_only: bool
    _lock: threading.Lock

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, read_only: bool = False,
             create: bool = True, memory_limit: str = DEFAULT_MEMORY_LIMIT) -> Store:
        p = Path(path).expanduser()
        exists = p.exists()
        if not exists and (read_only or not create):
            raise StoreMissing(f"no database at {p} (run `tractatus-watch collect` or the demo "
                               "first, or pass --db / set TRACTATUS_WATCH_DB)")
        if not exists:
            p.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(p), read_only=read_only, config={
                "memory_limit": memory_limit,
                # Exports and large scans stay near constant memory without insertion order.
                "preserve_insertion_order": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            })
        except duckdb.IOException as exc:
            message = str(exc)
            if "Conflicting lock" in message or "Could not set lock" in message:
                raise StoreLocked(
                    f"database {p} is in use by {_holder(message)}; DuckDB allows one process "
                    "per file: stop that process, or read a copy of the file") from None
            raise StoreError(f"cannot open {p}: {message.splitlines()[0]}") from None
        except duckdb.Error as exc:
            raise StoreError(f"cannot open {p}: {str(exc).splitlines()[0]}") from None
        if not exists:
            os.chmod(p, 0o600)
        store = cls(path=p, con=con, read_only=read_only, _lock=threading.Lock())
        if read_only:
            version = current_version(con)
            if version > LATEST_VERSION:
                con.close()
                raise SchemaTooNew(f"{p} has schema version {version}, newer than this "
                                   f"tractatus-watch supports ({LATEST_VERSION}); upgrade it")
            if version < LATEST_VERSION:
                con.close()
                raise StoreError(f"{p} has schema version {version}; open it once without "
                                 "read-only access to migrate it")
        else:
            try:
                migrate(con, path=str(p))
            except Exception:
                con.close()
                raise
        return store

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self.con.cursor()

    def get_cursor(self, source: str) -> str | None:
        """The committed ingest cursor of a source, or None if it never committed one."""
        cur = self.cursor()
        try:
            rows = cur.execute("SELECT cursor FROM ingest_state WHERE source = ? "
                               "ORDER BY updated_at DESC LIMIT 1", [source]).fetchall()
        finally:
            cur.close()
        return rows[0][0] if rows else None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
