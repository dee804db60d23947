"""Storage commands: runs, query, export."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..app import DataPathOption, DbOption, TokenFileOption, app, open_store, pick_run
from ..config import CliError, parse_since
from ..output import (FILE_FORMATS, FRAME_FORMATS, choose_format, console, emit_frame,
                      format_help)

if TYPE_CHECKING:  # loaded by the commands that use them: `tractatus-watch` starts faster
    import polars as pl


FrameFormatOption = Annotated[Optional[str], typer.Option(
    "--format", metavar="FORMAT", help=format_help(FRAME_FORMATS))]
OutOption = Annotated[Optional[Path], typer.Option(
    "--out", metavar="FILE",
    help="Write to this file (0600, atomically) instead of the terminal.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Overwrite --out.")]
# The columns of the `runs` table a reader copies from: shown whole at any width.
RUN_KEYS = ("run_id",)
# What the `runs` table shows (csv, json, ndjson and parquet hold every column).
RUN_TABLE_COLUMNS = ("run_id", "name", "arms", "rounds", "actions", "escaped", "witnessed",
                     "last_ts")


def checked_output(fmt: str | None, out: Path | None, force: bool,
                   formats: tuple[str, ...] = FRAME_FORMATS) -> str:
    """The format to produce, with `--out` checked before any work."""
    from ...records.files import check_destination

    chosen = choose_format(fmt, out, formats)
    if out is not None:
        check_destination(out, force=force)
    return chosen


@app.command()
def runs(db: DbOption = None, data_path: DataPathOption = None,
         token_file: TokenFileOption = None, fmt: FrameFormatOption = None,
         out: OutOption = None, force: ForceOption = False) -> None:
    """List the stored runs, newest first."""
    import polars as pl

    from ...monitor.report import witness_by_arm
    from ...storage import queries

    chosen = checked_output(fmt, out, force)
    with open_store(db, data_path, read_only=True, token_file=token_file) as store:
        con = store.cursor()
        df = queries.runs(con)
        # Per arm, the gateway's witness (witnessed coverage, ungoverned actions).
        witnessed = [witness_by_arm(con, run) for run in df["run_id"]]
    df = df.with_columns(pl.Series("witnessed", witnessed, dtype=pl.List(pl.Struct({
        "arm": pl.String, "witnessed": pl.Int64, "governed": pl.Int64,
        "ungoverned": pl.Int64, "unwitnessed_decisions": pl.Int64,
        "witnessed_coverage": pl.Float64}))))
    if df.is_empty() and chosen == "table":
        console().print("no runs stored yet: run `tractatus-watch demo` or a collector")
        return
    emit_frame(runs_table(df) if chosen == "table" else df, chosen, out, force, keys=RUN_KEYS)


def runs_table(df: pl.DataFrame) -> pl.DataFrame:
    """The columns of `runs` a person scans, narrow enough for 80 columns: the name only
    where it says something the run id does not, arms by name (per-arm figures are in
    `--format json`), each arm's witnessed coverage where the gateway witnessed any run."""
    import polars as pl

    keep = [c for c in RUN_TABLE_COLUMNS if c in df.columns]
    if "witnessed" in keep and not df["witnessed"].list.len().sum():
        keep.remove("witnessed")  # no run behind the gateway's proxy: nothing to show
    if "name" in keep and df.filter(pl.col("name").is_not_null()
                                    & (pl.col("name") != pl.col("run_id"))).is_empty():
        keep.remove("name")
    view = df.select(keep)
    if "witnessed" in keep:
        # The witnessed coverage of the arms that govern (SDK coverage above 0): one number in
        # the usual run; per-arm figures of every arm are in `--format json`.
        view = view.with_columns(pl.struct("arms", "witnessed").map_elements(
            _governing_witness, return_dtype=pl.String).alias("witnessed"))
    arms = view.schema.get("arms")
    if isinstance(arms, pl.List) and isinstance(arms.inner, pl.Struct) \
            and "arm" in [f.name for f in arms.inner.fields]:
        view = view.with_columns(pl.col("arms").list.eval(pl.element().struct.field("arm")))
    return view.rename({"last_ts": "last data"}) if "last_ts" in keep else view


def _governing_witness(row: dict[str, Any]) -> str:
    governing = {a["arm"] for a in row["arms"] or () if a.get("covered")}
    shown = [a for a in row["witnessed"] or () if a["arm"] in governing]
    cells = ["n/a" if a["witnessed_coverage"] is None else f"{a['witnessed_coverage'] * 100:.1f}%"
             for a in shown]
    if len(cells) > 1:
        cells = [f"{a['arm']} {c}" for a, c in zip(shown, cells)]
    return ", ".join(cells) or "-"


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="A SQL query over the stored tables.")],
    db: DbOption = None, data_path: DataPathOption = None, token_file: TokenFileOption = None,
    fmt: FrameFormatOption = None, out: OutOption = None, force: ForceOption = False,
) -> None:
    """Run one read-only SELECT over the stored tables, e.g. `tractatus-watch query "SELECT *
    FROM runs"` (no files, other databases, settings or writes)."""
    import duckdb

    from ...storage import readonly

    chosen = checked_output(fmt, out, force)
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
    emit_frame(df, chosen, out, force)


@app.command()
def export(
    table: Annotated[Optional[str], typer.Option(
        "--table", help="Table to export (see `query`).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", metavar="FILE", help="Output file (0600, written atomically).")] = None,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", metavar="FORMAT",
        help="File format: csv, json, ndjson or parquet (zstd) \\[default: from the "
             "extension of --out: .csv, .json, .ndjson/.jsonl, .parquet].")] = None,
    run: Annotated[Optional[str], typer.Option("--run", help="Only this run.")] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="Only rows since a time: 30m, 2h, 7d or ISO-8601.")] = None,
    tensorboard: Annotated[Optional[Path], typer.Option(
        "--tensorboard", metavar="DIR", file_okay=False,
        help="Instead of a table: write the per-round governance scalars of --run (default: "
             "the latest run) as TensorBoard event files under DIR/<run>/, keyed by the "
             "training step (round). Needs tractatus-watch[tensorboard].")] = None,
    force: ForceOption = False,
    db: DbOption = None, data_path: DataPathOption = None, token_file: TokenFileOption = None,
) -> None:
    """Export a table (all of it, one run, rows since a time) to CSV, JSON, NDJSON or Parquet,
    streamed: the format comes from the file's extension unless --format says otherwise.
    With --tensorboard DIR: a run's governance curves as TensorBoard event files."""
    if tensorboard is not None:
        _export_tensorboard(tensorboard, run, table, out, fmt, since, db, data_path, token_file)
        return
    for option, value in (("--table", table), ("--out", out)):
        if value is None:  # click's wording: a missing option, whichever kind of export
            raise CliError(f"Missing option '{option}': export needs --table and --out, or "
                           "--tensorboard DIR --run RUN")
    assert table is not None and out is not None
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ...storage.export import export_table

    chosen = checked_output(fmt, out, force, FILE_FORMATS)  # before any work
    since_at = parse_since(since) if since else None
    started = time.monotonic()
    with open_store(db, data_path, read_only=True, token_file=token_file) as store, Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), console=console(stderr=True), transient=True,
            disable=not sys.stderr.isatty()) as progress:
        con = store.cursor()
        if run is not None:
            pick_run(con, run)  # an unknown run is an error, not an empty file
        # The description is read as markup: the table name is the user's text.
        task = progress.add_task(f"exporting {escape(table)}", visible=False)

        def on_progress(done: int, total: int) -> None:
            # Only show a bar once the export has taken about a second.
            progress.update(task, completed=done, total=total,
                            visible=time.monotonic() - started > 1.0)

        rows = export_table(con, table, out, chosen, run_id=run,  # type: ignore[arg-type]
                            since=since_at, force=force, on_progress=on_progress)
    console(stderr=True).print(f"exported {rows} rows of {table} to {out} ({chosen})")


def _export_tensorboard(logdir: Path, run: str | None, table: str | None, out: Path | None,
                        fmt: str | None, since: str | None, db: Any, data_path: Any,
                        token_file: Any) -> None:
    """`export --tensorboard DIR`: the bridge's scalars of one stored run (every round)."""
    import importlib.util

    given = [name for name, value in (("--table", table), ("--out", out), ("--format", fmt),
                                      ("--since", since)) if value is not None]
    if given:
        raise CliError(f"--tensorboard writes a run's event files: drop {', '.join(given)}")
    if importlib.util.find_spec("tensorboardX") is None:
        raise CliError("--tensorboard needs the tensorboard extra: pip install "
                       "'tractatus-watch[tensorboard]'")
    if logdir.exists() and not logdir.is_dir():
        raise CliError(f"--tensorboard: {logdir} is not a folder")
    from ...monitor.tracker_bridge import export_tensorboard, safe_name

    with open_store(db, data_path, read_only=True, token_file=token_file) as store:
        con = store.cursor()
        run_id = pick_run(con, run)  # an unknown run: one line, exit 2
        folder = logdir / safe_name(run_id)
        if folder.is_dir() and any(p.name.startswith("events.out.tfevents")
                                   for p in folder.iterdir()):
            # A second export would write every step again: TensorBoard would show both.
            raise CliError(f"{folder} already holds event files; remove them or choose "
                           "another --tensorboard DIR")
        try:
            folder, steps = export_tensorboard(con, run_id, logdir)
        except OSError as exc:
            raise CliError(f"--tensorboard: cannot write {logdir}: "
                           f"{exc.strerror or exc}") from None
    from rich.markup import escape

    # Read as markup: the run id and the folder are the user's text; one line, whole path.
    console(stderr=True).print(escape(f"exported {steps} rounds of run {run_id} to {folder} "
                                      "(TensorBoard event files)"), soft_wrap=True)
