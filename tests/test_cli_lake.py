"""The lake commands as a user runs them: migrate round trips, maintenance under load, and the
same commands (runs, report, check, export) answering alike on a file and on a lake."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tractatus_watch.monitor.alert_loop import AlertLoop
from tractatus_watch.analysis.alerts.engine import Silence
from tractatus_watch.analysis.alerts.alert_rules import parse_alert_rules
from tractatus_watch.storage import queries as Q
from tractatus_watch.storage.batch import ARROW_SCHEMAS, Batch
from tractatus_watch.storage.maintain import live_files
from tractatus_watch.storage.store import Store
from support.synthetic import decisions_batch
from tractatus_watch.storage.transfer import checksums, data_tables
from tractatus_watch.storage.writer import Cursor, Writer

from .storage.test_lake import RULES
from .test_cli_storage import tw



def _fill_every_table(path: Path) -> None:
    """A file store with rows in every table: events, rollups, quarantine, cursors, alerts."""
    with Store.open(path) as store:
        w = Writer(store)
        for i in range(3):
            w.submit(decisions_batch(i * 1000, 1000, run_id="r1", total=3000), Cursor("s", str(i)))
        bad = decisions_batch(0, 2, run_id="r2").tables
        bad["decisions"] = bad["decisions"].set_column(
            bad["decisions"].schema.get_field_index("verdict"), "verdict",
            pa.array(["nonsense", "allow"]))
        w.submit(Batch(bad))
        w.submit(Batch({"rollouts": pa.Table.from_pylist([{
            "run_id": "r1", "rollout_id": "ro1", "status": "succeeded", "ts": 1_795_000_000_000_000,
            "agent_id": "a", "round": 0, "arm": "governed", "duration_s": 1.5, "metadata": "{}"}],
            schema=ARROW_SCHEMAS["rollouts"])}))
        w.close()
        loop = AlertLoop(store, parse_alert_rules(RULES))
        assert loop.evaluate()
        loop.alert_store.add_silence(Silence.from_row({
            "silence_id": "s1", "matchers": '["run_id=\\"r9\\""]', "comment": "c",
            "created_by": "t", "starts_at": 1_795_000_000.0, "ends_at": 1_895_000_000.0}))
        loop.stop()


def _rows(store: Store) -> dict[str, list[tuple]]:
    cur = store.cursor()
    return {t: cur.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in data_tables(cur)}


def test_migrate_round_trip_file_lake_file_is_exact(tmp_path: Path, lake) -> None:
    spec, data = lake
    src, back = tmp_path / "src.duckdb", tmp_path / "back.duckdb"
    _fill_every_table(src)
    there = tw("migrate", "--from", f"duckdb:{src}", "--to", spec, "--data-path", data)
    assert there.returncode == 0, there.stderr
    assert "identical" in there.stderr
    home = tw("migrate", "--from", spec, "--to", f"duckdb:{back}", "--format", "json")
    assert home.returncode == 0, home.stderr
    with Store.open(src, read_only=True) as a, Store.open(back, read_only=True) as b:
        before, after = _rows(a), _rows(b)
        assert checksums(a.cursor()) == checksums(b.cursor())
    assert before == after  # compared row by row, not only by checksum
    assert all(before[t] for t in ("decisions", "checks", "rewards", "rollouts", "quarantine",
                                   "ingest_state", "alerts", "alert_events", "silences", "runs"))
    again = tw("migrate", "--from", f"duckdb:{src}", "--to", spec, "--data-path", data)
    assert again.returncode == 2 and "already holds data" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_commands_answer_alike_on_file_and_lake(tmp_path: Path, lake) -> None:
    spec, data = lake
    src = tmp_path / "src.duckdb"
    _fill_every_table(src)
    assert tw("migrate", "--from", str(src), "--to", spec, "--data-path", data).returncode == 0
    for args in (("runs", "--format", "json"), ("report", "--run", "r1", "--format", "json"),
                 ("query", "SELECT count(*) AS n FROM checks", "--format", "csv")):
        on_file = tw(*args, "--store", f"duckdb:{src}")
        on_lake = tw(*args, env={"TRACTATUS_WATCH_STORE": spec})
        assert on_file.returncode == on_lake.returncode == 0, on_lake.stderr
        assert on_file.stdout == on_lake.stdout
    out = tmp_path / "decisions.parquet"
    done = tw("export", "--table", "decisions", "--out", str(out), "--store", spec)
    assert done.returncode == 0, done.stderr
    assert pq.read_table(out).num_rows == 3001  # r1, and the valid half of r2


def test_maintain_merges_files_while_a_writer_keeps_committing(lake) -> None:
    spec, data = lake
    with Store.open(spec, data_path=data) as store:
        w = Writer(store, flush_rows=500)
        for i in range(12):  # many small commits: many small files
            w.submit(decisions_batch(i * 500, 500, run_id="r", total=12_000), Cursor("s", str(i)))
            w.flush()
        files_before = live_files(store.cursor())
        totals_before = Q.totals(store.cursor(), "r").to_dicts()

        more = threading.Thread(target=lambda: [
            (w.submit(decisions_batch(i * 500, 500, run_id="r", total=12_000),
                      Cursor("s", str(i))), w.flush()) for i in range(12, 24)])
        more.start()
        result = tw("lake", "maintain", "--keep", "0s", "--store", spec)
        more.join(120)
        w.close()
        assert result.returncode == 0, result.stderr
        assert "data files" in result.stdout
        cur = store.cursor()
        assert cur.execute("SELECT count(*), count(DISTINCT decision_id) FROM decisions"
                           ).fetchall() == [(12_000, 12_000)]
        assert cur.execute("SELECT sum(actions) FROM rollup_agent").fetchall() == [(12_000,)]
        assert store.get_cursor("s") == "23"
    # A quiet lake after maintenance: fewer files, same answers.
    assert tw("lake", "maintain", "--keep", "0s", "--store", spec).returncode == 0
    with Store.open(spec, read_only=True) as store:
        cur = store.cursor()
        assert live_files(cur) < files_before
        assert cur.execute("SELECT count(*) FROM ingest_state").fetchall() == [(1,)]
        half = Q.totals(cur, "r").to_dicts()
    assert [r["actions"] for r in half] == [2 * r["actions"] for r in totals_before]


def test_bad_store_specs_fail_in_one_line(tmp_path: Path) -> None:
    for args, needle in (
            (("runs", "--store", "mysql:x"), "unknown store kind"),
            (("runs", "--store", "quack:nohostport"), "quack:HOST:PORT"),
            (("runs", "--store", str(tmp_path / "x.duckdb"), "--data-path", "/tmp"),
             "--data-path is for a ducklake"),
            (("lake", "maintain", "--store", str(tmp_path / "y.duckdb"), "--keep", "soon"),
             "duration"),
            (("migrate", "--from", str(tmp_path / "z.duckdb"), "--to", str(tmp_path / "z.duckdb")),
             "same store"),
            (("export", "--out", str(tmp_path / "o.parquet")), "Missing option '--table'")):
        result = tw(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr and "Traceback" not in result.stderr, result.stderr
        if not needle.startswith("Missing"):  # usage errors add click's usage hint
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_two_collectors_on_one_run_store_once_and_alert_once(tmp_path: Path, lake) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from tractatus_watch.governance.governor import Governor
    from tractatus_watch.governance.spool_writer import SpoolWriter

    spec, data = lake
    spool = tmp_path / "spool"
    writer = SpoolWriter(spool)
    gov = Governor(mode="enforce", agent_id="a", arm="governed", run_id="same", sink=writer)
    off = Governor(mode="off", agent_id="b", arm="governed", run_id="same", sink=writer)
    for i in range(40):
        gov.check({"kind": "publish", "text": f"Item {i} on housing"}, round=0)
    off.check({"kind": "publish", "text": "unchecked"}, round=0)  # coverage falls below 100%
    writer.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_WATCH")}
    env.update(TRACTATUS_WATCH_STORE=spec, TRACTATUS_WATCH_DATA_PATH=data)
    logs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    procs = [subprocess.Popen([sys.executable, "-m", "tractatus_watch", "collect", "--spool",
                               str(spool), "--alert-log", str(log), "--alert-interval", "0.5"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for log in logs]

    def fired() -> list[dict]:
        return [json.loads(line) for log in logs if log.exists()
                for line in log.read_text().splitlines()]

    deadline = time.monotonic() + 90
    while not any(t["alertname"] == "GovernanceCoverageBelow100" for t in fired()):
        assert time.monotonic() < deadline, "no alert within 90 s"
        assert all(p.poll() is None for p in procs)
        time.sleep(0.2)
    time.sleep(2.0)  # several more evaluation rounds from both collectors
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    coverage = [t for t in fired() if t["alertname"] == "GovernanceCoverageBelow100"
                and t["to"] == "firing"]
    assert len(coverage) == 1, coverage  # one leader notified; the standby did not
    with Store.open(spec, read_only=True) as store:
        cur = store.cursor()
        assert cur.execute("SELECT count(*), count(DISTINCT decision_id) FROM decisions "
                           "WHERE run_id = 'same'").fetchall() == [(41, 41)]
        assert cur.execute("SELECT sum(actions) FROM rollup_agent WHERE run_id = 'same'"
                           ).fetchall() == [(41,)]
