"""Storage commands: runs, query, export."""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import duckdb
import polars as pl
import typer

from ..app import DataPathOption, DbOption, TokenFileOption, app, open_store
from ..config import CliError, parse_since
from ..output import console, emit_frame


class QueryFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"

class ExportFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"
    ndjson = "ndjson"

@app.command()
def runs(db: DbOption = None, data_path: DataPathOption = None,
         token_file: TokenFileOption = None,
         fmt: Annotated[QueryFormat, typer.Option("--format", help="Output format.")]
         = QueryFormat.table) -> None:
    """List the stored runs, newest first."""
    from ...storage import queries

    with open_store(db, data_path, read_only=True, token_file=token_file) as store:
        df = queries.runs(store.cursor())
    if df.is_empty() and fmt == QueryFormat.table:
        console().print("no runs stored yet: run `tractatus-watch demo` or a collector")
        return
    if fmt == QueryFormat.table:  # arms by name; their figures are in --format json
        df = df.with_columns(pl.col("arms").list.eval(pl.element().struct.field("arm")))
    emit_frame(df, fmt.value, None)

@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="A SQL query over the stored tables.")],
    db: DbOption = None, data_path: DataPathOption = None, token_file: TokenFileOption = None,
    fmt: Annotated[QueryFormat, typer.Option("--format", help="Output format.")]
    = QueryFormat.table,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out.")] = False,
) -> None:
    """Run one read-only SELECT over the stored tables, e.g. `tractatus-watch query "SELECT *
    FROM runs"` (no files, other databases, settings or writes)."""
    from ...storage import readonly
    from ...records.files import check_destination

    if out is not None:
        check_destination(out, force=force)
    with open_store(db, data_path, read_only=True, token_file=token_file) as store:
        # Whatever the check below might miss, the engine refuses too: no file, URL, ATTACH
        # or extension, no setting changed (a lake reads its data files: only the lock).
        readonly.seal(store.con, lock=True, keep_external_access=store.is_lake)
        cur = store.cursor()
        try:
            readonly.check(sql, readonly.Relations.of(cur))
            rel = cur.sql(sql)
            if rel is None:
                raise CliError("query returned no rows (only SELECT-like statements are useful "
                               "here; the database is opened read-only)")
            df = rel.pl()
        except duckdb.Error as exc:
            raise CliError(f"query failed: {str(exc).splitlines()[0]}") from None
    emit_frame(df, fmt.value, out, force)

@app.command()
def export(
    table: Annotated[str, typer.Option("--table", help="Table to export (see `query`).")],
    out: Annotated[Path, typer.Option("--out", help="Output file.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="File format.")]
    = ExportFormat.parquet,
    run: Annotated[Optional[str], typer.Option("--run", help="Only this run.")] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="Only rows since a time: 30m, 2h, 7d or ISO-8601.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out.")] = False,
    db: DbOption = None, data_path: DataPathOption = None, token_file: TokenFileOption = None,
) -> None:
    """Export a table to Parquet (zstd), CSV or NDJSON."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ...records.files import check_destination
    from ...storage.export import export_table

    since_at = parse_since(since) if since else None
    check_destination(out, force=force)  # before any work
    started = time.monotonic()
    with open_store(db, data_path, read_only=True, token_file=token_file) as store, Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), console=console(stderr=True), transient=True,
            disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task(f"exporting {table}", visible=False)

        def on_progress(done: int, total: int) -> None:
            # Only show a bar once the export has taken about a second.
            progress.update(task, completed=done, total=total,
                            visible=time.monotonic() - started > 1.0)

        rows = export_table(store.cursor(), table, out, fmt.value, run_id=run,  # type: ignore[arg-type]
                            since=since_at, force=force, on_progress=on_progress)
    console(stderr=True).print(f"exported {rows} rows of {table} to {out}")
