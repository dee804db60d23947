"""Housekeeping: fold appended partials, trim cursor history, and on a lake merge the small
Parquet files each commit writes and expire old snapshots.

Safe while collectors write: folds delete only the rows their snapshot saw (concurrent appends
survive), and every step retries when it loses a commit race.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import duckdb

from .coordination import retry_conflicts
from .schema import ROLLUP_KEYS, compact_rollups
from .store import LAKE_CATALOG, Store
from .transaction import transaction


@dataclass
class MaintainReport:
    rollup_rows_before: int
    rollup_rows_after: int
    cursor_rows_trimmed: int
    files_before: int | None  # lake only: live data files
    files_after: int | None
    snapshots_expired: int | None
    files_deleted: int | None
    seconds: float


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(con.execute(sql).fetchall()[0][0] or 0)


def _rollup_rows(con: duckdb.DuckDBPyConnection) -> int:
    return _scalar(con, "SELECT " + " + ".join(f"(SELECT count(*) FROM {t})"
                                               for t in ROLLUP_KEYS))


def live_files(con: duckdb.DuckDBPyConnection) -> int:
    """Data files in the lake's current snapshot (what a query has to open)."""
    return _scalar(con, f"SELECT count(*) FROM __ducklake_metadata_{LAKE_CATALOG}"
                        ".ducklake_data_file WHERE end_snapshot IS NULL")


def trim_cursors(con: duckdb.DuckDBPyConnection) -> int:
    """Keep the newest cursor row per source (writers append one per commit)."""
    with transaction(con):
        n = _scalar(con, "SELECT count(*) FROM ingest_state")
        con.execute("DELETE FROM ingest_state WHERE (source, updated_at) NOT IN "
                    "(SELECT source, max(updated_at) FROM ingest_state GROUP BY source)")
        return n - _scalar(con, "SELECT count(*) FROM ingest_state")


def maintain(store: Store, *, keep: timedelta = timedelta(hours=1)) -> MaintainReport:
    """Fold rollups, trim cursors; on a lake also merge files and expire snapshots older than
    `keep` (time travel and readers' snapshots younger than that stay intact)."""
    t0 = time.perf_counter()
    con = store.cursor()
    try:
        before = _rollup_rows(con)
        files_before = live_files(con) if store.is_lake else None
        retry_conflicts(lambda: compact_rollups(con))
        trimmed = retry_conflicts(lambda: trim_cursors(con))
        after = _rollup_rows(con)
        expired = deleted = files_after = None
        if store.is_lake:
            lake = f"'{LAKE_CATALOG}'"
            cutoff = f"now() - INTERVAL '{int(keep.total_seconds())} seconds'"
            retry_conflicts(lambda: con.execute(f"CALL ducklake_flush_inlined_data({lake})"))
            retry_conflicts(lambda: con.execute(f"CALL ducklake_merge_adjacent_files({lake})"))
            # The folds above delete rows; rewrite files where deletes dominate.
            retry_conflicts(lambda: con.execute(f"CALL ducklake_rewrite_data_files({lake})"))
            # Counted in SQL: their rows hold time zones, which Python would need pytz for.
            expired = retry_conflicts(lambda: _scalar(con, "SELECT count(*) FROM "
                                      f"ducklake_expire_snapshots({lake}, older_than => {cutoff})"))
            deleted = retry_conflicts(lambda: _scalar(
                con, "SELECT count(*) FROM "
                f"ducklake_cleanup_old_files({lake}, older_than => {cutoff})"))
            files_after = live_files(con)
        else:
            con.execute("CHECKPOINT")
    finally:
        con.close()
    return MaintainReport(before, after, trimmed, files_before, files_after, expired, deleted,
                          time.perf_counter() - t0)
