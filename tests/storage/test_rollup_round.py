"""The per-round rollups (schema v6: rollup_round, rollup_rule_round): every figure the charts,
KPIs and rule rates read from them equals the same sum over the per-agent and per-minute rollups
they fold, through partial rows of many commits, after compaction, and for a store migrated
from v5."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tractatus_watch.storage import queries as Q
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
    con.execute("DROP TABLE rollup_round")
    con.execute("DROP TABLE rollup_rule_round")
    con.execute("DELETE FROM schema_version WHERE version >= 6")
    con.close()
    store = Store.open(path)
    try:
        con = store.cursor()
        _assert_folds(con)
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
