"""The report command."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated, Optional

import typer

from ..app import DataPathOption, DbOption, TokenFileOption, app, open_store, pick_run
from ..output import console


class ReportFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    json = "json"


@app.command()
def report(
    run: Annotated[Optional[str], typer.Option("--run", help="Run to report [default: latest].")]
    = None,
    baseline: Annotated[Optional[str], typer.Option(
        "--baseline", help="Run whose ungoverned arm is the baseline [default: the same run].")]
    = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="Output format.")]
    = ReportFormat.table,
    db: DbOption = None, data_path: DataPathOption = None, token_file: TokenFileOption = None,
) -> None:
    """The governed-vs-ungoverned table (Demo 2) of a run, computed from stored data."""
    import json

    from ...monitor.report import build_report
    from ..report_render import markdown, rich_table

    with open_store(db, data_path, read_only=True, token_file=token_file) as store:
        con = store.cursor()
        run_id = pick_run(con, run)
        result = build_report(con, run_id, pick_run(con, baseline) if baseline else None)
    if fmt == ReportFormat.json:
        print(json.dumps(result.to_json(), indent=2))
    elif fmt == ReportFormat.markdown:
        sys.stdout.write(markdown(result))
    else:
        console().print(rich_table(result))
