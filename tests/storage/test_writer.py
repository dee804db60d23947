"""The writer and store: idempotence, quarantine, cursors, backpressure, schema versions."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pyarrow as pa
import pytest

from tractatus_watch.records.events import (
    Decision, Quarantined, Reward, RolloutTransition, RunEvent,
)
from tractatus_watch.storage import queries as Q
from tractatus_watch.storage.batch import Batch, run_event_batch
from tractatus_watch.storage.errors import SchemaTooNew
from tractatus_watch.storage.schema import LATEST_VERSION, compact_rollups
from tractatus_watch.storage.store import Store
from support.synthetic import decisions_batch
from tractatus_watch.storage.writer import Cursor, Writer


def decision(i: int, *, blocked: bool = False, mode: str = "enforce", arm: str = "governed",
             rnd: int = 0) -> Decision:
    governs = mode in ("enforce", "penalize")  # the checks are enforced (records/events.py)
    return Decision.from_payload({
        "decision_id": f"d{i}", "agent_id": f"agent-{i % 2}", "round": rnd, "arm": arm,
        "mode": mode, "action": {"kind": "clickbait" if blocked else "informative"},
        "checks": [
            {"service": "BoundaryEnforcer", "rule_id": "CONTENT-CLICKBAIT",
             "raw_verdict": "REQUIRE_HUMAN_DECISION" if blocked else "PROCEED",
             "enforced": governs, "latency_us": 100},
            {"service": "ContextPressureMonitor", "rule_id": "OPS-001", "raw_verdict": "NORMAL",
             "enforced": governs, "latency_us": 20},
        ],
        "executed": not (blocked and mode == "enforce"), "latency_us": 150,
        "ts": 1_795_000_000.0 + i,
        **({"penalty": 1.0} if blocked and mode == "penalize" else {}),
    })


@pytest.fixture
def store(tmp_path: Path):
    s = Store.open(tmp_path / "w.duckdb")
    yield s
    s.close()


def count(store: Store, table: str) -> int:
    return store.cursor().execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def test_new_database_is_private_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "new.duckdb"
    with Store.open(path) as s:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        version = s.cursor().execute("SELECT max(version) FROM schema_version").fetchall()
        assert version[0][0] == LATEST_VERSION


def test_database_newer_than_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.duckdb"
    with Store.open(path) as s:
        s.con.execute("INSERT INTO schema_version VALUES (99, 'future', now()::TIMESTAMP)")
    with pytest.raises(SchemaTooNew, match="schema version 99"):
        Store.open(path)


def test_metrics_and_redelivery(store: Store) -> None:
    decisions = [decision(i, blocked=i % 5 == 0, rnd=i // 10) for i in range(30)]
    decisions += [decision(100 + i, blocked=i % 3 == 0, mode="shadow", arm="ungoverned",
                           rnd=i // 10) for i in range(30)]
    rewards = [Reward(f"r{i}", f"ro{i}", "agent-0", i // 10, "governed", 0.5 + i / 100,
                      1_795_000_000.0 + i) for i in range(30)]
    batch = Batch.from_records(run_id="run-a", decisions=decisions, rewards=rewards)
    writer = Writer(store)
    writer.submit(batch, Cursor("src", "1"))
    writer.submit(batch, Cursor("src", "2"))  # re-delivery: nothing new
    writer.close()
    assert count(store, "decisions") == 60
    assert count(store, "checks") == 120
    assert writer.stats.duplicates == 60 + 120 + 30
    assert store.get_cursor("src") == "2"
    con = store.cursor()
    totals = {r["arm"]: r for r in Q.totals(con, "run-a").to_dicts()}
    gov, ung = totals["governed"], totals["ungoverned"]
    assert (gov["actions"], gov["covered"], gov["attempted"], gov["blocked"], gov["escaped"]) \
        == (30, 30, 6, 6, 0)
    assert (ung["actions"], ung["covered"], ung["attempted"], ung["blocked"], ung["escaped"]) \
        == (30, 0, 10, 0, 10)
    assert gov["reward_n"] == 30
    assert gov["reward_mean"] == pytest.approx(sum(0.5 + i / 100 for i in range(30)) / 30)
    rounds = Q.per_round(con, "run-a", "governed")
    assert rounds["round"].to_list() == [0, 1, 2]
    assert rounds["blocked"].to_list() == [2, 2, 2]
    rules = Q.per_rule(con, "run-a", arm="governed")
    clickbait = rules.filter(rules["rule_id"] == "CONTENT-CLICKBAIT").to_dicts()[0]
    assert (clickbait["checks"], clickbait["blocks"]) == (30, 6)
    agents = Q.per_agent(con, "run-a", "ungoverned")
    assert agents["actions"].to_list() == [15, 15]
    before = Q.per_round(con, "run-a")
    compact_rollups(store.con)
    assert Q.per_round(con, "run-a").equals(before)
    page = Q.decisions_page(con, "run-a", limit=5)
    assert page["decision_id"].to_list() == ["d129", "d128", "d127", "d126", "d125"]
    page2 = Q.decisions_page(con, "run-a", limit=5, offset=5, verdict="block")
    assert page2.height == 1 and set(page2["verdict"]) == {"block"}  # 6 blocks in all


def test_penalize_rollups_count_escaped_and_penalized_never_blocked(store: Store) -> None:
    """A penalized arm's violations ran: escaped, not blocked, not "would have blocked"; each
    is penalized, and its checks count in coverage. The other arms count as before."""
    from tractatus_watch.analysis.metrics import arm_figures

    decisions = [decision(i, blocked=i % 4 == 0, mode="penalize", arm="penalized", rnd=i // 10)
                 for i in range(40)]
    decisions += [decision(100 + i, blocked=i % 4 == 0, rnd=i // 10) for i in range(40)]
    decisions += [decision(200 + i, blocked=i % 4 == 0, mode="shadow", arm="ungoverned",
                           rnd=i // 10) for i in range(40)]
    writer = Writer(store)
    writer.submit(Batch.from_records(run_id="run-p", decisions=decisions), Cursor("src", "1"))
    writer.close()
    con = store.cursor()
    totals = {r["arm"]: r for r in Q.totals(con, "run-p").to_dicts()}
    keys = ("actions", "covered", "enforce_mode", "penalize_mode", "attempted", "blocked",
            "escaped", "would_have_blocked", "penalized", "executed")
    assert {arm: tuple(t[k] for k in keys) for arm, t in totals.items()} == {
        "penalized": (40, 40, 0, 40, 10, 0, 10, 0, 10, 40),
        "governed": (40, 40, 40, 0, 10, 10, 0, 0, 0, 30),
        "ungoverned": (40, 0, 0, 0, 10, 0, 10, 10, 0, 40),
    }
    figures = {arm: arm_figures(t) for arm, t in totals.items()}
    assert {arm: (f.mode, f.coverage, f.penalized) for arm, f in figures.items()} == {
        "penalized": ("penalize", 1.0, 10), "governed": ("enforce", 1.0, 0),
        "ungoverned": ("shadow", 0.0, 0)}
    # The per-agent rollup says the same, per round too; and the cost is stored per decision.
    assert con.execute("SELECT sum(penalized), sum(penalize_mode) FROM rollup_agent "
                       "WHERE arm = 'penalized'").fetchall() == [(10, 40)]
    assert Q.per_round(con, "run-p", "penalized")["penalized"].to_list() == [3, 2, 3, 2]
    assert con.execute("SELECT count(*) FROM decisions WHERE arm = 'penalized' AND "
                       "json_extract(extra, '$.penalty')::DOUBLE = 1.0").fetchall() == [(10,)]
    before = Q.totals(con, "run-p")
    compact_rollups(store.con)
    assert Q.totals(con, "run-p").equals(before)


def test_a_v7_store_gains_the_penalize_counters_and_keeps_its_figures(tmp_path: Path) -> None:
    """A store made before penalize mode (schema 7) opens: its rollup rows count 0 penalized
    and 0 in penalize mode, its figures are what they were, and penalized rows then land."""
    import duckdb

    from tractatus_watch.storage.schema import MIGRATIONS

    path = tmp_path / "v7.duckdb"
    with Store.open(tmp_path / "now.duckdb") as now:  # the rows, as this writer stores them
        writer = Writer(now)
        writer.submit(Batch.from_records(run_id="old", decisions=[
            decision(i, blocked=i % 3 == 0, mode="shadow" if i % 2 else "enforce",
                     arm="ungoverned" if i % 2 else "governed", rnd=i // 6)
            for i in range(24)]))
        writer.close()
        old_totals = Q.totals(now.cursor(), "old").drop("penalize_mode", "penalized")
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, description VARCHAR, "
                "applied_at TIMESTAMP NOT NULL)")
    for number, description, statements in MIGRATIONS[:7]:
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_version VALUES (?, ?, now()::TIMESTAMP)",
                    [number, description])
    con.execute(f"ATTACH '{tmp_path / 'now.duckdb'}' AS now (READ_ONLY)")
    for table in ("runs", "decisions", "checks", "rollup_agent", "rollup_round"):
        cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        con.execute(f"INSERT INTO {table} SELECT {', '.join(cols)} FROM now.{table}")
    con.close()
    with Store.open(path) as store:
        cur = store.cursor()
        assert cur.execute("SELECT max(version) FROM schema_version").fetchall() == [
            (LATEST_VERSION,)]
        assert cur.execute("SELECT count(*), sum(penalize_mode), sum(penalized) "
                           "FROM rollup_round").fetchall()[0][1:] == (0, 0)
        assert Q.totals(cur, "old").drop("penalize_mode", "penalized").equals(old_totals)
        writer = Writer(store)
        writer.submit(Batch.from_records(run_id="old", decisions=[
            decision(500 + i, blocked=i % 2 == 0, mode="penalize", arm="penalized")
            for i in range(6)]))
        writer.close()
        got = {r["arm"]: r for r in Q.totals(cur, "old").to_dicts()}
        assert (got["penalized"]["penalized"], got["penalized"]["escaped"],
                got["penalized"]["blocked"]) == (3, 3, 0)


def test_invalid_rows_are_quarantined_while_the_rest_lands(store: Store) -> None:
    good = Batch.from_records(run_id="r", decisions=[decision(1), decision(2)])
    bad = pa.Table.from_pylist([
        {"run_id": "r", "decision_id": "x1", "agent_id": "a", "round": 0, "arm": "governed",
         "mode": "sometimes", "action_kind": "k", "verdict": "allow", "executed": True,
         "covered": True, "attempted": False, "evasion": False, "n_checks": 0,
         "latency_us": 1, "ts": 1_795_000_000_000_000},
        {"run_id": "r", "decision_id": "x2", "agent_id": "a", "round": 0, "arm": "governed",
         "mode": "enforce", "action_kind": "k", "verdict": "allow", "executed": True,
         "covered": True, "attempted": False, "evasion": False, "n_checks": 0,
         "latency_us": 1, "ts": 1_795_000_000_000_000},
    ])
    mixed = Batch({"decisions": pa.concat_tables([
        good.tables["decisions"], bad.cast(good.tables["decisions"].select(bad.column_names)
                                           .schema)], promote_options="default"),
        "checks": good.tables["checks"]})
    q = Batch.from_records(quarantined=[Quarantined("file.jsonl:3", "line 3: bad JSON", "{",
                                                    1_795_000_000.0)])
    writer = Writer(store)
    writer.submit(mixed, Cursor("s", "1"))
    writer.submit(q)
    writer.close()
    rows = store.cursor().execute(
        "SELECT source, reason, raw FROM quarantine ORDER BY reason").fetchall()
    assert count(store, "decisions") == 3  # d1, d2, x2
    assert [(r[0], r[1]) for r in rows] == [
        ("s", "decisions.mode: not one of enforce, penalize, shadow, off"),
        ("file.jsonl:3", "line 3: bad JSON"),
    ]
    assert json.loads(rows[0][2])["decision_id"] == "x1"


def test_rollout_transitions_and_events(store: Store) -> None:
    rollouts = [RolloutTransition("ro1", "running", 1_795_000_000.0, "a", 3, "governed"),
                RolloutTransition("ro1", "succeeded", 1_795_000_001.0, "a", 3, "governed",
                                  duration_s=1.0, metadata={"round": 3})]
    writer = Writer(store)
    writer.submit(Batch.from_records(run_id="r", rollouts=rollouts))
    writer.submit(Batch.from_records(run_id="r", rollouts=rollouts[1:]))
    writer.close()
    rows = store.cursor().execute(
        "SELECT status, metadata FROM rollouts ORDER BY ts").fetchall()
    assert rows == [("running", None), ("succeeded", '{"round":3}')]


def test_run_events_from_records_are_stored_once_like_the_sessions_own(store: Store) -> None:
    ts = 1_795_000_000.5
    long_detail = "d\ud800" + "x" * 70_000  # a lone surrogate, over the text limit
    ended = [RunEvent("trainer-run", "ended", ts, "trainer hooks", long_detail),
             RunEvent("", "started", ts - 60.0),  # "": the collector's run
             RunEvent("r" * 1_025, "ended", ts)]  # an id too long to store
    writer = Writer(store)
    writer.submit(Batch.from_records(run_id="spool-run", run_events=ended), Cursor("s", "1"))
    # The same records read again (a segment re-read): nothing stored twice.
    writer.submit(Batch.from_records(run_id="spool-run", run_events=ended[:2]))
    # The session's own end of the same run, for comparison: the same row shape and cleaning.
    writer.submit(run_event_batch(["trainer-run"], "ended", source="trainer hooks",
                                  detail=long_detail, ts=ts + 1))
    writer.close()
    rows = store.cursor().execute(
        "SELECT run_id, event, epoch_us(ts), source, detail FROM run_events "
        "ORDER BY ts, run_id").fetchall()
    cleaned = "d\\ud800" + "x" * (65_536 - 7)  # escaped, then cut to 65,536 characters
    assert [r[:4] for r in rows] == [
        ("spool-run", "started", 1_794_999_940_500_000, None),
        ("trainer-run", "ended", 1_795_000_000_500_000, "trainer hooks"),
        ("trainer-run", "ended", 1_795_000_001_500_000, "trainer hooks")]
    assert rows[0][4] is None and rows[1][4] == rows[2][4] == cleaned[:65_536]
    reasons = store.cursor().execute("SELECT source, reason FROM quarantine").fetchall()
    assert reasons == [("s", "run_events.run_id: 1025 characters, more than 1024 "
                             f"(run event {'r' * 200})")]


def test_submit_blocks_when_the_queue_is_full(store: Store) -> None:
    """With a queue of one, a third submit can only return once the writer took the second,
    i.e. after the first (large, committing) batch is in the database."""
    writer = Writer(store, max_queue=1)
    big = decisions_batch(0, 70_000)  # its checks fill a row group: committed at once
    small = Batch.from_records(run_id="r", decisions=[decision(1)])
    writer.submit(big)
    writer.submit(small)
    writer.submit(small)
    assert count(store, "decisions") >= 70_000
    writer.close()
    assert count(store, "decisions") == 70_001


def test_read_only_store_refuses_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "ro.duckdb"
    Store.open(path).close()
    with Store.open(path, read_only=True) as ro:
        with pytest.raises(RuntimeError, match="read-only"):
            Writer(ro)


def test_a_fresh_store_matches_the_table_spec(tmp_path: Path) -> None:
    """The migrations (history) produce exactly the table spec (storage/tables.py) from which
    the batches' Arrow schemas and required fields derive."""
    from tractatus_watch.storage.batch import ARROW_SCHEMAS, REQUIRED
    from tractatus_watch.storage.tables import TABLES, arrow_schema, required

    with Store.open(tmp_path / "spec.duckdb") as store:
        cur = store.cursor()
        stored = {t: [(name, type_, null) for name, type_, null, *_ in
                      cur.execute(f"DESCRIBE {t}").fetchall()] for t in TABLES}
        tables = {r[0] for r in cur.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
    assert tables == set(TABLES)
    for table, columns in TABLES.items():
        assert stored[table] == [(c.name, c.sql_type, "NO" if c.not_null else "YES")
                                 for c in columns], table
    assert all(ARROW_SCHEMAS[t].equals(arrow_schema(t)) for t in ARROW_SCHEMAS)
    assert REQUIRED["checks"] == required("checks") and "rule_id" not in REQUIRED["checks"]
