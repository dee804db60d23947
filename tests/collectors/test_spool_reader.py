"""Spool reader: segments from the real SpoolWriter into a real store, exactly once across a
SIGKILL of the reading process and halfway through a segment, late segments (also across a
restart), settling, retention, special files, line separators, bad bytes and huge lines
quarantined with bounded memory."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tractatus_watch.collectors.sink import ListSink, writer_sink
from tractatus_watch.collectors.spool_reader import SpoolCursor, SpoolReader
from tractatus_watch.governance.spool_writer import SpoolWriter
from tractatus_watch.records.spool_format import segment_name
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


def test_bad_run_records_are_quarantined_and_the_rest_of_the_segment_stored(
        tmp_path: Path, store, writer, q) -> None:
    spool = tmp_path / "spool"
    w = SpoolWriter(spool, fsync=False)
    end = {"run_id": "trainer-run", "event": "ended", "ts": 1_790_000_100.0,
           "source": "trainer hooks", "detail": "the trainer process exited"}
    w.write("decision", decision(1))
    w.write("run", end)
    w.write("run", {**end, "event": "paused"})
    w.write("run", {k: v for k, v in end.items() if k != "run_id"})
    w.write("run", {**end, "run_id": "r" * 1_025})  # parses, but cannot be stored
    w.write("run", {**end, "run_id": "", "event": "started"})  # "": the collector's run
    w.write("decision", decision(2))
    segment = w.rotate()
    w.close()
    assert segment is not None
    reader = SpoolReader(spool, settle_s=0)
    assert reader.poll_once(writer_sink(writer, "spool-run")) == 1
    writer.flush()
    assert q("SELECT decision_id FROM decisions ORDER BY 1") == [("d-1",), ("d-2",)]
    assert q("SELECT run_id, event, epoch(ts), source, detail FROM run_events ORDER BY 1") == [
        ("spool-run", "started", 1_790_000_100.0, "trainer hooks", "the trainer process exited"),
        ("trainer-run", "ended", 1_790_000_100.0, "trainer hooks", "the trainer process exited")]
    assert sorted(q("SELECT source, reason FROM quarantine")) == sorted([
        (reader.source, f"{segment.name}:3: event: expected started or ended, got 'paused'"),
        (reader.source, f"{segment.name}:4: run_id: missing"),
        (reader.source, "run_events.run_id: 1025 characters, more than 1024 "
                        f"(run event {'r' * 200})")])
    assert reader.stats.quarantined == 2  # the third was refused by the store, not the reader


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


# Every code point str.splitlines() breaks on, inside legitimate text.
SEPARATORS = ("before\u2028line\u2029para\x85next\x0bvt\x0cff\x1cfs\x1dgs\x1ers\rcr\r\ncrlf"
              "\nlf end é")


class Captured(logging.Handler):
    """The spool reader's log records (the runner may have turned propagation off)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def spool_log() -> Iterator[Captured]:
    handler = Captured()
    logger = logging.getLogger("tractatus_watch.collectors.spool_reader")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def publish(folder: Path, name: str, lines: list[bytes]) -> Path:
    """Publish a segment as SpoolWriter does: a temporary name, then a rename."""
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(b"".join(lines))
    final = folder / name
    os.rename(tmp, final)
    return final


def line(kind: str, data: object) -> bytes:
    return json.dumps({"type": kind, "data": data}).encode() + b"\n"


def test_line_separators_inside_text_round_trip_to_the_store(tmp_path: Path, writer, q) -> None:
    spool = tmp_path / "spool"
    w = SpoolWriter(spool, fsync=False)
    d1 = decision(1)
    d1["action"] = {"kind": "publish", "summary": SEPARATORS}
    d1["checks"][0]["reason"] = SEPARATORS  # type: ignore[index]
    w.write("decision", d1)
    w.write("event", {"event_id": "e-1", "event_type": "note", "ts": 1_790_000_000.0,
                      "rollout_id": "ro", "payload": {"text": SEPARATORS}, "run_id": ""})
    w.close()
    written = b"".join(p.read_bytes() for p in spool.glob("seg-*.ndjson"))
    assert written.count(b"\n") == 2  # one line per record: every break inside is escaped
    for raw in ("\u2028", "\u2029", "\x85"):
        assert raw.encode() not in written
    # Another producer's JSON with the separators raw (ensure_ascii=False), ending in CRLF.
    d2 = decision(2)
    d2["action"] = {"kind": "publish", "summary": SEPARATORS}
    publish(spool, segment_name(time.time_ns() - 10**10, 2, 1), [
        json.dumps({"type": "decision", "data": d2}, ensure_ascii=False).encode() + b"\r\n"])
    reader = SpoolReader(spool, settle_s=0)
    assert reader.poll_once(writer_sink(writer, "sep")) == 2
    writer.flush()
    assert q("SELECT count(*) FROM quarantine") == [(0,)]
    assert q("SELECT decision_id, action_summary FROM decisions ORDER BY 1") == [
        ("d-1", SEPARATORS), ("d-2", SEPARATORS)]
    assert q("SELECT reason FROM checks WHERE decision_id = 'd-1'") == [(SEPARATORS,)]
    assert json.loads(q("SELECT payload FROM events")[0][0]) == {"text": SEPARATORS}


def test_bad_bytes_cost_one_line_and_are_quarantined_with_their_position(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    bad_utf8 = b'{"type":"decision","data":{"decision_id":"\xff\xfe"}}'
    seg = publish(spool, segment_name(time.time_ns() - 10**10, 3, 1), [
        line("decision", decision(1)).replace(b"\n", b"\r\n"),
        b"\n",
        bad_utf8 + b"\n",
        line("decision", decision(2)),
        b"\x00\x01 not json at all\n",
        line("decision", decision(3)).rstrip(b"\n"),  # no final newline: still a line
    ])
    sink = ListSink()
    assert SpoolReader(spool, settle_s=0).poll_once(sink) == 1
    assert [d.decision_id for d in sink.all.decisions] == ["d-1", "d-2", "d-3"]
    got = [(r.reason, r.raw) for r in sink.all.quarantined]
    assert got == [
        (f"{seg.name}:3: invalid UTF-8 at byte {bad_utf8.index(b'\xff')}",
         '{"type":"decision","data":{"decision_id":"\\xff\\xfe"}}'),
        (f"{seg.name}:5: invalid JSON: Expecting value", "\x00\x01 not json at all"),
    ]


def test_a_segment_is_streamed_with_bounded_buffers_and_batches(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    limit = 64 * 1024
    long_line = b"x" * (3 * 1024 * 1024)
    garbage = os.urandom(2 * 1024 * 1024).replace(b"\n", b"")
    lines = [line("decision", decision(0)), long_line + b"\n", line("decision", decision(1)),
             garbage + b"\n"] + [line("decision", decision(i)) for i in range(2, 100)]
    seg = publish(spool, segment_name(time.time_ns() - 10**10, 4, 1), lines)
    size = seg.stat().st_size
    assert size > 5 * 1024 * 1024
    reader = SpoolReader(spool, settle_s=0, max_line_bytes=limit, batch_records=25)
    sink = ListSink()
    assert reader.poll_once(sink) == 1
    # Never more than one capped line in memory, never the segment.
    assert reader.max_buffered <= limit + 1
    assert [d.decision_id for d in sink.all.decisions] == [f"d-{i}" for i in range(100)]
    reasons = [r.reason for r in sink.all.quarantined]
    assert reasons == [
        f"{seg.name}:2: line too long: {len(long_line)} bytes (limit {limit}); "
        "its first bytes are kept",
        f"{seg.name}:4: line too long: {len(garbage)} bytes (limit {limit}); "
        "its first bytes are kept"]
    assert sink.all.quarantined[0].raw == "x" * 65_536
    # Records leave in batches; each cursor says how far into the segment they reach.
    assert [len(c) for c in sink.calls] == [25, 25, 25, 25, 2]
    parts = [SpoolCursor.parse(c.cursor[1]).part for c in sink.calls if c.cursor]
    assert parts == [(seg.name, sum(len(x) for x in lines[:n]), n + 1) for n in (25, 50, 75, 100)
                     ] + [None]


def test_a_crash_halfway_through_a_segment_resumes_there_without_duplicates(
        tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    fill(spool, 1, 100)
    (seg,) = spool.glob("seg-*.ndjson")
    reader = SpoolReader(spool, settle_s=0, batch_records=30)
    sink = ListSink()
    assert reader.poll_once(sink) == 1
    assert [len(c) for c in sink.calls] == [30, 30, 30, 10]
    second = SpoolCursor.parse(sink.calls[1].cursor[1])  # type: ignore[index]
    offset = sum(len(x) for x in seg.read_bytes().splitlines(keepends=True)[:60])
    assert second.part == (seg.name, offset, 61)
    # The process dies after the second commit: the next one starts at line 61.
    again = SpoolReader(spool, settle_s=0, batch_records=30)
    again.resume(sink.calls[1].cursor[1])  # type: ignore[index]
    rest = ListSink()
    assert again.poll_once(rest) == 1
    assert [d.decision_id for d in rest.all.decisions] == [f"d-{i}" for i in range(60, 100)]
    assert again.poll_once(rest) == 0


def test_a_late_low_named_segment_published_while_collect_is_down_is_read_once(
        tmp_path: Path, store, writer, q) -> None:
    spool = tmp_path / "spool"
    fill(spool, 3, 10)
    sink = writer_sink(writer, "late-run")

    def collect() -> SpoolReader:  # one run of `collect`: resume, a pass, commit
        reader = SpoolReader(spool, settle_s=0)
        reader.resume(store.get_cursor(reader.source))
        reader.poll_once(sink)
        writer.flush()
        return reader

    first = collect()
    assert first.stats.segments == 3
    assert q("SELECT count(*) FROM decisions") == [(30,)]
    # While collect is down, a producer whose clock is an hour behind publishes a segment.
    late = publish(spool, segment_name(time.time_ns() - 3600 * 10**9, 4242, 1),
                   [line("decision", decision(100 + i)) for i in range(5)] + [b"{oops\n"])
    committed = SpoolCursor.parse(store.get_cursor(first.source))
    assert committed.mark is not None and late.name < committed.mark
    second = collect()
    assert (second.stats.segments, second.stats.late, second.stats.quarantined) == (1, 1, 1)
    # And a third run reads nothing again: the quarantined line would show a second time.
    third = collect()
    assert third.stats.segments == 0
    assert q("SELECT count(*), count(DISTINCT decision_id) FROM decisions") == [(35, 35)]
    assert q("SELECT reason FROM quarantine") == [(f"{late.name}:6: invalid JSON: "
                                                   "Expecting property name enclosed in "
                                                   "double quotes",)]
    assert sorted(r[0] for r in q("SELECT decision_id FROM decisions WHERE decision_id "
                                  "LIKE 'd-10_'")) == [f"d-{100 + i}" for i in range(5)]


def test_an_old_cursor_a_segment_name_still_resumes_after_it(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    fill(spool, 3, 2)
    names = sorted(p.name for p in spool.glob("seg-*.ndjson"))
    reader = SpoolReader(spool, settle_s=0)
    reader.resume(names[1])  # what a collector before issue 11 committed
    sink = ListSink()
    assert reader.poll_once(sink) == 1
    assert [d.decision_id for d in sink.all.decisions] == ["d-4", "d-5"]
    cursor = SpoolCursor.parse(sink.calls[-1].cursor[1])  # type: ignore[index]
    assert cursor.mark == names[2]
    assert all(cursor.done(n, (spool / n).stat().st_ctime_ns) for n in names)
    with pytest.raises(ValueError, match="spool cursor not understood"):
        SpoolCursor.parse('{"v": 99}')


def test_the_cursor_stays_small_as_thousands_of_segments_pass(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    reader = SpoolReader(spool, settle_s=0)
    sink = ListSink()
    w = SpoolWriter(spool, max_age_s=60, fsync=False)
    for n in range(1200):
        w.write("decision", decision(n))
        w.rotate()
        if n % 400 == 399:
            reader.poll_once(sink)
    reader.poll_once(sink)
    assert len(sink.all.decisions) == len({d.decision_id for d in sink.all.decisions}) == 1200
    # Segments renamed within a second of a listing are carried by name; later passes fold
    # them into the mark.
    deadline = time.monotonic() + 30
    while reader.cursor.seen:
        assert time.monotonic() < deadline
        time.sleep(0.1)
        reader.poll_once(sink)
    names = sorted(p.name for p in spool.glob("seg-*.ndjson"))
    assert reader.cursor.mark == names[-1]
    # The next commit carries that compact cursor: a mark and at most the new segment.
    w.write("decision", decision(5000))
    w.close()
    assert reader.poll_once(sink) == 1
    committed = sink.calls[-1].cursor[1]  # type: ignore[index]
    assert len(committed) < 200
    cursor = SpoolCursor.parse(committed)
    newest = max(spool.glob("seg-*.ndjson"))
    assert cursor.seen <= {newest.name} and cursor.done(newest.name, newest.stat().st_ctime_ns)
    assert len(sink.all.decisions) == 1201


def test_special_files_named_like_segments_are_skipped_with_one_warning(
        tmp_path: Path, spool_log: Captured) -> None:
    spool = tmp_path / "spool"
    fill(spool, 2, 3)  # d-0..d-5
    now = time.time_ns()
    fifo = spool / segment_name(now - 4 * 10**9, 11, 1)
    os.mkfifo(fifo)
    folder = spool / segment_name(now - 3 * 10**9, 12, 1)
    folder.mkdir()
    outside = tmp_path / "outside.ndjson"
    outside.write_bytes(line("decision", decision(99)))
    link = spool / segment_name(now - 2 * 10**9, 13, 1)
    link.symlink_to(outside)
    reader = SpoolReader(spool, settle_s=0)
    sink = ListSink()
    counts: list[int] = []
    passes = threading.Thread(target=lambda: counts.extend(
        reader.poll_once(sink) for _ in range(3)), daemon=True)
    passes.start()
    passes.join(20)
    assert not passes.is_alive(), "the reader blocked on a special file"
    assert counts == [2, 0, 0]
    assert [d.decision_id for d in sink.all.decisions] == [f"d-{i}" for i in range(6)]
    skipped = sorted(m for m in spool_log.messages if m.startswith("spool: skipping"))
    assert skipped == sorted([f"spool: skipping {fifo.name}: not a regular file (FIFO)",
                              f"spool: skipping {folder.name}: not a regular file (directory)",
                              f"spool: skipping {link.name}: not a regular file (symlink)"])
    assert reader.stats.skipped == 3
    # They do not hold the cursor back, and they are never deleted.
    cursor = SpoolCursor.parse(sink.calls[-1].cursor[1])  # type: ignore[index]
    assert cursor.mark == max(p.name for p in spool.iterdir())
    assert reader.apply_retention(sink.calls[-1].cursor[1]) == 0  # type: ignore[index]
    # A FIFO replaced by a real segment of the same name is read.
    fifo.unlink()
    publish(spool, fifo.name, [line("decision", decision(50))])
    assert reader.poll_once(sink) == 1
    assert sink.all.decisions[-1].decision_id == "d-50"


PROBES = """
[[groups]]
name = "e2e-probes"

[[groups.rules]]
alert = "FirstSegmentStored"
expr = '''SELECT 'e2e' AS run_id, count(*) AS value FROM decisions
          HAVING count(*) >= 20 AND (SELECT count(*) FROM quarantine) >= 1'''

[[groups.rules]]
alert = "SecondSegmentStored"
expr = "SELECT 'e2e' AS run_id, count(*) AS value FROM decisions HAVING count(*) >= 30"

[[groups.rules]]
alert = "LateSegmentStored"
expr = "SELECT 'e2e' AS run_id, count(*) AS value FROM decisions HAVING count(*) >= 35"
"""


def poison_verdict() -> dict[str, object]:
    d = decision(0)
    d["decision_id"] = "poison"
    d["checks"] = [{"service": "BoundaryEnforcer", "rule_id": "inst_016", "verdict": "MAYBE"}]
    return d


def poison_round() -> dict[str, object]:
    d = decision(0)
    d["decision_id"] = "poison"
    d["round"] = 2**40  # does not fit the INTEGER column
    return d


@pytest.mark.parametrize("poison", [
    pytest.param(poison_verdict, id="unknown-verdict"),
    pytest.param(poison_round, id="round-out-of-range"),
])
def test_collect_spool_quarantines_a_poison_record_keeps_running_and_restarts_cleanly(
        tmp_path: Path, poison) -> None:  # type: ignore[no-untyped-def]
    spool, db = tmp_path / "spool", tmp_path / "c.duckdb"
    rules, alert_log, errors = tmp_path / "probes.toml", tmp_path / "alerts.jsonl", \
        tmp_path / "collect.err"
    rules.write_text(PROBES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_WATCH")}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "tractatus_watch", "collect", "--spool", str(spool),
             "--rules", str(rules), "--alert-log", str(alert_log), "--alert-interval", "0.5",
             "--run", "e2e", "--db", str(db)],
            env=env, stdout=subprocess.DEVNULL, stderr=open(errors, "ab"))

    def wait_fired(proc: subprocess.Popen[bytes], alert: str) -> None:
        deadline = time.monotonic() + 60
        while not (alert_log.exists() and any(
                json.loads(x)["alertname"] == alert and json.loads(x)["to"] == "firing"
                for x in alert_log.read_text().splitlines())):
            assert proc.poll() is None, f"collect exited: {errors.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{alert} never fired"
            time.sleep(0.1)

    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, errors.read_text()[-2000:]

    w = SpoolWriter(spool, max_age_s=60)
    for i in range(10):
        w.write("decision", decision(i))
    w.write("decision", poison())  # line 11, in the middle of the run
    for i in range(10, 20):
        w.write("decision", decision(i))
    w.rotate()
    (first,) = spool.glob("seg-*.ndjson")
    proc = start()
    wait_fired(proc, "FirstSegmentStored")
    # Still capturing after the poison.
    for i in range(20, 30):
        w.write("decision", decision(i))
    w.close()
    wait_fired(proc, "SecondSegmentStored")
    stop(proc)
    # While collect is down, a producer whose clock is an hour behind publishes a segment.
    publish(spool, segment_name(time.time_ns() - 3600 * 10**9, 4242, 1),
            [line("decision", decision(i)) for i in range(30, 35)])
    proc = start()
    wait_fired(proc, "LateSegmentStored")
    stop(proc)
    assert "Traceback" not in errors.read_text()
    with Store.open(db, read_only=True) as store:
        cur = store.cursor()
        assert cur.execute("SELECT count(*), count(DISTINCT decision_id) FROM decisions"
                           ).fetchall() == [(35, 35)]
        assert cur.execute("SELECT count(*) FROM checks").fetchall() == [(35,)]
        assert sorted(r[0] for r in cur.execute("SELECT decision_id FROM decisions")
                      .fetchall()) == sorted(f"d-{i}" for i in range(35))
        quarantined = cur.execute("SELECT reason, raw FROM quarantine").fetchall()
    assert len(quarantined) == 1 and '"poison"' in quarantined[0][1]
    if poison is poison_verdict:
        assert quarantined[0][0].startswith(f"{first.name}:11: checks[0].verdict: "
                                            "unknown verdict 'MAYBE'")
