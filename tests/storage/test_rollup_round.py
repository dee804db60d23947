"""The per-round rollups (schema v6: rollup_round, rollup_rule_round): every figure the charts,
KPIs and rule rates read from them equals the same sum over the per-agent and per-minute rollups
they fold, through partial rows of many commits, after compaction, and for a store migrated
from v5."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np

from tractatus_watch.storage import queries as Q
from tractatus_watch.storage.latency_buckets import bucket, bucket_sql, midpoints
from tractatus_watch.storage.schema import compact_rollups
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer
from support.synthetic import decisions_batch

ROUND = """
    SELECT run_id, arm, round, sum(actions), sum(covered), sum(enforce_mode), sum(attempted),
           sum(blocked), sum(escaped), sum(evasions), sum(executed), sum(latency_us_sum),
           sum(reward_n), round(sum(reward_sum), 9), round(sum(reward_sq_sum), 9),
           min(ts_min), max(ts_max), sum(coalesce(would_have_blocked, 0))
    FROM {table} GROUP BY ALL ORDER BY ALL"""
RULE = """
    SELECT run_id, arm, round, service, rule_id, ruleset, sum(checks), sum(enforced),
           sum(warns), sum(escalates), sum(blocks), sum(latency_us_sum), max(latency_us_max),
           sum(coalesce(enforced_blocks, 0))
    FROM {table} GROUP BY ALL ORDER BY ALL"""

HISTOGRAM = """SELECT run_id, arm, service, round, bucket_us, sum(checks)
               FROM rollup_check_latency GROUP BY ALL ORDER BY ALL"""


def _store(path: Path, sizes: list[int]) -> Store:
    store = Store.open(path)
    writer = Writer(store, flush_interval_s=0.0)
    start = 0
    for n in sizes:  # one commit each: partial rows per commit
        writer.submit(decisions_batch(start, n, run_id="r", rounds=4, agents=3, seed=11,
                                      total=sum(sizes), rulesets=True))
        writer.flush()
        start += n
    writer.close()
    return store


def _assert_folds(con: duckdb.DuckDBPyConnection) -> None:
    rounds = con.execute(ROUND.format(table="rollup_round")).fetchall()
    assert rounds and rounds == con.execute(ROUND.format(table="rollup_agent")).fetchall()
    rules = con.execute(RULE.format(table="rollup_rule_round")).fetchall()
    assert rules and rules == con.execute(RULE.format(table="rollup_rule")).fetchall()
    # The raw decisions, for one figure that matters: actions per arm and round.
    assert [(r[1], r[2], r[3]) for r in rounds] == con.execute(
        "SELECT arm, round, count(*) FROM decisions GROUP BY ALL ORDER BY ALL").fetchall()


def test_round_rollups_fold_the_agent_and_minute_rollups(tmp_path: Path) -> None:
    store = _store(tmp_path / "a.duckdb", [5, 400, 1, 900])
    try:
        con = store.cursor()
        (partials, keys), = con.execute(
            "SELECT count(*), count(DISTINCT (arm, round)) FROM rollup_round").fetchall()
        assert partials > keys  # a row per commit and key, summed by the queries
        _assert_folds(con)
        compact_rollups(con)
        assert con.execute("SELECT count(*) = count(DISTINCT (arm, round)) "
                           "FROM rollup_round").fetchall() == [(True,)]
        _assert_folds(con)
        con.close()
    finally:
        store.close()


def test_migration_backfills_the_round_rollups(tmp_path: Path) -> None:
    path = tmp_path / "b.duckdb"
    _store(path, [300, 701]).close()
    con = duckdb.connect(str(path))
    # Back to v5: as a store written before the per-round rollups existed.
    histogram = con.execute(HISTOGRAM).fetchall()
    for table in ("rollup_round", "rollup_rule_round", "rollup_check_latency",
                  "witnessed", "rollup_witness"):  # and every later table
        con.execute(f"DROP TABLE {table}")
    for column in ("penalize_mode", "penalized"):  # and every later column (v8)
        con.execute(f"ALTER TABLE rollup_agent DROP COLUMN {column}")
    con.execute("DELETE FROM schema_version WHERE version >= 6")
    con.close()
    store = Store.open(path)
    try:
        con = store.cursor()
        _assert_folds(con)
        assert con.execute(HISTOGRAM).fetchall() == histogram
        con.close()
    finally:
        store.close()


def test_latest_run_is_the_first_of_runs(tmp_path: Path) -> None:
    """The dashboard follows `latest_run` (one small query) while data flows: it names the
    run `runs()` lists first, newest data first, a run without data by its creation time."""
    store = Store.open(tmp_path / "c.duckdb")
    writer = Writer(store, flush_interval_s=0.0)
    try:
        con = store.cursor()
        assert Q.latest_run(con) is None
        for i, run in enumerate(["old", "new", "mid"]):
            batch = decisions_batch(0, 20, run_id=run, rounds=2, agents=2, seed=i)
            writer.submit(batch)
            writer.flush()
        # Newest data: shift "mid" back so that "new" holds the latest decision.
        con.execute("UPDATE rollup_round SET ts_max = ts_max - INTERVAL 1 HOUR "
                    "WHERE run_id = 'mid'")
        assert Q.latest_run(con) == Q.runs(con)["run_id"][0] == "new"
        con.execute("INSERT INTO runs VALUES ('empty', NULL, now()::TIMESTAMP + INTERVAL 1 DAY, "
                    "NULL, NULL)")
        assert Q.latest_run(con) == Q.runs(con)["run_id"][0] == "empty"
        con.close()
    finally:
        writer.close()
        store.close()


def test_latency_buckets_bound_the_error() -> None:
    """SQL and Python put a latency in the same bucket; the bucket's midpoint is within 1/64
    of every value in it (exact below 64 us)."""
    values = sorted({v for k in range(0, 41) for v in (2 ** k - 1, 2 ** k, 2 ** k + 1)}
                    | set(range(0, 300)) | {12_345, 999_999, 10 ** 9 + 7})
    con = duckdb.connect()
    sql = con.execute(f"SELECT v, {bucket_sql('v')} FROM (SELECT unnest(?::BIGINT[]) AS v)",
                      [values]).fetchall()
    assert sql == [(v, bucket(v)) for v in values]
    mids = midpoints(np.array([bucket(v) for v in values]))
    for v, mid in zip(values, mids):
        assert (mid == v) if v < 64 else abs(mid - v) <= v / 64, (v, mid)


def test_grouped_quantiles_equal_quantile_cont_of_each_group() -> None:
    rng = np.random.default_rng(3)
    groups = [np.unique(rng.integers(0, 500, size=rng.integers(1, 40))) for _ in range(50)]
    counts = [rng.integers(1, 20, size=len(g)) for g in groups]
    starts = np.cumsum([0] + [len(g) for g in groups[:-1]])
    for q in (0.0, 0.5, 0.99, 1.0):
        got = Q.grouped_quantile_cont(np.concatenate(groups).astype(float),
                                      np.concatenate(counts), starts, q)
        want = [Q.quantile_cont([int(v) for v in g], [int(c) for c in n], q)
                for g, n in zip(groups, counts)]
        assert np.allclose(got, want, rtol=0, atol=1e-9), q


def test_check_latency_percentiles_from_the_histogram(tmp_path: Path) -> None:
    """The Overhead view's p50/p99 per service and round: check counts exact, percentiles within
    1.6% of DuckDB's quantile_cont over the raw checks, through partials of many commits."""
    store = _store(tmp_path / "d.duckdb", [50, 700, 3, 1200])
    try:
        con = store.cursor()
        # Spread the latencies over five decades (the synthetic ones span one).
        con.execute("UPDATE checks SET latency_us = (latency_us * latency_us * (idx + 1)) % "
                    "200000")
        con.execute("DELETE FROM rollup_check_latency")
        con.execute(f"INSERT INTO rollup_check_latency SELECT run_id, arm, service, round, "
                    f"{bucket_sql('latency_us')}, count(*) FROM checks GROUP BY ALL")
        exact = con.execute("""
            SELECT service, round, count(*), quantile_cont(latency_us, 0.5),
                   quantile_cont(latency_us, 0.99)
            FROM checks WHERE run_id = 'r' AND arm = 'governed'
            GROUP BY ALL ORDER BY ALL""").fetchall()
        got = Q.latency_by_service(con, "r", "governed").rows()
        assert [g[:3] for g in got] == [e[:3] for e in exact] and len(got) == 4 * 2
        for g, e in zip(got, exact):
            for have, want in zip(g[3:], e[3:]):
                assert abs(have - want) <= want / 64 + 1e-9, (g, e)
        assert Q.latency_by_service(con, "no such run").height == 0
        con.close()
    finally:
        store.close()
