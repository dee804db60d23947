"""Where things are: the database path and small parsers for command-line values."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..records.durations import EXAMPLES, DurationError, parse_seconds
from ..storage.target import StoreTarget, parse_target

STORE_ENV = "TRACTATUS_WATCH_STORE"
DB_ENV = "TRACTATUS_WATCH_DB"  # the older name; still read
DATA_PATH_ENV = "TRACTATUS_WATCH_DATA_PATH"
TOKEN_ENV = "TRACTATUS_WATCH_TOKEN"


class CliError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def default_db_path() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "tractatus-watch" / "watch.duckdb"


def resolve_store(spec: str | None, data_path: str | None = None) -> StoreTarget:
    """--store/--db, else $TRACTATUS_WATCH_STORE or $TRACTATUS_WATCH_DB (typer fills them),
    else the XDG default file."""
    if not spec:
        return StoreTarget("duckdb", path=default_db_path())
    target = parse_target(spec, data_path=data_path)
    if data_path and target.kind != "ducklake":
        raise CliError("--data-path is for a ducklake: store")
    return target


def _relative(text: str) -> timedelta | None:
    try:
        return timedelta(seconds=parse_seconds(text))
    except DurationError:
        return None


def parse_duration(text: str, option: str) -> timedelta:
    """A duration of records/durations.py: `0`, `30m`, `1h30m`, `7d`, `2w`."""
    span = _relative(text)
    if span is None:
        raise CliError(f"{option}: expected a duration like {EXAMPLES}, got {text!r}")
    return span


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A duration before now (`30m`, `1h30m`, `7d`) or an ISO-8601 time; naive UTC like our data."""
    now = now or datetime.now(timezone.utc)
    span = _relative(text)
    if span is not None:
        moment = now - span
    else:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise CliError(f"--since: expected a duration like {EXAMPLES} or an ISO time, "
                           f"got {text!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(tzinfo=None)
