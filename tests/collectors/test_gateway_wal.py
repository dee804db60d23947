"""The gateway's write-ahead log (real files) and the gateway tap with it (the real Agent
Lightning app, in-process): every 2xx answer comes after its records are durable."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tractatus_watch.collectors.gateway_tap import GatewayTap, _Tee
from tractatus_watch.collectors.gateway_wal import WriteAheadLog, wal_folder
from tractatus_watch.collectors.sink import ListSink, writer_sink
from tractatus_watch.records.delivery import Records
from tractatus_watch.records.events import (
    Decision, Event, Quarantined, Reward, RolloutTransition,
)
from tractatus_watch.storage.target import parse_target

from tractatus_watch.records.witness import WitnessedAction, call_digest

from .test_gateway_tap import decision


def records() -> Records:
    dec = Decision.from_payload({**decision(1), "run_id": "r", "rollout_id": "ro-1",
                                 "agent_note": {"kept": ["as", "is"]}})
    dec.extra["agent_round"] = 7
    return Records(
        decisions=[dec],
        rewards=[Reward(reward_id="ro-1:0:reward:0", rollout_id="ro-1", agent_id="agent-1",
                        round=2, arm="governed", value=0.25, ts=1_790_000_001.5, run_id="r")],
        rollouts=[RolloutTransition(rollout_id="ro-1", status="succeeded", ts=1_790_000_002.0,
                                    agent_id="agent-1", round=2, arm="governed",
                                    duration_s=1.5, run_id="r",
                                    metadata={"is_train": True, "attempt_id": "0"})],
        events=[Event(event_id="ro-1:0:tool_call:0", event_type="tool_call",
                      ts=1_790_000_003.0, rollout_id="ro-1", run_id="r",
                      payload={"tool": "search", "q": "caf\u00e9 \u2028 \ud800"})],
        quarantined=[Quarantined(source="gateway:x", reason="ro-1:0:x:0: bad", raw="{}",
                                 ts=1_790_000_004.0)],
        witnessed=[WitnessedAction("ro-1:0:model_request:0#1", "ro-1", 0, 1, "publish",
                                   call_digest('{"a": 1}'), 1_790_000_001.0, "r", "agent-1",
                                   "governed", 2)])


def replayed(folder: Path) -> Records:
    got = ListSink()
    wal = WriteAheadLog(folder)
    try:
        wal.replay(got)
    finally:
        wal.close()
    return got.all


def test_what_the_log_replays_is_what_was_logged(tmp_path: Path) -> None:
    folder = tmp_path / "wal"
    original = records()
    wal = WriteAheadLog(folder, source="gateway:x")
    wal.append(original)
    name = wal.seal()
    wal.close()
    assert name is not None and [p.name for p in folder.iterdir()] == [name]
    got = replayed(folder)
    assert got.decisions == original.decisions and got.decisions[0].extra["agent_round"] == 7
    assert got.rewards == original.rewards
    assert got.rollouts == original.rollouts
    assert got.witnessed == original.witnessed
    # The payload travels as the JSON text the store keeps (ASCII escapes, surrogate too).
    (event,) = got.events
    assert json.loads(event.payload) == original.events[0].payload
    assert asdict(event) | {"payload": None} == asdict(original.events[0]) | {"payload": None}
    (q,) = got.quarantined
    assert (q.source, q.reason, q.raw) == ("gateway:x", "ro-1:0:x:0: bad", "{}")


def test_a_record_that_cannot_be_written_is_quarantined_with_its_ids(tmp_path: Path) -> None:
    out = records()
    poison = Decision.from_payload({**decision(2), "rollout_id": "ro-9"})
    poison.action.summary = "lone \ud800 surrogate"
    out.decisions.append(poison)
    wal = WriteAheadLog(tmp_path / "wal", source="gateway:x")
    wal.append(out)
    wal.close()
    assert [d.decision_id for d in out.decisions] == ["d-1"]
    bad = out.quarantined[-1]
    assert bad.reason.startswith("decision d-2 of rollout ro-9: cannot be stored as UTF-8 JSON")
    assert "surrogates not allowed" in bad.reason and "lone \\ud800 surrogate" in bad.raw
    bad.raw.encode("utf-8")  # storable
    assert [q.reason for q in replayed(tmp_path / "wal").quarantined] == \
        [q.reason for q in out.quarantined]


def test_the_log_is_private_whatever_the_umask(tmp_path: Path) -> None:
    folder = tmp_path / "wal"
    old = os.umask(0)
    try:
        wal = WriteAheadLog(folder)
        wal.append(records())
        name = wal.seal()
        wal.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert name is not None and stat.S_IMODE((folder / name).stat().st_mode) == 0o600


def test_committed_segments_are_dropped_in_order(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal")
    names = []
    for _ in range(3):
        wal.append(records())
        names.append(wal.seal())
    assert wal.seal() is None  # nothing open
    assert wal.drop_through("seg-unknown.ndjson") == 0
    assert wal.drop_through(str(names[1])) == 2
    assert wal.pending() == [names[2]] and wal.newest() == names[2]
    wal.close()


def test_what_a_crash_left_unsealed_is_replayed_up_to_its_last_synced_group(
        tmp_path: Path) -> None:
    folder = tmp_path / "wal"
    # A gateway process that syncs two groups, starts a third and dies (no seal, no atexit).
    subprocess.run([sys.executable, "-c", f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent.parent.parent)!r})
from tests.collectors.test_gateway_wal import records
from tractatus_watch.collectors.gateway_wal import WriteAheadLog
wal = WriteAheadLog({str(folder)!r})
first, second = records(), records()
second.decisions[0].decision_id = "d-2"
wal.append(first)
wal.append(second)
(tmp,) = wal.folder.glob(".seg-*.tmp")
with open(tmp, "ab") as fh:
    fh.write(b'{{"type":"decision","data":{{"decision_id":"d-3","agen')
os._exit(0)
"""], check=True, timeout=60)
    (tmp,) = folder.glob(".seg-*.tmp")
    got = replayed(folder)
    assert [d.decision_id for d in got.decisions] == ["d-1", "d-2"]
    assert len(got.quarantined) == 2  # the two logged quarantine records, not the torn line
    (published,) = folder.glob("seg-*.ndjson")
    assert published.name == tmp.name[1:-4] and not list(folder.glob(".seg-*"))
    assert published.read_bytes().endswith(b"\n")
    (folder / ".seg-00000000000000000001-1-000001.ndjson.tmp").write_bytes(b'{"type": "d')
    WriteAheadLog(folder).close()  # a segment torn in its first line holds nothing: dropped
    assert sorted(p.name for p in folder.iterdir()) == [published.name]


def test_where_the_log_lives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert wal_folder(parse_target(str(tmp_path / "w.duckdb")), "127.0.0.1", 8080) == \
        Path(f"{tmp_path / 'w.duckdb'}.gateway-wal")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    lake = parse_target("ducklake:postgres:dbname=a password=secret", data_path="/d")
    other = parse_target("ducklake:postgres:dbname=b", data_path="/d")
    here = wal_folder(lake, "127.0.0.1", 8080)
    assert here.parent == tmp_path / "state" / "tractatus-watch" / "gateway-wal"
    assert here.name.startswith("127.0.0.1:8080-") and "secret" not in str(here)
    assert wal_folder(other, "127.0.0.1", 8080) != here


# --- the tap with its log ---------------------------------------------------------------------

@pytest.fixture
def tap_with_log(tmp_path: Path, agl_key: str, fresh_agl_store: None) -> Iterator[
        tuple[GatewayTap, ListSink, Path]]:
    sink = ListSink()
    folder = tmp_path / "wal"
    tap = GatewayTap(sink, port=0, key=agl_key, wal_dir=folder, run_id="wal-run")
    tap.start()
    try:
        yield tap, sink, folder
    finally:
        tap.stop()


def durable_ids(folder: Path, sink: ListSink) -> set[str]:
    """Decision ids in the log or delivered. A record moves from the open segment to a sealed
    one to the sink (and only then is its segment dropped): looking in that order, a record
    that moves while we look is still seen."""
    ids = set()
    for pattern in (".seg-*.ndjson.tmp", "seg-*.ndjson"):
        for seg in folder.glob(pattern):
            try:
                lines = seg.read_bytes().split(b"\n")
            except FileNotFoundError:  # sealed or dropped meanwhile: seen further on
                continue
            for line in lines[:-1]:  # what follows the last newline is being written
                ids.add(json.loads(line)["data"].get("decision_id"))
    return ids | {d.decision_id for d in sink.all.decisions}


def test_every_acknowledged_decision_is_durable_when_the_answer_arrives(
        tap_with_log: tuple[GatewayTap, ListSink, Path], agl_key: str) -> None:
    tap, sink, folder = tap_with_log
    with httpx.Client(base_url=tap.url, headers={"x-api-key": agl_key}) as c:
        (r,) = c.post("/api/rollouts", json=[{"input": {}}]).json()
        for i in range(40):
            resp = c.post(f"/api/rollouts/{r['rollout_id']}/attempt/0/events",
                          json={"event_type": "tractatus.decision", "data": decision(i)})
            assert resp.status_code == 200
            assert f"d-{i}" in durable_ids(folder, sink), f"d-{i} not durable"


def test_reads_never_wait_and_an_unwritable_log_answers_503(
        tap_with_log: tuple[GatewayTap, ListSink, Path], agl_key: str) -> None:
    tap, sink, folder = tap_with_log
    lines: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lines.append  # type: ignore[method-assign]
    tap_log = logging.getLogger("tractatus_watch.collectors.gateway_tap")
    tap_log.addHandler(handler)
    try:
        with httpx.Client(base_url=tap.url, headers={"x-api-key": agl_key}) as c:
            (r,) = c.post("/api/rollouts", json=[{"input": {}}]).json()
            url = f"/api/rollouts/{r['rollout_id']}/attempt/0/events"
            assert c.post(url, json={"event_type": "tractatus.decision",
                                     "data": decision(0)}).status_code == 200
            # Disk trouble, for real: the log folder is replaced by a file, once its segment
            # is sealed and dropped (an open one would take writes on its deleted inode).
            wait_until(lambda: not list(folder.iterdir()))
            shutil.rmtree(folder)
            folder.write_text("not a folder")
            refused = [c.post(url, json={"event_type": "tractatus.decision",
                                         "data": decision(i)}) for i in (1, 2)]
            assert [x.status_code for x in refused] == [503, 503]
            assert "write-ahead log" in refused[0].json()["detail"]
            # Requests that changed nothing answer as ever, log or no log.
            assert c.get("/healthz").status_code == 200
            events = c.get(f"/api/rollouts/{r['rollout_id']}/events")
            assert events.status_code == 200 and len(events.json()) == 3
            folder.unlink()
            folder.mkdir(mode=0o700)
            assert c.post(url, json={"event_type": "tractatus.decision",
                                     "data": decision(3)}).status_code == 200
    finally:
        tap_log.removeHandler(handler)
    errors = [x.getMessage() for x in lines if x.levelno >= logging.ERROR]
    assert errors == ["gateway: cannot write the write-ahead log; answering 503 to requests "
                      "whose events are not durable"]
    assert tap.stats.not_durable == 2
    # What was refused may still be stored (Agent Lightning kept it); nothing is lost.
    wait_until(lambda: {d.decision_id for d in sink.all.decisions} >= {"d-0", "d-3"})


def test_a_record_the_normaliser_cannot_handle_is_quarantined_with_its_event_id(
        tap_with_log: tuple[GatewayTap, ListSink, Path]) -> None:
    tap, sink, _ = tap_with_log

    class Odd:  # an event without a timestamp
        event_type = "tool_call"
        data = {"k": 1}

    _Tee.emit(("event", "ro-7", "att-1", 3, Odd()))
    wait_until(lambda: bool(sink.all.quarantined))
    (q,) = sink.all.quarantined
    assert q.reason.startswith("ro-7:att-1:tool_call:3: cannot normalise: AttributeError")
    assert json.loads(q.raw) == {"k": 1} and q.source == tap.source


def test_a_restarted_tap_replays_what_the_store_had_not_committed(
        tmp_path: Path, agl_key: str, store: Any, writer: Any, q: Any,
        fresh_agl_store: None) -> None:
    folder = tmp_path / "wal"
    leftover = WriteAheadLog(folder, source="gateway:old")  # what a killed gateway left
    leftover.append(records())
    leftover.close()
    stop = threading.Event()
    tap = GatewayTap(ListSink(), port=0, key=agl_key, wal_dir=folder, run_id="r")
    thread = threading.Thread(target=tap.run, args=(writer_sink(writer, "r"), stop,
                                                    store.get_cursor))
    thread.start()
    try:
        wait_until(lambda: q("SELECT count(*) FROM decisions")[0][0] == 1)
        wait_until(lambda: not list(folder.glob("seg-*")))  # dropped once committed
    finally:
        stop.set()
        thread.join(30)
    writer.flush()
    assert q("SELECT decision_id, rollout_id, run_id FROM decisions") == [("d-1", "ro-1", "r")]
    assert q("SELECT count(*) FROM rewards")[0][0] == 1
    assert q("SELECT count(*) FROM events")[0][0] == 1
    assert q("SELECT count(*) FROM rollouts")[0][0] == 1
    assert q("SELECT reason FROM quarantine") == [("ro-1:0:x:0: bad",)]
    assert q("SELECT witness_id FROM witnessed") == [("ro-1:0:model_request:0#1",)]
    assert tap.stats.replayed == 6 and json.loads(store.get_cursor(tap.source))["replayed"] == 6


def wait_until(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
