"""Exports of stored tables to Parquet (zstd), CSV and NDJSON, streamed in Arrow batches so a
10M-row table never sits in memory.

Every file we export (`export`, `query --out`) goes through `records.files.atomic_file`: mode
0600 whatever the umask, written under a temporary name next to the target and renamed onto it
only when complete, so a failed or interrupted export leaves nothing behind."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Final, Literal

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..records.files import atomic_file, check_destination
from .errors import StoreError
from .schema import table_columns

Format = Literal["parquet", "csv", "ndjson"]
FORMATS: Final[tuple[str, ...]] = ("parquet", "csv", "ndjson")
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
