"""Comparing whole databases: row counts and order-independent checksums of every table."""

from __future__ import annotations

import duckdb

from tractatus_watch.storage.schema import NATURAL_KEYS, ROLLUP_FOLDS, ROLLUP_KEYS, table_columns

CONTENT_TABLES = tuple(NATURAL_KEYS) + ("quarantine",)


def fingerprint(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    """(rows, checksum) per event table, and per rollup the folded sums (partial rows differ
    with batching, their totals must not)."""
    out: dict[str, tuple[int, int]] = {}
    for table in CONTENT_TABLES:
        cols = [c for c in table_columns(con, table) if table != "quarantine" or c != "ts"]
        row = con.execute(f"SELECT count(*), coalesce(sum(hash({', '.join(cols)}))::HUGEINT, 0) "
                          f"FROM {table}").fetchall()[0]
        out[table] = (int(row[0]), int(row[1]))
    for table, keys in ROLLUP_KEYS.items():
        measures = [c for c in table_columns(con, table) if c not in keys]
        folds = ", ".join(f"{ROLLUP_FOLDS.get(m, 'sum')}({m}) AS {m}" for m in measures)
        columns = ", ".join(keys + tuple(measures))
        row = con.execute(f"SELECT count(*), coalesce(sum(hash({columns}))"
                          f"::HUGEINT, 0) FROM "
                          f"(SELECT {', '.join(keys)}, {folds} FROM {table} GROUP BY ALL) f"
                          ).fetchall()[0]
        out[table] = (int(row[0]), int(row[1]))
    return out
