"""Copy a whole store to another (DuckDB file <-> DuckLake), and prove the copy exact.

Rows stream through Arrow record batches in one transaction on the target, so a failed copy
leaves the target as it was. Both sides run the same migrations, so their tables have the same
columns in the same order, and an order-independent checksum per table compares them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import duckdb

from .errors import StoreError
from .schema import SCHEMA_VERSION_TABLE
from .store import Store
from .transaction import transaction

BATCH_ROWS = 122_880  # one DuckDB row group per insert


def data_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = "
        "current_database() AND table_schema = current_schema() AND table_type = 'BASE TABLE' "
        "ORDER BY table_name").fetchall()
    return [r[0] for r in rows if r[0] != SCHEMA_VERSION_TABLE]


def checksums(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    """(rows, sum of row hashes) per table: equal multisets of rows give equal pairs."""
    out: dict[str, tuple[int, int]] = {}
    for table in data_tables(con):
        n, total = con.execute(
            f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0) FROM {table} t").fetchall()[0]
        out[table] = (int(n), int(total))
    return out


@dataclass
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    source: dict[str, tuple[int, int]] = field(default_factory=dict)
    target: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return self.source == self.target


def copy_store(src: Store, dst: Store, *, replace: bool = False,
               progress: Callable[[str, int], None] | None = None) -> CopyReport:
    """Copy every table of `src` into `dst` and compare checksums. `dst` must hold no data
    unless `replace`, which empties it first (in the same transaction)."""
    t0 = time.perf_counter()
    s, d = src.cursor(), dst.cursor()
    report = CopyReport()
    try:
        tables = data_tables(s)
        missing = sorted(set(tables) - set(data_tables(d)))
        if missing:
            raise StoreError(f"{dst.label} lacks tables {', '.join(missing)}")
        occupied = [t for t in tables
                    if d.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]]
        if occupied and not replace:
            raise StoreError(f"{dst.label} already holds data (in {', '.join(occupied)}); "
                             "copy into an empty store, or pass --force to replace it")
        with transaction(d):
            for table in tables:
                if replace:
                    d.execute(f"DELETE FROM {table}")
                reader = s.execute(f"SELECT * FROM {table}").fetch_record_batch(BATCH_ROWS)
                copied = 0
                for batch in reader:
                    d.register("_copy", batch)
                    d.execute(f"INSERT INTO {table} SELECT * FROM _copy")
                    d.unregister("_copy")
                    copied += batch.num_rows
                    if progress is not None:
                        progress(table, copied)
                report.rows[table] = copied
        report.source = checksums(s)
        report.target = checksums(d)
    finally:
        s.close()
        d.close()
    report.seconds = time.perf_counter() - t0
    return report
