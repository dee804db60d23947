"""Exports of stored tables to Parquet (zstd), CSV, JSON and NDJSON, streamed in Arrow batches so
a 10M-row table never sits in memory; the same writer writes every result a command prints or
saves (`runs`, `query`, `report` rows), so one format means the same bytes everywhere.

Every file we export (`export`, `query --out`) goes through `records.files.atomic_file`: mode
0600 whatever the umask, written under a temporary name next to the target and renamed onto it
only when complete, so a failed or interrupted export leaves nothing behind."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any, Callable, Final, Literal

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ..records.files import atomic_file, check_destination
from .errors import StoreError
from .schema import table_columns

Format = Literal["parquet", "csv", "json", "ndjson"]
FORMATS: Final[tuple[str, ...]] = ("parquet", "csv", "json", "ndjson")
BATCH_ROWS: Final = 100_000
# Time column used by --since, per table (the first that exists).
TIME_COLUMNS: Final = ("ts", "updated_at", "created_at", "starts_at")


class ExportError(StoreError):
    pass


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
    """Write a query's result to `out`, atomically and 0600; returns rows written."""
    reader = rel.to_arrow_reader(BATCH_ROWS)
    with atomic_file(out, force=force) as fh:
        return write_batches(fh, reader.schema, reader, fmt, total=total,
                             on_progress=on_progress)


def write_frame(df: pl.DataFrame, fh: IO[bytes], fmt: Format) -> int:
    """Write an in-memory result (`runs`, `query`, `report` rows) exactly as `export` writes a
    table of the same data."""
    table = df.to_arrow()
    return write_batches(fh, table.schema, table.to_batches(BATCH_ROWS), fmt)


def write_batches(fh: IO[bytes], schema: pa.Schema, batches: Iterable[pa.RecordBatch],
                  fmt: Format, *, total: int = 0,
                  on_progress: Callable[[int, int], None] | None = None) -> int:
    """The one writer of every format: Parquet (zstd) from Arrow as it is; CSV, JSON and NDJSON
    through polars, with times as ISO-8601 text. Returns rows written."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    written = 0
    if fmt == "parquet":
        with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
            for batch in batches:
                writer.write_batch(batch)
                written += batch.num_rows
                if on_progress:
                    on_progress(written, total)
        return written
    text = _TextWriter(fh, fmt)
    for batch in batches:
        text.write(_frame(pa.Table.from_batches([batch], schema=schema)))
        written += batch.num_rows
        if on_progress:
            on_progress(written, total)
    text.close(_frame(schema.empty_table()))
    return written


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


class _TextWriter:
    """CSV (one header), NDJSON (one object a line) or JSON (one array of objects, written a
    batch at a time so a large table never sits in memory)."""

    def __init__(self, fh: IO[bytes], fmt: Format) -> None:
        self.fh = fh
        self.fmt = fmt
        self.started = False

    def write(self, frame: pl.DataFrame) -> None:
        if self.fmt == "csv":
            _flat(frame).write_csv(self.fh, include_header=not self.started)
        else:
            lines = io.BytesIO()
            _iso_times(frame).write_ndjson(lines)
            body = lines.getvalue()
            if self.fmt == "json" and body:
                # NDJSON lines never hold a raw newline, so joining them makes the array.
                body = (b",\n" if self.started else b"[\n") + body.rstrip(b"\n").replace(
                    b"\n", b",\n")
            self.fh.write(body)
        self.started = self.started or frame.height > 0 or self.fmt == "csv"

    def close(self, empty: pl.DataFrame) -> None:
        if self.fmt == "csv" and not self.started:
            _flat(empty).write_csv(self.fh)  # the header alone
        elif self.fmt == "json":
            self.fh.write(b"\n]\n" if self.started else b"[]\n")


def _iso_times(frame: pl.DataFrame) -> pl.DataFrame:
    """Datetimes as ISO-8601 text (`2026-11-18T11:06:40.000000`), as in CSV; polars' JSON
    would write a space for the `T`."""
    exprs = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime):
            digits = {"ms": 3, "us": 6, "ns": 9}[dtype.time_unit or "us"]
            zone = "%:z" if dtype.time_zone else ""
            exprs.append(pl.col(name).dt.to_string(f"%Y-%m-%dT%H:%M:%S%.{digits}f{zone}"))
    return frame.with_columns(exprs) if exprs else frame


def _json_text(value: Any) -> str | None:
    if isinstance(value, pl.Series):  # what a list cell arrives as
        value = value.to_list()
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def _flat(frame: pl.DataFrame) -> pl.DataFrame:
    """Lists and structs as JSON text, for CSV, which holds only scalars."""
    exprs = [pl.col(name).map_elements(_json_text, return_dtype=pl.String, skip_nulls=True)
             for name, dtype in frame.schema.items() if dtype.is_nested()]
    return frame.with_columns(exprs) if exprs else frame
