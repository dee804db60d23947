"""Opening a store (a DuckDB file, a DuckLake, a collector served over Quack): location,
locking, permissions, settings, extensions and migrations."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import duckdb

from . import extensions
from .absent import record_absent
from ..records import files
from .coordination import Coordinator, LocalCoordinator, PostgresCoordinator
from .errors import SchemaTooNew, StoreError, StoreLocked, StoreMissing
from .schema import LATEST_VERSION, current_version, migrate
from .target import StoreTarget, parse_target, redact

# DuckDB's cache grows ~45 MB per 1M rows without a limit; 256MB kept a 10M-row ingest at
# ~735 MB RSS with no slowdown (DESIGN.md).
DEFAULT_MEMORY_LIMIT = "256MB"

record_absent()


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


_OBJECT_STORE = re.compile(r"^(s3|s3a|gs|gcs|r2|az|azure|abfss|https?)://", re.IGNORECASE)
LAKE_CATALOG = "lake"
REMOTE_CATALOG = "remote"


def _config(memory_limit: str) -> dict[str, str | bool | int | float | list[str]]:
    return {
        "memory_limit": memory_limit,
        # Exports and large scans stay near constant memory without insertion order.
        "preserve_insertion_order": False,
        # Extensions come from their PyPI packages (storage/extensions.py), never a download.
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(exc: BaseException, *secrets: str) -> str:
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for secret in secrets:
        if secret:
            line = line.replace(secret, "***")
    return line


@dataclass
class Store:
    """One open store: a DuckDB file, a DuckLake, or a collector served over Quack.

    The connection belongs to its creator's thread; other threads call `cursor()` for their own
    (DuckDB cursors see consistent snapshots). Every cursor starts in the store's catalog, so
    the same SQL runs on all three kinds."""

    target: StoreTarget
    con: duckdb.DuckDBPyConnection
    read_only: bool
    _lock: threading.Lock
    catalog: str | None = None  # the attached catalog every cursor USEs (lake, remote)

    @property
    def path(self) -> Path | None:
        return self.target.path

    @property
    def label(self) -> str:
        return self.target.label

    @property
    def is_lake(self) -> bool:
        return self.target.kind == "ducklake"

    @classmethod
    def open(cls, location: str | os.PathLike[str] | StoreTarget, *, read_only: bool = False,
             create: bool = True, memory_limit: str = DEFAULT_MEMORY_LIMIT,
             data_path: str | None = None, token: str | None = None) -> Store:
        """Open (and migrate, unless read-only) a store. `location` is a path, a store spec
        (`duckdb:`, `ducklake:postgres:`, `quack:`) or a parsed target.

        Opening a file or lake for writing sets the process umask to keep group and other bits
        out of what DuckDB creates later (its .wal; files 0600, folders 0700), unless
        $TRACTATUS_WATCH_UMASK names another (records/files.py)."""
        if isinstance(location, StoreTarget):
            target = location
        elif isinstance(location, str):
            target = parse_target(location, data_path=data_path)
        else:
            target = StoreTarget("duckdb", path=Path(location).expanduser())
        if target.kind == "ducklake":
            return cls._open_lake(target, read_only=read_only, memory_limit=memory_limit)
        if target.kind == "quack":
            return cls._open_remote(target, token=token, memory_limit=memory_limit)
        return cls._open_file(target, read_only=read_only, create=create,
                              memory_limit=memory_limit)

    @classmethod
    def _open_file(cls, target: StoreTarget, *, read_only: bool, create: bool,
                   memory_limit: str) -> Store:
        assert target.path is not None
        p = target.path
        exists = p.exists()
        if not exists and (read_only or not create):
            raise StoreMissing(f"no database at {p} (run `tractatus-watch collect` or the demo "
                               "first, or pass --store / set TRACTATUS_WATCH_STORE)")
        if not read_only:
            # DuckDB creates the .wal (plain rows) with the process umask, at the first commit
            # after every checkpoint: only the umask keeps it private (records/files.py).
            files.apply_umask()
        if not exists:
            files.make_dirs(p.parent)
        try:
            con = duckdb.connect(str(p), read_only=read_only, config=_config(memory_limit))
        except duckdb.IOException as exc:
            message = str(exc)
            if "Conflicting lock" in message or "Could not set lock" in message:
                raise StoreLocked(
                    f"database {p} is in use by {_holder(message)}; DuckDB allows one process "
                    "per file: stop that process, view it live with `collect --serve` and "
                    "`open --remote`, or read a copy of the file") from None
            raise StoreError(f"cannot open {p}: {message.splitlines()[0]}") from None
        except duckdb.Error as exc:
            raise StoreError(f"cannot open {p}: {str(exc).splitlines()[0]}") from None
        if not exists:
            os.chmod(p, files.file_mode())
        store = cls(target=target, con=con, read_only=read_only, _lock=threading.Lock())
        store._prepare(str(p))
        return store

    @classmethod
    def _open_lake(cls, target: StoreTarget, *, read_only: bool, memory_limit: str) -> Store:
        con = duckdb.connect(":memory:", config=_config(memory_limit))
        try:
            needs = ["ducklake", "postgres"]
            data_path = target.data_path
            if data_path and _OBJECT_STORE.match(data_path):
                needs.append("httpfs")
            elif data_path:
                data_path = str(Path(data_path).expanduser().resolve())
                if not read_only:
                    files.apply_umask()  # the Parquet files DuckLake writes follow it
                    files.make_dirs(data_path)
            extensions.load(con, *needs)
            options = [f"DATA_PATH {_sql_str(data_path)}"] if data_path else []
            if read_only:
                options.append("READ_ONLY")
            attach = (f"ATTACH {_sql_str('ducklake:postgres:' + target.conninfo)} "
                      f"AS {LAKE_CATALOG}" + (f" ({', '.join(options)})" if options else ""))
            # The first ATTACH of a new lake creates its catalog tables: writers starting
            # together take turns, or all but one would fail on "already exists".
            coordinator = LocalCoordinator() if read_only else PostgresCoordinator(
                target.conninfo)
            try:
                with coordinator.locked(["attach"]):
                    con.execute(attach)
            except duckdb.Error as exc:
                line = _first_line(exc, target.conninfo)
                if read_only and "does not exist" in line:
                    raise StoreMissing(f"{target.label} holds no tractatus-watch data yet (no "
                                       "lake: a collector creates it on first write)") from None
                if "DATA_PATH" in line.upper() or "data path" in line.lower():
                    raise StoreError(f"{target.label} holds no lake yet: pass --data-path DIR "
                                     "(a folder every writer and reader can reach) to create "
                                     "it") from None
                raise StoreError(f"cannot attach {target.label}: {redact(line)}") from None
            finally:
                coordinator.close()
            con.execute(f"USE {LAKE_CATALOG}")
            # Our own retries (storage/writer.py) come on top of DuckLake's.
            con.execute("SET ducklake_max_retry_count = 50")
        except BaseException:
            con.close()
            raise
        store = cls(target=target, con=con, read_only=read_only, _lock=threading.Lock(),
                    catalog=LAKE_CATALOG)
        store._prepare(target.label)
        return store

    @classmethod
    def _open_remote(cls, target: StoreTarget, *, token: str | None, memory_limit: str) -> Store:
        if not token:
            raise StoreError(f"{target.label} needs its token: --token-file FILE or "
                             "TRACTATUS_WATCH_TOKEN")
        con = duckdb.connect(":memory:", config=_config(memory_limit))
        try:
            extensions.load(con, "quack", "httpfs")
            try:
                con.execute(f"ATTACH {_sql_str(f'quack:{target.host}:{target.port}')} AS "
                            f"{REMOTE_CATALOG} (TOKEN {_sql_str(token)}, READ_ONLY)")
                con.execute(f"USE {REMOTE_CATALOG}")
            except duckdb.Error as exc:
                line = _first_line(exc, token)
                if "Authentication failed" in line:
                    raise StoreError(f"{target.label} refused the token (wrong token?)") from None
                raise StoreError(f"cannot attach {target.label}: {line}") from None
        except BaseException:
            con.close()
            raise
        store = cls(target=target, con=con, read_only=True, _lock=threading.Lock(),
                    catalog=REMOTE_CATALOG)
        store._prepare(target.label)
        return store

    def _prepare(self, name: str) -> None:
        """Check the schema version (read-only) or migrate it (writable)."""
        con = self.con
        try:
            if self.read_only:
                version = current_version(con)
                if version == 0:
                    raise StoreMissing(f"{name} holds no tractatus-watch data yet")
                if version > LATEST_VERSION:
                    raise SchemaTooNew(f"{name} has schema version {version}, newer than this "
                                       f"tractatus-watch supports ({LATEST_VERSION}); upgrade it")
                if version < LATEST_VERSION:
                    raise StoreError(f"{name} has schema version {version}; open it once "
                                     "without read-only access to migrate it")
            elif current_version(con) != LATEST_VERSION:
                # Several collectors may start on a new lake at once: one migrates at a time,
                # and the others find the work done.
                coordinator = self.coordinator()
                try:
                    with coordinator.locked(["schema"]):
                        migrate(con, path=name)
                finally:
                    coordinator.close()
        except BaseException:
            con.close()
            raise

    def coordinator(self) -> Coordinator:
        """A fresh lock session for one user (the writer, the alert loop)."""
        if self.is_lake:
            return PostgresCoordinator(self.target.conninfo)
        return LocalCoordinator()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            cur = self.con.cursor()
        if self.catalog:
            cur.execute(f"USE {self.catalog}")
        if self.target.kind == "quack":
            # Joins over a Quack-attached catalog fail on the client: run reads on the server.
            from .remote import RemoteCursor

            return cast(duckdb.DuckDBPyConnection, RemoteCursor(cur, REMOTE_CATALOG))
        return cur

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
