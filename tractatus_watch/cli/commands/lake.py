"""Store housekeeping and moves: `lake maintain`, `migrate`."""

from __future__ import annotations

from typing import Annotated

import typer

from ..app import DataPathOption, DbOption, app, open_store
from ..config import CliError, parse_duration, resolve_store
from ..output import console, emit_frame

lake_app = typer.Typer(no_args_is_help=True, help="Keep a store small and fast.")
app.add_typer(lake_app, name="lake")


@lake_app.command("maintain")
def maintain_command(
    db: DbOption = None, data_path: DataPathOption = None,
    keep: Annotated[str, typer.Option(
        "--keep", help="Keep snapshots (time travel, readers' views) younger than this; older "
                       "ones expire and their files are deleted.")] = "1h",
) -> None:
    """Fold rollup partials and trim cursor history; on a DuckLake also merge the small
    Parquet files each commit writes and expire old snapshots. Safe while collectors run."""
    from ...storage.maintain import maintain

    keep_for = parse_duration(keep, "--keep")
    with open_store(db, data_path, read_only=False) as store:
        report = maintain(store, keep=keep_for)
        label = store.label
    out = console()
    out.print(f"{label}: maintained in {report.seconds:.1f} s")
    out.print(f"  rollup rows {report.rollup_rows_before:,} -> {report.rollup_rows_after:,}; "
              f"cursor history trimmed by {report.cursor_rows_trimmed:,}")
    if report.files_before is not None:
        out.print(f"  data files {report.files_before:,} -> {report.files_after:,}; "
                  f"{report.snapshots_expired:,} snapshots expired, "
                  f"{report.files_deleted:,} old files deleted")


@app.command("migrate")
def migrate_command(
    source: Annotated[str, typer.Option(
        "--from", metavar="STORE", help="The store to copy (duckdb:PATH, ducklake:postgres:…).")],
    dest: Annotated[str, typer.Option(
        "--to", metavar="STORE", help="The store to copy into (created if new; must be empty "
                                      "unless --force).")],
    data_path: DataPathOption = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace whatever the target holds.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Copy everything from one store to another (DuckDB file <-> DuckLake), then prove the
    copy exact: row counts and checksums of every table. Exit 1 if they differ."""
    from ...storage.transfer import copy_store

    if fmt not in ("table", "json"):
        raise CliError("--format: table or json")
    src_target = resolve_store(source)
    dst_target = resolve_store(dest, data_path if dest.startswith("ducklake:") else None)
    if src_target == dst_target:
        raise CliError("--from and --to name the same store")
    with open_store(src_target, read_only=True) as src, \
            open_store(dst_target, read_only=False) as dst:
        report = copy_store(src, dst, replace=force)
    import polars as pl

    frame = pl.DataFrame(
        [{"table": t, "rows": report.rows.get(t, 0),
          "checksum_from": str(report.source.get(t, (0, 0))[1]),
          "checksum_to": str(report.target.get(t, (0, 0))[1]),
          "identical": report.source.get(t) == report.target.get(t)}
         for t in sorted(set(report.source) | set(report.target))],
        schema={"table": pl.String, "rows": pl.Int64, "checksum_from": pl.String,
                "checksum_to": pl.String, "identical": pl.Boolean})
    emit_frame(frame, fmt, None)
    if fmt == "table":
        verdict = "identical" if report.identical else "DIFFERENT"
        console(stderr=True).print(f"copied {sum(report.rows.values()):,} rows from "
                                   f"{src_target.label} to {dst_target.label} in "
                                   f"{report.seconds:.1f} s: {verdict}")
    if not report.identical:
        raise typer.Exit(1)
