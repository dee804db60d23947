"""The `tractatus-watch` command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import duckdb
import typer

from . import __version__
from .config import DB_ENV, CliError, resolve_db

app = typer.Typer(
    name="tractatus-watch", no_args_is_help=True, add_completion=False,
    help="Live governance monitoring for reinforcement-learning training of agents "
         "(Tractatus-style governance + Agent Lightning).",
)

DbOption = Annotated[Optional[Path], typer.Option(
    "--db", envvar=DB_ENV, show_envvar=True, dir_okay=False,
    help="DuckDB database file [default: $XDG_DATA_HOME/tractatus-watch/watch.duckdb].")]


def _version(value: bool) -> None:
    if value:
        print(f"tractatus-watch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_agent_lightning()


def _quiet_agent_lightning() -> None:
    """Agent Lightning logs through structlog to stdout by default, which would mix its info
    lines into our output (JSON included): send them to stderr, warnings and above only."""
    import structlog

    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def open_store(db: Path | None, *, read_only: bool):
    from .storage.store import Store

    return Store.open(resolve_db(db), read_only=read_only)


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


# Each module registers its commands on `app`; imported last because they import `app`.
from .commands import (  # noqa: E402,F401
    alerts as _alerts, collect as _collect, demo as _demo, report as _report, store as _store,
    tui as _tui)
