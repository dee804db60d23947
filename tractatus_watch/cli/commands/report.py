"""The report command."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from ..app import DataPathOption, DbOption, TokenFileOption, app, open_store, pick_run
from ..output import MARKDOWN, REPORT_FORMATS, TABLE, console, emit_frame, emit_text, format_help
from .store import ForceOption, OutOption, checked_output


@app.command(help=(
    "The governed-vs-ungoverned table (Demo 2) of a run, computed from stored data.\n\n"
    "json is one document (run_id, baseline_run, arms, difference); csv, ndjson and parquet "
    "hold one row per arm (arm and the keys of the document's arms)."))
def report(
    run: Annotated[Optional[str], typer.Option(
        "--run", help="Run to report \\[default: the latest].")] = None,
    baseline: Annotated[Optional[str], typer.Option(
        "--baseline", help="Run whose ungoverned arm is the baseline \\[default: the same run].")]
    = None,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", metavar="FORMAT", help=format_help(REPORT_FORMATS))] = None,
    out: OutOption = None, force: ForceOption = False,
    db: DbOption = None, data_path: DataPathOption = None, token_file: TokenFileOption = None,
) -> None:
    """The Demo 2 table of a run (help above)."""
    from ...monitor.report import build_report
    from rich.text import Text

    from ..report_render import agent_table, arm_rows, markdown, rich_table, ungoverned_lines

    chosen = checked_output(fmt, out, force, REPORT_FORMATS)
    with open_store(db, data_path, read_only=True, token_file=token_file) as store:
        con = store.cursor()
        run_id = pick_run(con, run)
        result = build_report(con, run_id, pick_run(con, baseline) if baseline else None)
    if chosen == "json":
        emit_text(json.dumps(result.to_json(), indent=2) + "\n", out, force)
    elif chosen == MARKDOWN:
        emit_text(markdown(result), out, force)
    elif chosen == TABLE:
        console().print(rich_table(result))
        agents = agent_table(result)
        if agents is not None:
            console().print(agents)
        lines = ungoverned_lines(result)
        if lines:
            console().print(Text("Ungoverned actions (witnessed by the gateway, no decision):"))
            for line in lines:
                console().print(Text("  " + line))
    else:
        emit_frame(arm_rows(result), chosen, out, force)
