"""The `tractatus-watch` Typer app, its shared options and the helpers every command uses.

Command modules (`cli/commands/`) import from here and register on `app`; `cli/__init__.py`
imports them and holds `main`, so nothing here imports a command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from .. import __version__
from ..storage.target import StoreTarget
from .config import DATA_PATH_ENV, DB_ENV, STORE_ENV, TOKEN_ENV, CliError, resolve_store

if TYPE_CHECKING:
    import duckdb

app = typer.Typer(
    name="tractatus-watch", no_args_is_help=True, add_completion=False,
    help="Live governance monitoring for reinforcement-learning training of agents "
         "(Tractatus-style governance + Agent Lightning).",
)

DbOption = Annotated[Optional[str], typer.Option(
    "--store", "--db", envvar=[STORE_ENV, DB_ENV], show_envvar=True, metavar="STORE",
    help="Where the data lives: a DuckDB file (PATH or duckdb:PATH, the default "
         "$XDG_DATA_HOME/tractatus-watch/watch.duckdb), a DuckLake "
         "(ducklake:postgres:<libpq conninfo> with --data-path) or a collector served over "
         "Quack (quack:HOST:PORT, read-only).")]
DataPathOption = Annotated[Optional[str], typer.Option(
    "--data-path", envvar=DATA_PATH_ENV, show_envvar=True, metavar="DIR",
    help="The DuckLake data folder (shared by every writer and reader) or object-storage URL; "
         "needed to create a lake.")]

TokenFileOption = Annotated[Optional[Path], typer.Option(
    "--token-file", dir_okay=False, metavar="FILE",
    help="File whose first line is the token of a quack: store (else "
         "$TRACTATUS_WATCH_TOKEN); a collector run with --serve writes its token to "
         "<database>.quack-token.")]


ExperimentOption = Annotated[Optional[str], typer.Option(
    "--experiment", metavar="NAME",
    help="Group every run this command stores under experiment NAME (seeds and arms "
         "compared by `research --experiment NAME`).")]


def experiment_meta(name: str | None, **replicate: Any) -> dict[str, Any] | None:
    """The run meta that puts a run into experiment `name` (storage/experiments.py), with what
    makes it a replicate (scenario, seed, ...); None without a name."""
    from ..storage.experiments import check_experiment_name

    if name is None:
        return None
    try:
        check_experiment_name(name)
    except ValueError as exc:
        raise CliError(f"--experiment: {exc}") from None
    return {"experiment": name, **{k: v for k, v in replicate.items() if v is not None}}


def _version(value: bool) -> None:
    if value:
        print(f"tractatus-watch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    from ..records.files import apply_umask

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_agent_lightning()
    # Everything this process creates (database, .wal, logs, spools, exports) is 0600 and its
    # folders 0700, unless $TRACTATUS_WATCH_UMASK says otherwise.
    apply_umask()


def _quiet_agent_lightning() -> None:
    """Agent Lightning logs through structlog to stdout by default, which would mix its info
    lines into our output (JSON included): send them to stderr, warnings and above only."""
    import structlog

    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def read_token(token_file: Path | None) -> str | None:
    """A Quack token from a file (first line) or $TRACTATUS_WATCH_TOKEN; never printed."""
    import os

    from ..records.files import SecretFileError, read_secret

    if token_file is not None:
        try:
            return read_secret(token_file, "the token file")
        except SecretFileError as exc:
            raise CliError(str(exc)) from None
    return os.environ.get(TOKEN_ENV) or None


def open_store(db: str | StoreTarget | None, data_path: str | None = None, *, read_only: bool,
               token_file: Path | None = None):
    """Open the store a command names; writers refuse a read-only (Quack) store."""
    from ..storage.store import Store

    target = db if isinstance(db, StoreTarget) else resolve_store(db, data_path)
    if token_file is not None and target.kind != "quack":
        raise CliError(f"--token-file is for a quack:HOST:PORT store, not {target.label}")
    if target.kind == "quack" and not read_only:
        raise CliError(f"{target.label} is served read-only; write to the collector's own "
                       "store, or to a DuckLake")
    return Store.open(target, read_only=read_only,
                      token=read_token(token_file) if target.kind == "quack" else None)


def pick_run(con: duckdb.DuckDBPyConnection, run: str | None) -> str:
    from ..storage import queries

    known = queries.runs(con)["run_id"].to_list()
    if run is None:
        if not known:
            raise CliError("no runs stored yet: run `tractatus-watch demo` or a collector")
        return str(known[0])
    if run not in known:
        raise CliError(f"no run {run!r}; runs: {', '.join(map(str, known[:10]))}")
    return run


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (DuckDB's span several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
