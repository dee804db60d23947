"""The research command: the five questions of Demo 2 answered across an experiment's seeds."""

from __future__ import annotations

import json
from typing import Annotated, Final, Optional

import typer

from ..app import DataPathOption, DbOption, TokenFileOption, app, open_store
from ..config import CliError
from ..output import MARKDOWN, TABLE, console, emit_text, format_help
from .store import ForceOption, OutOption, checked_output

RESEARCH_FORMATS: Final = (TABLE, MARKDOWN, "json", "html")


@app.command(help=(
    "Answer the five research questions (q1 overhead vs agents, q2 persistence, q3 evasion, "
    "q4 gap closure, q5 multi-agent) over the seeds of an experiment: per question a "
    "one-sentence verdict, its evidence table, assumptions and stated error rates, and a "
    "chart (html: one self-contained file with SVG plots).\n\n"
    "json is one document keyed q1..q5 (with the experiment, its runs and per-arm figures)."))
def research(
    experiment: Annotated[Optional[str], typer.Option(
        "--experiment", metavar="NAME", help="The experiment \\[default: the latest].")]
    = None,
    margin: Annotated[float, typer.Option(
        "--margin", min=0.0, help="q4: the equivalence margin, in reward units, within which "
        "the gap counts as closed.")] = 0.02,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", metavar="FORMAT", help=format_help(RESEARCH_FORMATS))] = None,
    out: OutOption = None, force: ForceOption = False,
    db: DbOption = None, data_path: DataPathOption = None, token_file: TokenFileOption = None,
) -> None:
    """The research answers of an experiment (help above)."""
    from ...monitor.research import NoExperiment, build_research
    from ...storage.experiments import latest_experiment
    from ..research_render import html_research, markdown_research, rich_research

    chosen = checked_output(fmt, out, force, RESEARCH_FORMATS)
    with open_store(db, data_path, read_only=True, token_file=token_file) as store:
        con = store.cursor()
        name = experiment or latest_experiment(con)
        if name is None:
            raise CliError("no experiment stored yet: run `tractatus-watch demo --seeds 1-5 "
                           "--headless` or collect with --experiment NAME")
        try:
            result = build_research(con, name, margin=margin)
        except NoExperiment as exc:
            raise CliError(str(exc)) from None
    if chosen == "json":
        emit_text(json.dumps(result.to_json(), indent=2) + "\n", out, force)
    elif chosen == "html":
        emit_text(html_research(result), out, force)
    elif chosen == MARKDOWN:
        emit_text(markdown_research(result), out, force)
    else:
        console().print(rich_research(result))
