"""Printing results: rich tables for people, CSV/JSON/NDJSON/Parquet for programs.

One set of formats for every command that produces rows (`runs`, `query`, `export`,
`report`): `table` (the terminal only), `csv`, `json` (one document), `ndjson` (one object per
line), `parquet` (a file only), and `markdown` for `report`. The format comes from `--format`,
else from the extension of `--out`, else it is `table`. Data is printed verbatim: a cell never
goes through Rich markup or emoji codes."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .config import CliError

if TYPE_CHECKING:  # frames are handed in: polars loads with the command that makes them
    import polars as pl

MAX_TABLE_ROWS = 1_000

TABLE: Final = "table"
MARKDOWN: Final = "markdown"
PARQUET: Final = "parquet"
FILE_FORMATS: Final[tuple[str, ...]] = ("csv", "json", "ndjson", PARQUET)
FRAME_FORMATS: Final[tuple[str, ...]] = (TABLE, *FILE_FORMATS)
REPORT_FORMATS: Final[tuple[str, ...]] = (*FRAME_FORMATS, MARKDOWN)
EXTENSIONS: Final[dict[str, str]] = {
    ".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson",
    ".parquet": PARQUET, ".md": MARKDOWN, ".html": "html", ".htm": "html",
}


def console(stderr: bool = False) -> Console:
    # rich honours NO_COLOR itself; highlight=False keeps numbers plain in pipes. markup and
    # emoji off: whatever we print (a run id, a path, a summary) is shown as it is, never
    # read as `[bold]` or `:x:`.
    return Console(stderr=stderr, highlight=False, soft_wrap=False, markup=False, emoji=False)


def _alternatives(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def format_help(formats: Sequence[str]) -> str:
    """The `--format` help line of a command with these formats."""
    return (f"Output format: {_alternatives(formats)} \\[default: from the extension of --out "
            f"(.csv, .json, .ndjson/.jsonl, .parquet{', .md' if MARKDOWN in formats else ''}), "
            "else table].")


def choose_format(fmt: str | None, out: Path | None, formats: Sequence[str]) -> str:
    """The format to produce: `--format` if given (it always wins), else the one the extension
    of `--out` names, else `table`. Refuses, in one line, a format the command has not, an
    extension we do not know, a table for a file and Parquet for the terminal."""
    if fmt is not None:
        name = fmt.strip().lower()
        if name not in formats:
            raise CliError(f"--format: unknown format {fmt!r}; use {_alternatives(formats)}")
    elif out is None:
        name = TABLE if TABLE in formats else formats[0]
    else:
        guessed = EXTENSIONS.get(out.suffix.lower())
        if guessed is None or guessed not in formats:
            known = [f for f in formats if f != TABLE]
            names = ["/".join(e for e, f in EXTENSIONS.items() if f == fmt_) for fmt_ in known]
            what = (f"a {guessed} file" if guessed else
                    f"the extension {out.suffix!r}" if out.suffix else "no extension")
            raise CliError(f"cannot tell the format of {out} ({what}): name it "
                           f"{_alternatives(names)}, or give --format {_alternatives(known)}")
        name = guessed
    if name == TABLE and out is not None:
        raise CliError(f"--format table prints to the terminal; to write {out} use "
                       f"{_alternatives([f for f in formats if f != TABLE])}")
    if name == PARQUET and out is None:
        raise CliError("--format parquet needs a file: add --out FILE")
    return name


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):
        # ", " so that a narrow column wraps between items rather than inside one.
        return ", ".join(map(_text, value))
    return str(value)


# Each column costs its padding and a separator; a folded column keeps at least a few
# characters. Used to decide whether the key columns fit a table at all.
_COLUMN_COST: Final = 3
_FOLDED_MIN: Final = 4


def frame_table(df: pl.DataFrame, title: str | None = None,
                keys: Sequence[str] = ()) -> Table:
    """A rich table of a frame, verbatim (cells are Text: never read as markup or emoji
    codes). The `keys` columns are never cut or wrapped; the others fold, so a narrow
    terminal makes rows taller, not shorter."""
    table = Table(title=Text(title) if title else None, header_style="bold",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    widths = _key_widths(df, keys)
    for name, dtype in df.schema.items():
        table.add_column(Text(name), justify="right" if dtype.is_numeric() else "left",
                         no_wrap=name in widths, min_width=widths.get(name),
                         overflow="fold")
    for row in df.head(MAX_TABLE_ROWS).iter_rows():
        table.add_row(*(Text(_text(v)) for v in row))
    return table


def _key_widths(df: pl.DataFrame, keys: Sequence[str]) -> dict[str, int]:
    return {k: max([len(k), *(len(_text(v)) for v in df[k].head(MAX_TABLE_ROWS))])
            for k in keys if k in df.columns}


def fits(df: pl.DataFrame, keys: Sequence[str], width: int) -> bool:
    """Whether a table of `df` can show its key columns whole in `width` characters."""
    key_widths = _key_widths(df, keys)
    others = df.width - len(key_widths)
    return sum(key_widths.values()) + others * _FOLDED_MIN + df.width * _COLUMN_COST <= width


def frame_records(df: pl.DataFrame) -> str:
    """One `column  value` line per field and a blank line between rows (psql's expanded
    display): for a terminal too narrow for the key columns of a table. Plain text, never
    wrapped or cut by us (the terminal wraps a long value)."""
    pad = max((len(name) for name in df.columns), default=0)
    blocks = ["\n".join(f"{name.ljust(pad)}  {_text(value)}".rstrip()
                        for name, value in row.items())
              for row in df.head(MAX_TABLE_ROWS).iter_rows(named=True)]
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def emit_frame(df: pl.DataFrame, fmt: str, out: Path | None, force: bool = False,
               keys: Sequence[str] = ()) -> None:
    """Print or write a result as a table, csv, json, ndjson or parquet; a file is written 0600
    and atomically (records/files.atomic_file), with the same bytes `export` would write."""
    from ..records.files import atomic_file
    from ..storage.export import write_frame

    if fmt == TABLE:
        if out is not None:
            raise CliError("--format table prints to the terminal; use csv, json, ndjson or "
                           "parquet with --out")
        term = console()
        if fits(df, keys, term.width):
            term.print(frame_table(df, keys=keys))
        else:
            sys.stdout.write(frame_records(df))
        if df.height > MAX_TABLE_ROWS:
            console(stderr=True).print(f"({df.height - MAX_TABLE_ROWS} more rows: use --format "
                                       "csv or --out)")
        return
    if fmt not in FILE_FORMATS:
        raise CliError(f"unknown format {fmt!r}; use {_alternatives(FRAME_FORMATS)}")
    if out is not None:
        with atomic_file(out, force=force) as fh:
            write_frame(df, fh, fmt)  # type: ignore[arg-type]
        return
    if fmt == PARQUET:
        raise CliError("--format parquet needs a file: add --out FILE")
    buf = io.BytesIO()
    write_frame(df, buf, fmt)  # type: ignore[arg-type]
    sys.stdout.write(buf.getvalue().decode("utf-8"))


def emit_text(text: str, out: Path | None, force: bool = False) -> None:
    """A whole document (JSON, Markdown) to stdout or, atomically and 0600, to `out`."""
    from ..records.files import atomic_file

    if out is None:
        sys.stdout.write(text)
        return
    with atomic_file(out, force=force) as fh:
        fh.write(text.encode("utf-8"))
