"""Printing results: rich tables for people, CSV/JSON/Parquet for programs."""

from __future__ import annotations

import io
import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from .config import CliError

MAX_TABLE_ROWS = 1_000


def console(stderr: bool = False) -> Console:
    # rich honours NO_COLOR itself; highlight=False keeps numbers plain in pipes.
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def frame_table(df: pl.DataFrame, title: str | None = None) -> Table:
    table = Table(title=title, header_style="bold", show_lines=False)
    for name, dtype in df.schema.items():
        table.add_column(name, justify="right" if dtype.is_numeric() else "left")
    for row in df.head(MAX_TABLE_ROWS).iter_rows():
        table.add_row(*(_cell(v) for v in row))
    return table


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def frame_json(df: pl.DataFrame) -> str:
    return json.dumps(df.to_dicts(), default=_json_default, indent=2)


def flat(df: pl.DataFrame) -> pl.DataFrame:
    """List and struct columns as text, for formats that hold only scalars (CSV)."""
    exprs = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, pl.List):
            exprs.append(pl.col(name).cast(pl.List(pl.String)).list.join(",").alias(name))
        elif isinstance(dtype, (pl.Struct, pl.Array, pl.Object)):
            exprs.append(pl.col(name).map_elements(str, return_dtype=pl.String).alias(name))
    return df.with_columns(exprs) if exprs else df


def emit_frame(df: pl.DataFrame, fmt: str, out: Path | None, force: bool = False) -> None:
    """Print or write a result in table, csv, json or parquet form; a file is written 0600
    and atomically (records/files.atomic_file)."""
    from ..records.files import atomic_file, check_destination

    if out is not None:
        check_destination(out, force=force)
    if fmt == "table":
        if out is not None:
            raise CliError("--format table prints to the terminal; use csv, json or parquet "
                           "with --out")
        console().print(frame_table(df))
        if df.height > MAX_TABLE_ROWS:
            console(stderr=True).print(f"({df.height - MAX_TABLE_ROWS} more rows: use --format "
                                       "csv or --out)")
        return
    if fmt == "parquet":
        if out is None:
            raise CliError("--format parquet needs --out FILE")
        with atomic_file(out, force=force) as fh:
            df.write_parquet(fh, compression="zstd")
        return
    if fmt == "csv":
        buf = io.StringIO()
        flat(df).write_csv(buf)
        text = buf.getvalue()
    elif fmt == "json":
        text = frame_json(df) + "\n"
    else:
        raise CliError(f"unknown format {fmt!r}; use table, csv, json or parquet")
    if out is None:
        sys.stdout.write(text)
    else:
        with atomic_file(out, force=force) as fh:
            fh.write(text.encode("utf-8"))
