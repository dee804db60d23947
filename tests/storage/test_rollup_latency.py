"""The latency histogram (rollup_latency, schema v5): the report's latency percentiles and
action kinds from it equal the same figures over the raw decisions, exactly, through partial
rows of many commits, after compaction, and for a store migrated from v4."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from tractatus_watch.storage import queries as Q
from tractatus_watch.storage.schema import MIGRATIONS, compact_rollups
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer
from support.synthetic import decisions_batch

RAW_LATENCY = """
    SELECT arm, quantile_cont(latency_us, 0.5) AS p50_us,
           quantile_cont(latency_us, 0.99) AS p99_us, avg(latency_us) AS mean_us,
           sum(latency_us)::BIGINT AS total_us
    FROM decisions WHERE run_id = ? GROUP BY arm ORDER BY arm"""
RAW_KINDS = """
    SELECT arm, action_kind, count(*)::BIGINT AS actions, count_if(executed)::BIGINT AS executed
    FROM decisions WHERE run_id = ? GROUP BY arm, action_kind
    ORDER BY arm, executed DESC, action_kind"""


def _store(path: Path, sizes: list[int]) -> Store:
    store = Store.open(path)
    writer = Writer(store, flush_interval_s=0.0)
    start = 0
    for n in sizes:  # one commit each: partial rows per commit
        writer.submit(decisions_batch(start, n, run_id="r", rounds=4, agents=3, seed=7,
                                      total=sum(sizes)))
        writer.flush()
        start += n
    writer.close()
    return store


def _assert_as_raw(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    raw = pl.DataFrame(con.execute(RAW_LATENCY, ["r"]).fetchall(), orient="row",
                       schema=["arm", "p50_us", "p99_us", "mean_us", "total_us"])
    got = Q.latency(con, "r")
    assert got.select(raw.columns).rows() == raw.rows()
    assert Q.action_kinds(con, "r").rows() == con.execute(RAW_KINDS, ["r"]).fetchall()
    return got


def test_latency_and_kinds_from_the_histogram_equal_the_raw_figures(tmp_path: Path) -> None:
    # 2,013 decisions per arm at most: odd and even counts, p99 between two stored values.
    store = _store(tmp_path / "a.duckdb", [7, 300, 1, 1500, 217, 2000])
    try:
        con = store.cursor()
        assert con.execute("SELECT count(*) > count(DISTINCT (arm, action_kind, latency_us)) "
                           "FROM rollup_latency").fetchall() == [(True,)]  # partials
        got = _assert_as_raw(con)
        # Interpolated percentiles are among them (not only values that were stored).
        assert any(v != int(v) for v in got["p99_us"].to_list() + got["p50_us"].to_list())
        compact_rollups(con)
        _assert_as_raw(con)
        con.close()
    finally:
        store.close()


def test_migration_backfills_the_histogram(tmp_path: Path) -> None:
    path = tmp_path / "b.duckdb"
    _store(path, [999, 2002]).close()
    con = duckdb.connect(str(path))
    # Back to v4: as a store written before the histogram existed.
    for table in ("rollup_latency", "rollup_round", "rollup_rule_round",
                  "rollup_check_latency", "witnessed", "rollup_witness"):
        con.execute(f"DROP TABLE {table}")
    for column in ("penalize_mode", "penalized"):  # and the later columns (v8)
        con.execute(f"ALTER TABLE rollup_agent DROP COLUMN {column}")
    con.execute("DELETE FROM schema_version WHERE version >= 5")
    con.close()
    store = Store.open(path)
    try:
        assert [m[0] for m in MIGRATIONS][4:6] == [5, 6]
        con = store.cursor()
        _assert_as_raw(con)
        con.close()
    finally:
        store.close()
