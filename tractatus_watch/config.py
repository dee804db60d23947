"""Where things are: the database path and small parsers for command-line values."""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

DB_ENV = "TRACTATUS_WATCH_DB"


class CliError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def default_db_path() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "tractatus-watch" / "watch.duckdb"


def resolve_db(db: Path | None) -> Path:
    """--db, else $TRACTATUS_WATCH_DB (typer fills it), else the XDG default."""
    return (db or default_db_path()).expanduser()


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`30m`, `2h`, `7d` (before now) or an ISO-8601 time; returned as naive UTC like our data."""
    now = now or datetime.now(timezone.utc)
    match = _RELATIVE.match(text.strip())
    if match:
        moment = now - timedelta(**{_UNITS[match[2]]: float(match[1])})
    else:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise CliError(f"--since: expected a duration like 30m, 2h, 7d or an ISO time, "
                           f"got {text!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(tzinfo=None)
