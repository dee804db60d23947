"""The `tractatus-watch` command."""

from __future__ import annotations

import logging
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import duckdb
import typer

from . import __version__
from .config import DB_ENV, CliError, parse_since, resolve_db
from .output import console, emit_frame

app = typer.Typer(
    name="tractatus-watch", no_args_is_help=True, add_completion=False,
    help="Live governance monitoring for reinforcement-learning training of agents "
         "(Tractatus-style governance + Agent Lightning).",
)

DbOption = Annotated[Optional[Path], typer.Option(
    "--db", envvar=DB_ENV, show_envvar=True, dir_okay=False,
    help="DuckDB database file [default: $XDG_DATA_HOME/tractatus-watch/watch.duckdb].")]

class QueryFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"

class ExportFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"
    ndjson = "ndjson"

def _version(value: bool) -> None:
    if value:
        print(f"tractatus-watch {__version__}")
        raise typer.Exit()

@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

def open_store(db: Path | None, *, read_only: bool):
    from .storage.store import Store

    return Store.open(resolve_db(db), read_only=read_only)

@app.command()
def runs(db: DbOption = None,
         fmt: Annotated[QueryFormat, typer.Option("--format", help="Output format.")]
         = QueryFormat.table) -> None:
    """List the stored runs, newest first."""
    from .storage import queries

    with open_store(db, read_only=True) as store:
        df = queries.runs(store.cursor())
    if df.is_empty() and fmt == QueryFormat.table:
        console().print("no runs stored yet: run `tractatus-watch demo` or a collector")
        return
    emit_frame(df, fmt.value, None)

@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="A SQL query over the stored tables.")],
    db: DbOption = None,
    fmt: Annotated[QueryFormat, typer.Option("--format", help="Output format.")]
    = QueryFormat.table,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out.")] = False,
) -> None:
    """Run a read-only SQL query, e.g. `tractatus-watch query "SELECT * FROM runs"`."""
    with open_store(db, read_only=True) as store:
        cur = store.cursor()
        try:
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
    db: DbOption = None,
) -> None:
    """Export a table to Parquet (zstd), CSV or NDJSON."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from .storage.export import export_table

    since_at = parse_since(since) if since else None
    started = time.monotonic()
    with open_store(db, read_only=True) as store, Progress(
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

class ReportFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    json = "json"


def pick_run(con: duckdb.DuckDBPyConnection, run: str | None) -> str:
    from .storage import queries

    known = queries.runs(con)["run_id"].to_list()
    if run is None:
        if not known:
            raise CliError("no runs stored yet: run `tractatus-watch demo` or a collector")
        return str(known[0])
    if run not in known:
        raise CliError(f"no run {run!r}; runs: {', '.join(map(str, known[:10]))}")
    return run


@app.command()
def report(
    run: Annotated[Optional[str], typer.Option("--run", help="Run to report [default: latest].")]
    = None,
    baseline: Annotated[Optional[str], typer.Option(
        "--baseline", help="Run whose ungoverned arm is the baseline [default: the same run].")]
    = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="Output format.")]
    = ReportFormat.table,
    db: DbOption = None,
) -> None:
    """The governed-vs-ungoverned table (Demo 2) of a run, computed from stored data."""
    import json

    from .governance.metrics import build_report
    from .report_render import markdown, rich_table

    with open_store(db, read_only=True) as store:
        con = store.cursor()
        run_id = pick_run(con, run)
        result = build_report(con, run_id, pick_run(con, baseline) if baseline else None)
    if fmt == ReportFormat.json:
        print(json.dumps(result.to_json(), indent=2))
    elif fmt == ReportFormat.markdown:
        sys.stdout.write(markdown(result))
    else:
        console().print(rich_table(result))


def main() -> None:
    """Entry point: user errors are one line on stderr with exit code 2, never a traceback."""
    from .storage.errors import StoreError

    try:
        code = app(standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.Abort:
        code = 130
    except KeyboardInterrupt:
        code = 130
    except (CliError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code if isinstance(code, int) else 0)
