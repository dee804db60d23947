"""Spool reader: segments from the real SpoolWriter into a real store, exactly once across a
SIGKILL of the reading process, late segments, settling, retention, bad lines quarantined."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tractatus_watch.collectors.sink import ListSink, writer_sink
from tractatus_watch.collectors.spool import SpoolCursor, SpoolReader
from tractatus_watch.governance.spool import SpoolWriter, segment_name
from tractatus_watch.storage.store import Store

WORKER = Path(__file__).with_name("spool_worker.py")


def decision(i: int) -> dict[str, object]:
    return {"schema": "tractatus.decision/1", "decision_id": f"d-{i}", "agent_id": "a",
            "round": i % 5, "arm": "governed", "mode": "enforce", "action": {"kind": "k"},
            "checks": [{"service": "BoundaryEnforcer", "rule_id": "inst_016",
                        "verdict": "block" if i % 4 == 0 else "allow"}],
            "executed": i % 4 != 0, "ts": 1_790_000_000.0 + i}


def fill(folder: Path, segments: int, per_segment: int) -> None:
    w = SpoolWriter(folder, max_age_s=60, fsync=False)
    n = 0
    for _ in range(segments):
        for _ in range(per_segment):
            w.write("decision", decision(n))
            n += 1
        w.rotate()
    w.close()


def test_every_record_type_and_bad_lines(tmp_path: Path, store, writer, q) -> None:
    spool = tmp_path / "spool"
    w = SpoolWriter(spool, fsync=False)
    w.write("decision", decision(1))
    w.write("reward", {"reward_id": "r-1", "rollout_id": "ro", "agent_id": "a", "round": 2,
                       "arm": "governed", "value": 0.5, "ts": 1_790_000_000.0, "run_id": ""})
    w.write("rollout", {"rollout_id": "ro", "status": "succeeded", "ts": 1_790_000_001.0,
                        "round": 2, "run_id": "other-run"})
    w.write("event", {"event_id": "e-1", "event_type": "tool_call", "ts": 1_790_000_002.0,
                      "rollout_id": "ro", "payload": {"tool": "x"}, "run_id": ""})
    w.write("decision", {"schema": "tractatus.decision/1", "decision_id": "bad"})  # no mode
    w.rotate()
    w.close()
    # A producer that packs decisions, and lines no writer should produce.
    extra = spool / segment_name(time.time_ns() - 10**10, 1, 1)
    extra.write_text("\n".join([
        json.dumps({"type": "decisions", "data": [decision(2), decision(3), {"nope": 1}]}),
        "{not json",
        json.dumps({"type": "mystery", "data": {}}),
        json.dumps(["a list"]),
    ]) + "\n")
    reader = SpoolReader(spool, settle_s=0)
    assert reader.poll_once(writer_sink(writer, "spool-run")) == 2
    writer.flush()
    assert q("SELECT decision_id FROM decisions ORDER BY 1") == [("d-1",), ("d-2",), ("d-3",)]
    assert q("SELECT reward_id, run_id, round FROM rewards") == [("r-1", "spool-run", 2)]
    assert q("SELECT run_id, status FROM rollouts") == [("other-run", "succeeded")]
    assert q("SELECT event_id, payload FROM events") == [("e-1", '{"tool": "x"}')]
    reasons = sorted(r[0] for r in q("SELECT reason FROM quarantine"))
    assert len(reasons) == 5
    expected = [f"{extra.name}:1: data[2].", f"{extra.name}:2: invalid JSON",
                f"{extra.name}:3: type: unknown record type 'mystery'",
                f"{extra.name}:4: expected an object"]
    assert [r for r in reasons if r.startswith(extra.name)] == sorted(
        next(r for r in reasons if r.startswith(p)) for p in expected)
    others = [r for r in reasons if not r.startswith(extra.name)]
    assert len(others) == 1 and others[0].endswith(":5: mode: missing")
    assert reader.stats.segments == 2 and reader.stats.quarantined == 5
    # Nothing new on a second pass.
    assert reader.poll_once(writer_sink(writer, "spool-run")) == 0


def test_late_segment_settle_and_retention(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    now = time.time_ns()
    second = spool / segment_name(now - 5 * 10**9, 7, 2)
    second.write_text(json.dumps({"type": "decision", "data": decision(2)}) + "\n")
    fresh = spool / segment_name(now, 7, 3)
    fresh.write_text(json.dumps({"type": "decision", "data": decision(3)}) + "\n")
    (spool / f".{segment_name(now, 8, 1)}.tmp").write_text("half a segm")  # never read
    sink = ListSink()
    reader = SpoolReader(spool, settle_s=2.0, retention_s=0.0)
    assert reader.poll_once(sink) == 1  # the fresh one waits for the settle time
    committed = sink.calls[-1].cursor
    assert committed is not None
    first = SpoolCursor.parse(committed[1])
    assert first.mark == second.name and first.part is None
    assert first.done(second.name, second.stat().st_ctime_ns)
    assert not first.done(fresh.name, fresh.stat().st_ctime_ns)
    # A segment of another process appears below the cursor while we run: still read.
    late = spool / segment_name(now - 9 * 10**9, 9, 1)
    late.write_text(json.dumps({"type": "decision", "data": decision(1)}) + "\n")
    # Retention deletes only what the committed cursor says is done: not the late segment.
    assert reader.apply_retention(committed[1]) == 1
    assert not second.exists() and late.exists()
    assert reader.poll_once(sink) == 1 and reader.stats.late == 1
    assert [d.decision_id for d in sink.all.decisions] == ["d-2", "d-1"]
    committed = sink.calls[-1].cursor
    assert committed is not None
    assert reader.apply_retention(committed[1]) == 1
    assert sorted(p.name for p in spool.iterdir()) == sorted(
        [fresh.name, f".{segment_name(now, 8, 1)}.tmp"])
    # After a restart, what the cursor says is done stays done.
    again = SpoolReader(spool, settle_s=0.0)
    again.resume(committed[1])
    sink2 = ListSink()
    assert again.poll_once(sink2) == 1
    assert [d.decision_id for d in sink2.all.decisions] == ["d-3"]


def test_sigkill_of_the_reading_process_is_exactly_once(tmp_path: Path) -> None:
    spool, db = tmp_path / "spool", tmp_path / "spool.duckdb"
    segments, per = 60, 200
    fill(spool, segments, per)
    last = sorted(p.name for p in spool.iterdir())[-1]
    last_ctime = (spool / last).stat().st_ctime_ns

    def done(cursor: str | None) -> bool:  # the cursor says every segment was read
        return SpoolCursor.parse(cursor).done(last, last_ctime)

    def spawn() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(WORKER), str(db), str(spool)],
                                stdout=subprocess.PIPE, stderr=open(tmp_path / "w.log", "a"),
                                text=True)

    proc = spawn()
    assert proc.stdout is not None
    for i, _ in enumerate(proc.stdout):
        if i == 8:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    with Store.open(db) as store:
        cursor = store.get_cursor(f"spool:{spool.resolve()}")
        partial = store.cursor().execute("SELECT count(*) FROM decisions").fetchall()[0][0]
    assert cursor is not None and not done(cursor) and 0 < partial < segments * per
    proc = spawn()
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() != "-" and done(line.strip()):
            break
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    with Store.open(db) as store:
        cur = store.cursor()
        assert cur.execute("SELECT count(*), count(DISTINCT decision_id) FROM decisions"
                           ).fetchall()[0] == (segments * per, segments * per)
        assert cur.execute("SELECT count(*) FROM checks").fetchall()[0][0] == segments * per
        assert done(store.get_cursor(f"spool:{spool.resolve()}"))
