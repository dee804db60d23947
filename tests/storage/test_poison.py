"""One bad record costs only itself: per-record validation, bisection of what the database still
refuses, exact de-duplication by decision_id, and a writer that never dies silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pytest

from tractatus_watch.records.events import (
    Check, Decision, Event, Quarantined, Reward, RolloutTransition,
)
from tractatus_watch.storage import schema
from tractatus_watch.storage.batch import ARROW_SCHEMAS, NOT_NULL, Batch
from tractatus_watch.storage.store import Store
from support.synthetic import decisions_batch, nested
from tractatus_watch.storage.writer import Cursor, Writer

TS = 1_795_000_000.0


def decision(i: int | str, *, n_checks: int = 2, blocked: bool = False, ts: float | None = None,
             reason: str = "", **fields: Any) -> Decision:
    did = i if isinstance(i, str) else f"d{i}"
    dec = Decision.from_payload({
        "decision_id": did, "agent_id": "agent-0", "round": 1, "arm": "governed",
        "mode": "enforce", "action": {"kind": "publish", "summary": "a headline"},
        "checks": [{"service": "BoundaryEnforcer", "rule_id": f"R-{k}",
                    "raw_verdict": "BLOCK" if blocked and k == 0 else "PROCEED",
                    "latency_us": 10 + k, "reason": reason} for k in range(n_checks)],
        "executed": not blocked, "latency_us": 100, "ts": TS if ts is None else ts,
    })
    for name, value in fields.items():
        setattr(dec, name, value)
    return dec




@pytest.fixture
def store(tmp_path: Path):
    s = Store.open(tmp_path / "p.duckdb")
    yield s
    s.close()


def rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    return store.cursor().execute(sql).fetchall()


def quarantine(store: Store) -> list[tuple[str, str]]:
    sql = "SELECT source, reason FROM quarantine ORDER BY reason"
    return [(r[0], r[1]) for r in rows(store, sql)]


def commit(store: Store, *batches: Batch, source: str = "tap") -> Writer:
    writer = Writer(store)
    for n, batch in enumerate(batches):
        writer.submit(batch, Cursor(source, str(n)))
        writer.flush()
    writer.close()
    return writer


# --- per-record validation --------------------------------------------------------------------

def _many_checks(dec: Decision) -> None:
    dec.checks = [Check("BoundaryEnforcer", "allow", "PROCEED") for _ in range(40_000)]


def _field(name: str, value: Any) -> Callable[[Decision], None]:
    return lambda dec: setattr(dec, name, value)


def _check_field(name: str, value: Any) -> Callable[[Decision], None]:
    return lambda dec: setattr(dec.checks[1], name, value)


POISON: list[tuple[str, Callable[[Decision], None], str]] = [
    ("round beyond INTEGER", _field("round", 2**40),
     "decisions.round: 1099511627776 out of range for INTEGER (decision bad)"),
    ("latency beyond 64 bits", _field("latency_us", 2**64),
     "decisions.latency_us: 18446744073709551616 out of range (0..1000000000000) "
     "(decision bad)"),
    ("tens of thousands of checks", _many_checks,
     "decisions.n_checks: 40000 checks, more than 1000 (decision bad)"),
    ("ts of 1e15 seconds", _field("ts", 1e15),
     "decisions.ts: 1000000000000000 s since the epoch is outside 1970-01-01 .. 9999-12-31 "
     "(decision bad)"),
    ("negative ts", _field("ts", -1.0),
     "decisions.ts: -1 s since the epoch is outside 1970-01-01 .. 9999-12-31 (decision bad)"),
    ("ts not finite", _field("ts", float("inf")), "decisions.ts: inf is not a finite time "
                                                  "(decision bad)"),
    ("surrogate in agent_id", _field("agent_id", "a\ud800"),
     "decisions.agent_id: not valid Unicode text (unpaired surrogate at character 1) "
     "(decision bad)"),
    ("surrogate in summary", lambda d: setattr(d.action, "summary", "\udc00 headline"),
     "decisions.action_summary: not valid Unicode text (unpaired surrogate at character 0) "
     "(decision bad)"),
    ("surrogate in an extra key", _field("extra", {"\ud800": 1}),
     "decisions.extra: not valid Unicode text (unpaired surrogate) (decision bad)"),
    ("surrogate in an extra value", _field("extra", {"k": ["\ud800"]}),
     "decisions.extra: not valid Unicode text (unpaired surrogate) (decision bad)"),
    ("extra nested too deeply", _field("extra", {"deep": nested(100_000)}),
     "decisions.extra: nested too deeply to serialise (decision bad)"),
    ("extra over 1 MiB", _field("extra", {"blob": "x" * 1_100_000}),
     "decisions.extra: 1100011 characters, more than 1048576 (decision bad)"),
    ("summary over the text cap", lambda d: setattr(d.action, "summary", "y" * 70_000),
     "decisions.action_summary: 70000 characters, more than 65536 (decision bad)"),
    ("surrogate in a check reason", _check_field("reason", "why \ud800"),
     "checks.reason: not valid Unicode text (unpaired surrogate at character 4) (check 1) "
     "(decision bad)"),
    ("negative check latency", _check_field("latency_us", -5),
     "checks.latency_us: -5 out of range (0..1000000000000) (check 1) (decision bad)"),
    ("check verdict outside the vocabulary", _check_field("verdict", "maybe"),
     "checks.verdict: not one of allow, warn, escalate, block (check 1) (decision bad)"),
    ("a string where an integer goes", _field("round", "3"),
     "decisions.round: expected an integer, got str (decision bad)"),
    ("a check that is not a check", lambda d: d.checks.append("nonsense"),  # type: ignore
     "decision: cannot be read: AttributeError: 'str' object has no attribute 'verdict' "
     "(decision bad)"),
]


@pytest.mark.parametrize("mutate,reason", [(m, r) for _, m, r in POISON],
                         ids=[name for name, _, _ in POISON])
def test_a_poison_value_quarantines_its_record_and_the_rest_lands(
        store: Store, mutate: Callable[[Decision], None], reason: str) -> None:
    bad = decision("bad")
    mutate(bad)
    batch = Batch.from_records(run_id="r", decisions=[decision(1), bad, decision(2)])
    writer = commit(store, batch)
    assert quarantine(store) == [("tap", reason)]
    assert rows(store, "SELECT decision_id FROM decisions ORDER BY 1") == [("d1",), ("d2",)]
    assert rows(store, "SELECT count(*) FROM checks") == [(4,)]
    assert store.get_cursor("tap") == "0"
    assert writer.stats.quarantined == 1 and writer.error is None
    raw = rows(store, "SELECT raw FROM quarantine")[0][0]
    assert raw.isascii() and '"bad"' in raw  # storable, and names the record


def test_poison_in_every_other_table_and_in_quarantine_rows_themselves(store: Store) -> None:
    deep = {"deep": nested(100_000)}
    batch = Batch.from_records(
        run_id="r",
        rewards=[Reward("rw-ok", "ro", "a", 1, "governed", 0.5, TS),
                 Reward("rw-huge", "ro", "a", 1, "governed", 1e300, TS),
                 Reward("rw-round", "ro", "a", 2**31, "governed", 0.5, TS)],
        rollouts=[RolloutTransition("ro-ok", "running", TS, metadata={"m": "\u2028"}),
                  RolloutTransition("ro-meta", "running", TS, metadata={"m": "\ud800"}),
                  RolloutTransition("ro-ts", "running", 1e13)],
        events=[Event("ev-ok", "custom", TS, payload={"k": "v"}),
                Event("ev-str", "custom", TS, payload="\ud800"),
                Event("ev-deep", "custom", TS, payload=deep),
                Event("ev-big", "custom", TS, payload={"body": "z" * 100_000})],
        quarantined=[Quarantined("src\ud800", "why \udfff", "raw \ud800", 1e20)])
    commit(store, batch)
    assert quarantine(store) == [
        ("tap", "events.payload: nested too deeply to serialise (event ev-deep)"),
        ("tap", "events.payload: not valid Unicode text (unpaired surrogate at character 0) "
                "(event ev-str)"),
        ("tap", "rewards.round: 2147483648 out of range for INTEGER (reward rw-round)"),
        ("tap", "rewards.value: 1e+300 out of range (finite, at most 1e+15 in magnitude) "
                "(reward rw-huge)"),
        ("tap", "rollouts.metadata: not valid Unicode text (unpaired surrogate) "
                "(rollout ro-meta)"),
        ("tap", "rollouts.ts: 10000000000000 s since the epoch is outside 1970-01-01 .. "
                "9999-12-31 (rollout ro-ts)"),
        ("src\\ud800", "why \\udfff"),
    ]
    assert rows(store, "SELECT reward_id FROM rewards") == [("rw-ok",)]
    assert rows(store, "SELECT rollout_id, metadata FROM rollouts") == [
        ("ro-ok", '{"m":"\\u2028"}')]
    events = dict(rows(store, "SELECT event_id, payload FROM events"))
    assert set(events) == {"ev-ok", "ev-big"}
    assert json.loads(events["ev-big"])["_trimmed"] is True  # a huge payload keeps its head
    assert rows(store, "SELECT raw FROM quarantine WHERE source LIKE 'src%'") == [
        ("raw \\ud800",)]


def test_separators_and_nul_are_text_not_poison(store: Store) -> None:
    text = "line\u2028para\u2029next\u0085nul\x00end"
    dec = decision(1, reason=text, agent_id=text, extra={text: text})
    commit(store, Batch.from_records(run_id="r", decisions=[dec]))
    assert quarantine(store) == []
    assert rows(store, "SELECT agent_id, extra FROM decisions") == [
        (text, json.dumps({text: text}, separators=(",", ":")))]
    assert rows(store, "SELECT DISTINCT reason FROM checks") == [(text,)]


def test_invalid_rows_of_an_arrow_batch_quarantine_their_decision_and_its_checks(
        store: Store) -> None:
    tables = dict(decisions_batch(0, 10, run_id="r", total=10).tables)
    checks = tables["checks"].to_pylist()
    checks[5]["verdict"] = "maybe"  # a check of d000000000002
    tables["checks"] = pa.Table.from_pylist(checks, schema=ARROW_SCHEMAS["checks"])
    decisions = tables["decisions"].to_pylist()
    decisions[7]["ts"] = 300_000_000_000_000_000  # year 11476: DuckDB holds it, Python not
    tables["decisions"] = pa.Table.from_pylist(decisions, schema=ARROW_SCHEMAS["decisions"])
    commit(store, Batch(tables))
    assert quarantine(store) == [
        ("tap", "checks.verdict: not one of allow, warn, escalate, block (check 1)"),
        ("tap", "decisions.ts: outside 1970-01-01 .. 9999-12-31"),
    ]
    raws = [json.loads(r[0]) for r in rows(store, "SELECT raw FROM quarantine ORDER BY reason")]
    assert [r["decision_id"] for r in raws] == ["d000000000002", "d000000000007"]
    assert [len(r["checks"]) for r in raws] == [2, 2]  # the unit: decision and checks
    assert raws[1]["ts"] == 300_000_000_000_000_000
    assert rows(store, "SELECT count(*) FROM decisions") == [(8,)]
    assert rows(store, "SELECT count(*) FROM checks") == [(16,)]


def test_not_null_matches_the_ddl(store: Store) -> None:
    nullable = {(t, c) for t, c, n in rows(store, "SELECT table_name, column_name, is_nullable "
                                                  "FROM information_schema.columns") if n == "NO"}
    for table, cols in NOT_NULL.items():
        assert {c for t, c in nullable if t == table} == set(cols), table


def test_content_columns_cover_the_ddl(store: Store) -> None:
    columns = schema.table_columns(store.cursor(), "decisions")
    assert sorted(columns) == sorted(("run_id", "decision_id") + schema.DECISION_CONTENT
                                     + schema.KEY_COLUMNS)
    assert sorted(schema.table_columns(store.cursor(), "checks")) == sorted(
        schema.CHECK_CONTENT + schema.CHECK_COPIES)


@pytest.fixture(params=["file", "lake"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "file":
        s = Store.open(tmp_path / "d.duckdb")
    else:
        spec, data = request.getfixturevalue("lake")
        s = Store.open(spec, data_path=data)
    yield s
    s.close()


# --- bisect -----------------------------------------------------------------------------------

def invalid_utf8(table: pa.Table, column: str, row: int) -> pa.Table:
    """`table` with the value at `row` of a string column replaced by bytes that are not UTF-8,
    as an Arrow producer can hand them in: no check before the database sees them."""
    values = table.column(column).to_pylist()
    data, offsets = bytearray(), [0]
    for i, value in enumerate(values):
        data += b"bad\xff" if i == row else value.encode()
        offsets.append(len(data))
    array = pa.Array.from_buffers(pa.string(), len(values), [
        None, pa.array(offsets, pa.int32()).buffers()[1], pa.py_buffer(bytes(data))])
    return table.set_column(table.schema.get_field_index(column), column, array)


def test_rows_the_database_refuses_are_bisected_out_and_the_cursor_commits(
        any_store: Store) -> None:
    store = any_store
    tables = dict(decisions_batch(0, 1000, run_id="r", total=1000).tables)
    tables["decisions"] = invalid_utf8(tables["decisions"], "agent_id", 417)
    tables["rewards"] = invalid_utf8(tables["rewards"], "rollout_id", 3)
    before, after = (decisions_batch(s, 10, run_id="r", total=1000) for s in (5000, 6000))
    writer = Writer(store)
    writer.submit(before, Cursor("other", "a"))
    writer.submit(Batch(tables), Cursor("src", "7"))  # coalesced with the batches around it
    writer.submit(after, Cursor("other", "b"))
    writer.close()
    assert writer.error is None
    # A file refuses the row at insert; a lake when it writes its Parquet, at commit.
    refused = "refused by the database: " + (
        "TransactionContext Error: Failed to commit: Failed to commit DuckLake transaction. "
        "Invalid unicode (byte sequence mismatch) detected in value construction"
        if store.is_lake else
        "Invalid Input Error: Invalid unicode (byte sequence mismatch) detected in segment "
        "statistics update")
    assert quarantine(store) == [("src", f"decisions: {refused}"), ("src", f"rewards: {refused}")]
    raws = [json.loads(r[0]) for r in rows(store, "SELECT raw FROM quarantine ORDER BY reason")]
    assert raws[0]["decision_id"] == "d000000000417" and raws[0]["agent_id"] == "bad\\xff"
    assert len(raws[0]["checks"]) == 2
    assert raws[1]["rewards"][0]["reward_id"] == "rw9"  # the 4th reward
    assert rows(store, "SELECT count(*), count(DISTINCT decision_id) FROM decisions") == [
        (1019, 1019)]
    assert rows(store, "SELECT count(*) FROM checks") == [(2038,)]
    rewards = sum(b.tables["rewards"].num_rows for b in (before, after)) + 250 - 1
    assert rows(store, "SELECT count(*) FROM rewards") == [(rewards,)]
    assert (store.get_cursor("src"), store.get_cursor("other")) == ("7", "b")
    assert rows(store, "SELECT sum(actions) FROM rollup_agent") == [(1019,)]


def test_a_fatal_error_stops_the_writer_in_one_line_for_every_producer(tmp_path: Path) -> None:
    """A real disk limit (RLIMIT_FSIZE), in a process of its own."""
    script = f"""
import logging, resource, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})  # tests/: support.*
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from tractatus_watch.storage.store import Store
from support.synthetic import decisions_batch
from tractatus_watch.storage.writer import Cursor, Writer, WriterError
store = Store.open({str(tmp_path / 'full.duckdb')!r})
resource.setrlimit(resource.RLIMIT_FSIZE, (3_000_000, 3_000_000))
writer = Writer(store, flush_rows=1)
for i in range(100):
    try:
        writer.submit(decisions_batch(i * 5000, 5000, total=10**6), Cursor("s", str(i)))
        writer.flush()
    except WriterError as exc:
        print("submit/flush:", exc)
        break
try:
    writer.close()
except WriterError as exc:
    print("close:", exc)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert len(out) == 2 and out[0].startswith("submit/flush: writer failed: ")
    assert "File too large" in out[0] and out[1] == out[0].replace("submit/flush:", "close:")
    stopped = [ln for ln in proc.stderr.splitlines() if "writer: stopped" in ln]
    assert stopped == [f"ERROR tractatus_watch.storage.writer: writer: stopped, nothing more "
                       f"is stored: {out[0].split('writer failed: ', 1)[1]}"]


# --- de-duplication by decision_id -------------------------------------------------------------

def test_the_same_id_with_another_ts_is_stored_once(any_store: Store) -> None:
    store = any_store
    first = Batch.from_records(run_id="r", decisions=[decision(1), decision(2)])
    later = Batch.from_records(run_id="r", decisions=[decision(1, ts=TS + 86_400 * 30)])
    again = Batch.from_records(run_id="r", decisions=[decision(2)])
    writer = commit(store, first, later, again)
    assert rows(store, "SELECT decision_id, epoch(ts) FROM decisions ORDER BY 1") == [
        ("d1", TS), ("d2", TS)]
    assert quarantine(store) == [(
        "tap", "decisions.decision_id: d1 conflicts with the stored decision of that id in "
               "run r (other content); the stored one is kept")]
    assert writer.stats.duplicates == 3  # d2 again, with its two checks
    assert rows(store, "SELECT count(*) FROM checks") == [(4,)]
    assert store.get_cursor("tap") == "2"


def test_a_conflicting_version_adds_no_checks_and_no_rollups(any_store: Store) -> None:
    store = any_store
    stored = decision(1, n_checks=1)
    other = decision(1, n_checks=3, blocked=True)  # more checks, and one of them blocks
    commit(store, Batch.from_records(run_id="r", decisions=[stored]),
           Batch.from_records(run_id="r", decisions=[other]))
    assert rows(store, "SELECT d.n_checks, count(c.idx) FROM decisions d JOIN checks c "
                       "USING (run_id, decision_id) GROUP BY ALL") == [(1, 1)]
    assert rows(store, "SELECT sum(checks), sum(blocks) FROM rollup_rule") == [(1, 0)]
    assert rows(store, "SELECT sum(actions), sum(attempted) FROM rollup_agent") == [(1, 0)]
    (reason, raw), = rows(store, "SELECT reason, raw FROM quarantine")
    assert "d1 conflicts with the stored decision" in reason
    assert len(json.loads(raw)["checks"]) == 3  # the whole version is kept in quarantine


def test_within_one_batch_the_first_wins(any_store: Store) -> None:
    store = any_store
    batch = Batch.from_records(run_id="r", decisions=[
        decision(1), decision(2), decision(1), decision(1, n_checks=3), decision(2, ts=TS + 1),
        decision(1)])
    writer = commit(store, batch)
    assert rows(store, "SELECT decision_id, n_checks, epoch(ts) FROM decisions ORDER BY 1") == [
        ("d1", 2, TS), ("d2", 2, TS)]
    assert [r[1] for r in quarantine(store)] == [
        "decisions.decision_id: d1 conflicts with the stored decision of that id in run r "
        "(other content); the stored one is kept",
        "decisions.decision_id: d2 conflicts with the stored decision of that id in run r "
        "(other content); the stored one is kept"]
    assert writer.stats.duplicates == 2 * 3  # two exact copies of d1
    assert rows(store, "SELECT count(*) FROM checks") == [(4,)]


def test_the_same_decision_in_another_run_is_another_decision(store: Store) -> None:
    commit(store, Batch.from_records(run_id="a", decisions=[decision(1)]),
           Batch.from_records(run_id="b", decisions=[decision(1, n_checks=1)]))
    assert rows(store, "SELECT run_id, n_checks FROM decisions ORDER BY 1") == [("a", 2), ("b", 1)]
    assert quarantine(store) == []


def test_arrow_checks_must_match_their_decision(store: Store) -> None:
    tables = dict(decisions_batch(0, 4, run_id="r", total=4).tables)
    checks = tables["checks"].to_pylist()
    extra = dict(checks[0], idx=2)  # a third check for a decision that says two
    orphan = dict(checks[1], decision_id="nobody")
    tables["checks"] = pa.Table.from_pylist(checks[2:] + [extra, orphan] + checks[:2],
                                            schema=ARROW_SCHEMAS["checks"])  # out of order
    commit(store, Batch(tables))
    assert quarantine(store) == [
        ("tap", "checks: no decision nobody of run r in the same batch"),
        ("tap", "decisions.n_checks: 2 but the batch holds 3 checks for it (idx 0..2) "
                "(decision d000000000000)")]
    assert rows(store, "SELECT d.decision_id, d.n_checks, count(*) FROM decisions d JOIN "
                       "checks c USING (run_id, decision_id) GROUP BY ALL ORDER BY 1") == [
        ("d000000000001", 2, 2), ("d000000000002", 2, 2), ("d000000000003", 2, 2)]


def test_a_repeated_arrow_batch_in_one_table_is_duplicates(store: Store) -> None:
    b = decisions_batch(0, 50, run_id="r", total=50)
    doubled = {n: pa.concat_tables([t, t]) for n, t in b.tables.items()}
    writer = commit(store, Batch(doubled))
    assert rows(store, "SELECT count(*) FROM decisions") == [(50,)]
    assert rows(store, "SELECT count(*) FROM checks") == [(100,)]
    assert quarantine(store) == []
    assert writer.stats.duplicates == 50 + 100 + b.tables["rewards"].num_rows


# --- schema v3 ------------------------------------------------------------------------------

def test_v2_store_is_migrated_with_its_keys_and_redelivery_stays_a_duplicate(
        tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "v2.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, description VARCHAR, "
                "applied_at TIMESTAMP NOT NULL)")
    for number, description, statements in schema.MIGRATIONS[:2]:
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_version VALUES (?, ?, now()::TIMESTAMP)",
                    [number, description])
    old = decisions_batch(0, 300, run_id="r", total=300)
    for name in ("decisions", "checks", "rewards"):
        con.register("_t", old.tables[name].drop_columns(
            [c for c in ("ruleset",) if c in old.tables[name].column_names]))  # a v2 table
        con.execute(f"INSERT INTO {name} SELECT * FROM _t")
    # The v2 writer's rollups of those rows.
    con.execute("""INSERT INTO rollup_agent SELECT run_id, arm, round, agent_id, count(*),
        count_if(covered), count_if(mode = 'enforce'), count_if(attempted),
        count_if(attempted AND NOT executed), count_if(attempted AND executed), 0,
        count_if(executed), sum(latency_us), 0, 0, 0, min(ts), max(ts)
        FROM decisions GROUP BY ALL""")
    con.execute("""INSERT INTO rollup_rule SELECT run_id, arm, round, service, rule_id,
        date_trunc('minute', ts), count(*), count_if(enforced), 0, 0,
        count_if(verdict = 'block'), sum(latency_us), max(latency_us) FROM checks GROUP BY ALL""")
    con.close()
    with Store.open(path) as store:
        assert rows(store, "SELECT max(version) FROM schema_version") == [(schema.LATEST_VERSION,)]
        assert rows(store, "SELECT count(*) FROM decisions WHERE id_key IS NULL OR "
                           "content_key IS NULL") == [(0,)]
        # v4: the new counters of what was stored before, from the stored rows.
        assert rows(store, "SELECT sum(would_have_blocked) FROM rollup_agent") == rows(
            store, "SELECT count_if(attempted AND mode <> 'enforce') FROM decisions")
        assert rows(store, "SELECT sum(enforced_blocks) FROM rollup_rule") == rows(
            store, "SELECT count_if(verdict = 'block' AND enforced) FROM checks")
        assert rows(store, "SELECT sum(actions) FROM rollup_agent") == [(300,)]
        writer = commit(store, decisions_batch(0, 300, run_id="r", total=300))
        assert writer.stats.duplicates == 300 + 600 + old.tables["rewards"].num_rows
        assert quarantine(store) == []


def test_keys_are_made_again_when_duckdb_hashes_differently(store: Store) -> None:
    assert rows(store, "SELECT count(*) FROM store_meta") == [(0,)]  # a new store is empty
    commit(store, decisions_batch(0, 200, run_id="r", total=200))
    assert rows(store, "SELECT value FROM store_meta") == rows(store, schema.KEY_CANARY_SQL)
    before = rows(store, "SELECT decision_id, id_key, content_key FROM decisions ORDER BY 1")
    store.con.execute("UPDATE decisions SET id_key = 0, content_key = 0")
    store.con.execute("UPDATE store_meta SET value = 'another duckdb' WHERE name = 'key_hash'")
    writer = commit(store, decisions_batch(0, 200, run_id="r", total=200))
    assert rows(store, "SELECT decision_id, id_key, content_key FROM decisions ORDER BY 1") == \
        before
    assert writer.stats.committed_rows.get("decisions", 0) == 0
    assert rows(store, "SELECT value FROM store_meta") == rows(store, schema.KEY_CANARY_SQL)


# --- the ingest command ------------------------------------------------------------------------

def tw(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_WATCH")}
    return subprocess.run([sys.executable, "-m", "tractatus_watch", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_ingest_stores_the_good_records_and_quarantines_the_bad(tmp_path: Path) -> None:
    good = {"audit_id": "g1", "timestamp": "2026-11-01T00:00:00Z", "service": "BoundaryEnforcer",
            "decision": "ALLOW", "rule_id": "STR-001"}
    lines = [json.dumps(good),
             json.dumps({**good, "audit_id": "big-round", "context": {"round": 2**40}}),
             json.dumps({**good, "audit_id": "far-ts", "timestamp": 1e15}),
             json.dumps({**good, "audit_id": "surrogate", "reason": "\ud800"}),
             '{"audit_id": "deep", "decision": "ALLOW", "timestamp": 1, "context": '
             + "[" * 100_000 + "]" * 100_000 + "}",
             json.dumps({**good, "audit_id": "g2", "reason": "a\u2028b"})]
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join(lines) + "\n")
    db = tmp_path / "i.duckdb"
    result = tw("ingest", str(log), "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[-1] == \
        "stored: 2 new decisions in run audit; 3 more quarantined while storing"
    with Store.open(db, read_only=True) as store:
        assert rows(store, "SELECT decision_id FROM decisions ORDER BY 1") == [
            ("audit-g1",), ("audit-g2",)]
        source = f"audit:{log.resolve()}"
        assert quarantine(store) == [
            (source, f"{log}:5: invalid JSON: nested too deeply"),
            (source, "checks.reason: not valid Unicode text (unpaired surrogate at character 0) "
                     "(check 0) (decision audit-surrogate)"),
            (source, "decisions.round: 1099511627776 out of range for INTEGER "
                     "(decision audit-big-round)"),
            (source, "decisions.ts: 1000000000000 s since the epoch is outside 1970-01-01 .. "
                     "9999-12-31 (decision audit-far-ts)")]
    again = tw("ingest", str(log), "--db", str(db))
    assert again.returncode == 0 and "skipped (unchanged since last ingest)" in again.stdout


def test_ingest_that_cannot_store_ends_in_one_line_and_exit_2(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps({"audit_id": f"a{i}", "timestamp": 1_795_000_000 + i,
                                       "decision": "ALLOW", "reason": "x" * 2000}) + "\n"
                           for i in range(3000)))
    db = tmp_path / "small.duckdb"
    Store.open(db).close()
    limit = 2_000_000
    proc = subprocess.run(
        [sys.executable, "-c",
         "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
         f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
         "sys.argv = ['tractatus-watch', 'ingest', sys.argv[1], '--db', sys.argv[2]]; "
         "from tractatus_watch.cli import main; main()", str(log), str(db)],
        capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_WATCH")})
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "writer failed" in errors[0] and "File too large" in errors[0]
    # The writer's own log line (collectors need it), then the command's one error line.
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and lines[-1] == errors[0]
    assert lines[0].endswith("writer: stopped, nothing more is stored: "
                             + errors[0].split("writer failed: ", 1)[1])
