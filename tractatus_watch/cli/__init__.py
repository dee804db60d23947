"""The `tractatus-watch` command: `main`, with every command module registered on the app.

The base install is the light SDK of training environments (pyproject: no dashboard
dependencies). There the command can only print the hooks file's path (`hooks-path`, what a
trainer's config needs) and otherwise says in one line what to install."""

from __future__ import annotations

import sys

# The top-level modules only `tractatus-watch[dashboard]` installs (and the CLI imports).
DASHBOARD_MODULES = frozenset({"click", "typer", "rich", "duckdb", "polars", "pyarrow", "numpy",
                               "textual", "psutil", "psycopg", "structlog", "uvicorn"})
DASHBOARD_INSTALL = "pip install 'tractatus-watch[dashboard]'"


def missing_dashboard_module(exc: ModuleNotFoundError) -> str | None:
    """The dashboard dependency whose absence raised `exc`, or None if it is something else."""
    top = (exc.name or "").partition(".")[0]
    return top if top in DASHBOARD_MODULES else None


try:
    import click
    import typer

    from .app import app, one_line
    from .commands import (  # noqa: F401  (each module registers its commands on `app`)
        alerts, collect, demo, lake, report, research, rules, store, tui)
    from .config import CliError
    _MISSING: str | None = None
except ModuleNotFoundError as _exc:
    _MISSING = missing_dashboard_module(_exc)
    if _MISSING is None:
        raise

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: user errors are one line on stderr with exit code 2, never a traceback."""
    if _MISSING is not None:
        sys.exit(_light_main(_MISSING, sys.argv[1:]))
    try:
        _run()
    except ModuleNotFoundError as exc:  # a command's own lazy import of the dashboard's stack
        missing = missing_dashboard_module(exc)
        if missing is None:
            raise
        sys.exit(_light_main(missing, sys.argv[1:]))


def _light_main(missing: str, args: list[str]) -> int:
    """The command without the dashboard's dependencies: the hooks path, or what to install."""
    if args == ["hooks-path"]:
        from ..governance import hooks_path

        print(hooks_path())
        return 0
    print(f"error: this is the light SDK install ({missing} is missing): the tractatus-watch "
          f"command needs the dashboard's dependencies: {DASHBOARD_INSTALL} "
          "(here only `tractatus-watch hooks-path` works)", file=sys.stderr)
    return 2


def _run() -> None:
    from ..records.files import FileError
    from ..storage.errors import StoreError

    try:
        code = app(standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except (click.ClickException, typer.TyperException) as exc:
        # typer 0.29 carries its own copy of click: usage errors come as TyperException.
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"error: {exc}", file=sys.stderr)
        code = getattr(exc, "exit_code", 2)
    except click.exceptions.Abort:
        code = 130
    except KeyboardInterrupt:
        code = 130
    except (CliError, StoreError, FileError) as exc:
        # StoreError includes the writer's death (disk full, a file size limit): what was
        # committed before is stored; say why in one line. Anything else is a bug, and its
        # traceback is what a report needs.
        print(f"error: {one_line(exc)}", file=sys.stderr)
        code = 2
    sys.exit(code if isinstance(code, int) else 0)
