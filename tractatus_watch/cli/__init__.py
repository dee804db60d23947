"""The `tractatus-watch` command: `main`, with every command module registered on the app."""

from __future__ import annotations

import sys

import click
import typer

from .app import app, one_line
from .commands import (  # noqa: F401  (each module registers its commands on `app`)
    alerts, collect, demo, lake, report, store, tui)
from .config import CliError

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: user errors are one line on stderr with exit code 2, never a traceback."""
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
