"""The same store on DuckLake (PostgreSQL catalog, Parquet data): writer, queries, locks."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from tractatus_watch.storage import queries as Q
from tractatus_watch.storage.errors import StoreError
from tractatus_watch.storage.schema import LATEST_VERSION
from tractatus_watch.storage.store import Store
from support.synthetic import decisions_batch
from tractatus_watch.storage.target import parse_target, redact
from tractatus_watch.storage.writer import Cursor, Writer


def test_specs_parse_and_never_show_a_password() -> None:
    t = parse_target("ducklake:postgres:host=db dbname=w password=hunter2", data_path="/d")
    assert (t.kind, t.data_path) == ("ducklake", "/d")
    assert "hunter2" not in t.label and "hunter2" not in repr(t)
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert parse_target("quack:127.0.0.1:9494").port == 9494
    assert parse_target("duckdb:/tmp/x.duckdb").path.name == "x.duckdb"
    assert parse_target("x.duckdb").kind == "duckdb"
    for bad in ("ducklake:sqlite:x", "quack:host", "mysql:x", "ducklake:postgres:"):
        with pytest.raises(StoreError):
            parse_target(bad)


def _same(a: list[dict], b: list[dict]) -> None:
    # sums of floats differ in the last bits with the order rows are summed in
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float):
                assert x[k] == pytest.approx(y[k], rel=1e-9), k
            else:
                assert x[k] == y[k], k


def test_lake_writer_is_exactly_once_and_queries_match_a_file(lake, tmp_path) -> None:
    spec, data = lake
    batches = [decisions_batch(i * 2000, 2000, run_id="r", total=6000) for i in range(3)]
    results = []
    for location in (spec, tmp_path / "f.duckdb"):
        with Store.open(location, data_path=data) as store:
            w = Writer(store)
            for i, b in enumerate(batches + batches[:1]):  # the first batch arrives twice
                w.submit(b, Cursor("src", str(i)))
            w.close()
            assert w.stats.committed_rows["decisions"] == 6000
            assert store.get_cursor("src") == "3"
            cur = store.cursor()
            results.append(Q.totals(cur, "r").to_dicts() + Q.per_round(cur, "r").to_dicts())
    _same(results[0], results[1])
    # A reader in another process (read-only attach) sees the same.
    with Store.open(spec, read_only=True) as reader:
        assert reader.cursor().execute("SELECT count(*) FROM decisions").fetchall() == [(6000,)]


def _write(spec: str, data: str, k: int) -> None:
    with Store.open(spec, data_path=data) as store:
        w = Writer(store, flush_rows=1500)
        for i in range(0, 6000, 1500):
            # every process writes the shared run (overlapping) and a run of its own
            w.submit(decisions_batch(i, 1500, run_id="shared", total=6000), Cursor(f"s{k}", str(i)))
            w.submit(decisions_batch(i, 1500, run_id=f"own{k}", total=6000),
                     Cursor(f"s{k}", str(i)))
        w.close()


def test_concurrent_writers_on_a_new_lake_store_each_row_once(lake) -> None:
    spec, data = lake
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write, args=(spec, data, k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
        assert p.exitcode == 0
    with Store.open(spec, read_only=True) as store:
        cur = store.cursor()
        rows = cur.execute("SELECT run_id, count(*), count(DISTINCT decision_id) FROM decisions "
                           "GROUP BY ALL ORDER BY 1").fetchall()
        assert rows == [("own0", 6000, 6000), ("own1", 6000, 6000), ("own2", 6000, 6000),
                        ("shared", 6000, 6000)]
        assert cur.execute("SELECT count(*) FROM runs").fetchall() == [(4,)]
        assert cur.execute("SELECT sum(actions) FROM rollup_agent WHERE run_id = 'shared'"
                           ).fetchall() == [(6000,)]
        assert cur.execute("SELECT max(version), count(*) FROM schema_version").fetchall() == [
            (LATEST_VERSION, LATEST_VERSION)]


def test_a_missing_lake_needs_a_data_path_and_bad_catalogs_fail_in_one_line(postgres) -> None:
    conninfo = postgres.create_database("lake_nodata")
    with pytest.raises(StoreError, match="--data-path"):
        Store.open(f"ducklake:postgres:{conninfo}")
    with pytest.raises(StoreError) as err:
        Store.open("ducklake:postgres:host=127.0.0.1 port=1 dbname=x password=s3cret",
                   data_path="/tmp/x")
    assert "s3cret" not in str(err.value) and "\n" not in str(err.value)


RULES = """
[[groups]]
name = "t"
[[groups.rules]]
alert = "RunHasActions"
expr = "SELECT run_id, CAST(sum(actions) AS DOUBLE) AS value FROM rollup_agent GROUP BY run_id"
labels = { severity = "warning" }
"""


def test_one_collector_leads_alerts_and_a_standby_takes_over_without_renotifying(
        lake, tmp_path) -> None:
    from tractatus_watch.monitor.alert_loop import AlertLoop
    from tractatus_watch.analysis.alerts.notify import JsonlNotifier
    from tractatus_watch.analysis.alerts.alert_rules import parse_alert_rules

    spec, data = lake
    rules = parse_alert_rules(RULES)
    with Store.open(spec, data_path=data) as a, Store.open(spec, data_path=data) as b:
        w = Writer(a)
        w.submit(decisions_batch(0, 500, run_id="shared", total=500))
        w.close()
        first = AlertLoop(a, rules, [JsonlNotifier(tmp_path / "a.jsonl")])
        second = AlertLoop(b, rules, [JsonlNotifier(tmp_path / "b.jsonl")])
        fired = first.evaluate()
        assert [(t.alertname, t.to_state) for t in fired] == [("RunHasActions", "firing")]
        assert second.evaluate() == [] and not second.leading  # stands by: no double alert
        first.stop()  # the leader exits: its lock goes with its session
        assert second.evaluate() == [] and second.leading  # took over the stored state
        assert second.engine is not None and [s.state for s in second.engine.states()] == [
            "firing"]
        second.stop()
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 1
    assert not (tmp_path / "b.jsonl").exists() or not (tmp_path / "b.jsonl").read_text()


def test_extensions_load_offline_and_a_missing_package_names_itself(monkeypatch) -> None:
    import importlib.util

    import duckdb

    from tractatus_watch.storage import extensions

    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    extensions.load(con, "quack", "ducklake", "postgres", "httpfs")
    loaded = {r[0] for r in con.execute(
        "SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}
    assert {"quack", "ducklake", "postgres_scanner", "httpfs"} <= loaded
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "duckdb_extension_quack"
                        else real(name, *a))
    with pytest.raises(StoreError, match=r"pip install duckdb-extension-quack==1\.5\.5"):
        extensions.load(duckdb.connect(), "quack")


def test_a_lost_commit_race_is_retried_from_a_fresh_snapshot(lake) -> None:
    from tractatus_watch.storage.coordination import retry_conflicts

    spec, data = lake
    with Store.open(spec, data_path=data) as a, Store.open(spec, data_path=data) as b:
        ca, cb = a.cursor(), b.cursor()
        ca.execute("INSERT INTO silences VALUES ('s', '[]', NULL, NULL, now()::TIMESTAMP, "
                   "now()::TIMESTAMP)")
        attempts = []

        def attempt() -> int:
            attempts.append(1)
            ca.execute("BEGIN TRANSACTION")
            try:
                ca.execute("DELETE FROM silences")
                if len(attempts) == 1:  # another process deletes from the table meanwhile
                    cb.execute("DELETE FROM silences")
                ca.execute("COMMIT")
            except BaseException:
                try:
                    ca.execute("ROLLBACK")
                except Exception:
                    pass
                raise
            return len(attempts)

        assert retry_conflicts(attempt, first_wait_s=0.01) == 2


def test_reading_a_lake_nobody_created_says_so(postgres) -> None:
    from tractatus_watch.storage.errors import StoreMissing

    conninfo = postgres.create_database("lake_empty")
    with pytest.raises(StoreMissing, match="no tractatus-watch data yet"):
        Store.open(f"ducklake:postgres:{conninfo}", read_only=True)


def test_lake_freshness_is_the_snapshot_and_moves_with_each_commit(lake) -> None:
    spec, data = lake
    with Store.open(spec, data_path=data) as store:
        w = Writer(store)
        w.submit(decisions_batch(0, 100, run_id="r", total=200))
        w.flush()
        cur = store.cursor()
        first = Q.freshness(cur, "r", lake=True)
        assert Q.freshness(cur, "r", lake=True) == first  # nothing new: the same version
        w.submit(decisions_batch(100, 100, run_id="r", total=200))
        w.close()
        second = Q.freshness(store.cursor(), "r", lake=True)
        assert second[0] > first[0] and second[1] >= first[1]
