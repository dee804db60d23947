"""Exports of stored tables to Parquet (zstd), CSV and NDJSON, streamed in Arrow batches so a
10M-row table never sits in memory.

Every file we export (`export`, `query --out`) goes through `atomic_file`: mode 0600 whatever the
umask, written under a temporary name next to the target and renamed onto it only when complete,
so a failed or interrupted export leaves nothing behind and never a half-written file."""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Callable, Final, Literal

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import StoreError
from .schema import table_columns

Format = Literal["parquet", "csv", "ndjson"]
FORMATS: Final[tuple[str, ...]] = ("parquet", "csv", "ndjson")
BATCH_ROWS: Final = 100_000
# Time column used by --since, per table (the first that exists).
TIME_COLUMNS: Final = ("ts", "updated_at", "created_at", "starts_at")


class ExportError(StoreError):
    pass


FILE_MODE: Final = 0o600


def check_destination(out: Path, *, force: bool) -> None:
    """Refuse, in one line, an output path we cannot or should not write (before any work)."""
    parent = out.parent
    if out.is_dir():
        raise ExportError(f"{out} is a folder: give the name of a file to write")
    if not parent.exists():
        raise ExportError(f"cannot write {out}: no folder {parent} (create it first)")
    if not parent.is_dir():
        raise ExportError(f"cannot write {out}: {parent} is not a folder")
    if (out.exists() or out.is_symlink()) and not force:
        raise ExportError(f"{out} exists; pass --force to overwrite it")


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


@contextmanager
def atomic_file(out: Path, *, force: bool) -> Iterator[IO[bytes]]:
    """A binary file to write `out` through: created 0600 under a temporary name in the same
    folder, renamed onto `out` when the block ends without error (onto an existing file only
    with `force`), removed otherwise. OS errors become one-line ExportErrors."""
    check_destination(out, force=force)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, FILE_MODE)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {_reason(exc)}") from None
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away; never adds any
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, out, force=force)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"cannot write {out}: {_reason(exc)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _publish(tmp: Path, out: Path, *, force: bool) -> None:
    """Put the finished `tmp` in place of `out`; without `force` never over a file that
    appeared meanwhile (a hard link fails if the name exists, a rename would not)."""
    if force:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise ExportError(f"{out} exists; pass --force to overwrite it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if out.exists():  # no hard links on this file system: check, then rename
            raise ExportError(f"{out} exists; pass --force to overwrite it") from None
        os.replace(tmp, out)
        return
    tmp.unlink()


def exportable_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute("SELECT table_name FROM information_schema.tables "
                       "WHERE table_catalog = current_database() AND table_schema = 'main' "
                       "ORDER BY table_name").fetchall()
    return [r[0] for r in rows]


def _selection(con: duckdb.DuckDBPyConnection, table: str, run_id: str | None,
               since: datetime | None) -> tuple[str, list[Any]]:
    tables = exportable_tables(con)
    if table not in tables:
        raise ExportError(f"no table {table!r}; tables: {', '.join(tables)}")
    columns = table_columns(con, table)
    where: list[str] = []
    params: list[Any] = []
    if run_id is not None:
        if "run_id" not in columns:
            raise ExportError(f"table {table!r} has no run_id column; drop --run")
        where.append("run_id = ?")
        params.append(run_id)
    if since is not None:
        time_col = next((c for c in TIME_COLUMNS if c in columns), None)
        if time_col is None:
            raise ExportError(f"table {table!r} has no time column; drop --since")
        where.append(f"{time_col} >= ?::TIMESTAMP")
        params.append(since)
    # The table name is checked against the catalogue above, so it is safe to interpolate.
    sql = f'SELECT * FROM "{table}"' + (f" WHERE {' AND '.join(where)}" if where else "")
    return sql, params


def export_table(con: duckdb.DuckDBPyConnection, table: str, out: Path, fmt: Format, *,
                 run_id: str | None = None, since: datetime | None = None, force: bool = False,
                 on_progress: Callable[[int, int], None] | None = None) -> int:
    """Write `table` (optionally one run, rows since a time) to `out`; returns rows written."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    check_destination(out, force=force)
    sql, params = _selection(con, table, run_id, since)
    total = con.execute(f"SELECT count(*) FROM ({sql})", params).fetchall()[0][0]
    return write_relation(con.sql(sql, params=params or None), out, fmt, total=total,
                          on_progress=on_progress, force=force)


def write_relation(rel: duckdb.DuckDBPyRelation, out: Path, fmt: Format, *, total: int = 0,
                   on_progress: Callable[[int, int], None] | None = None,
                   force: bool = False) -> int:
    reader = rel.to_arrow_reader(BATCH_ROWS)
    written = 0
    with atomic_file(out, force=force) as fh:
        writer: Any = None
        if fmt == "parquet":
            writer = pq.ParquetWriter(fh, reader.schema, compression="zstd")
        elif fmt == "csv":
            writer = pacsv.CSVWriter(fh, reader.schema)
        for batch in reader:
            if fmt == "ndjson":
                frame = pl.from_arrow(pa.Table.from_batches([batch], schema=reader.schema))
                assert isinstance(frame, pl.DataFrame)
                frame.write_ndjson(fh)
            else:
                writer.write_batch(batch)
            written += batch.num_rows
            if on_progress:
                on_progress(written, total)
        if writer is not None:
            writer.close()
    return written
