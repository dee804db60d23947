"""Alert state on DuckDB: the `alerts`, `alert_events` and `silences` tables behind the alert
engine's AlertStateStore protocol. Only the alert evaluator writes these tables, through its own
cursor, so it never conflicts with the event writer (on a lake: one leading evaluator)."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import duckdb

from ..analysis.alerts.engine import AlertState, Silence, Transition
from .coordination import retry_conflicts
from .store import Store
from .transaction import transaction

_TIME_COLUMNS = ("active_since", "updated_at", "ts", "starts_at", "ends_at")


def _ts(value: Any) -> Any:
    """Epoch seconds -> naive UTC datetime, as every TIMESTAMP column here holds."""
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc).replace(tzinfo=None)
    return value


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    con.executemany(  # alert rows are few per evaluation; executemany is fine at this size
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [[_ts(r[c]) if c in _TIME_COLUMNS else r[c] for c in cols] for r in rows])


class DuckDBAlertStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._local = threading.local()

    def _con(self) -> duckdb.DuckDBPyConnection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = self._store.cursor()
        return con

    def _rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        cur = self._con().execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def load_active(self) -> dict[str, AlertState]:
        return {r["fingerprint"]: AlertState.from_row(r)
                for r in self._rows("SELECT * FROM alerts WHERE state <> 'inactive'")}

    def save(self, transitions: Sequence[Transition], states: Mapping[str, AlertState]) -> None:
        con = self._con()

        def attempt() -> None:
            with transaction(con):
                con.execute("DELETE FROM alerts")
                _insert(con, "alerts", [s.to_row() for s in states.values()])
                _insert(con, "alert_events", [t.to_row() for t in transitions])

        # One evaluator writes these tables, but `lake maintain` may rewrite their files.
        retry_conflicts(attempt)

    def silences(self, now: float) -> list[Silence]:
        return [Silence.from_row(r) for r in self._rows(
            "SELECT * FROM silences WHERE starts_at <= ? AND ends_at > ?", [_ts(now), _ts(now)])]

    def add_silence(self, silence: Silence) -> None:
        _insert(self._con(), "silences", [silence.to_row()])

    def expire_silence(self, silence_id: str, now: float) -> bool:
        con = self._con()
        found = con.execute("SELECT count(*) FROM silences WHERE silence_id = ? AND ends_at > ?",
                            [silence_id, _ts(now)]).fetchall()[0][0]
        if found:
            con.execute("UPDATE silences SET ends_at = ? WHERE silence_id = ?",
                        [_ts(now), silence_id])
        return bool(found)
