"""The spool writer: segment names, rotation by size and age, no partial files, line format."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from tractatus_watch.records.events import Action, Check, Decision, Reward
from tractatus_watch.governance.governor import Governor
from tractatus_watch.governance.spool_writer import SpoolWriter
from tractatus_watch.records.spool_format import SEGMENT_GLOB

NAME = re.compile(r"^seg-(\d{20})-(\d+)-(\d{6})\.ndjson$")


def decision(i: int) -> Decision:
    return Decision(
        decision_id=f"d-{i}", agent_id="agent-1", round=i, arm="governed", mode="enforce",
        action=Action(kind="publish", summary="s", digest="sha256:00"),
        checks=[Check(service="BoundaryEnforcer", verdict="block",
                      raw_verdict="REQUIRE_HUMAN_DECISION", rule_id="CONTENT-CLICKBAIT",
                      boundary="VALUES", severity="HIGH")],
        verdict="block", executed=False, latency_us=120, ts=1795664672.5, rollout_id="ro-1",
    )


def read_spool(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob(SEGMENT_GLOB))
            for line in f.read_text(encoding="utf-8").splitlines()]


def test_line_format_and_segment_name(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path)
    w.emit_decision(decision(1))
    w.emit_reward(Reward(reward_id="ro-1:0", rollout_id="ro-1", agent_id="agent-1", round=1,
                         arm="governed", value=0.89, ts=1795664673.0, run_id="run-1"))
    w.write_rollout({"rollout_id": "ro-1", "status": "succeeded", "ts": 1795664674.0})
    w.write_event("ro-1:7", "tractatus.note", {"text": "é"}, ts=1795664675.0, rollout_id="ro-1",
                  run_id="run-1")
    assert list(tmp_path.glob(SEGMENT_GLOB)) == []  # still open: hidden under its temp name
    w.close()
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    m = NAME.match(files[0].name)
    assert m is not None and int(m.group(2)) == os.getpid() and m.group(3) == "000001"
    records = read_spool(tmp_path)
    assert [r["type"] for r in records] == ["decision", "reward", "rollout", "event"]
    assert Decision.from_payload(records[0]["data"]).to_payload() == decision(1).to_payload()
    assert records[1]["data"] == {"reward_id": "ro-1:0", "rollout_id": "ro-1",
                                  "agent_id": "agent-1", "round": 1, "arm": "governed",
                                  "value": 0.89,
                                  "ts": 1795664673.0, "run_id": "run-1"}
    assert records[2]["data"]["status"] == "succeeded"
    assert records[3]["data"] == {"event_id": "ro-1:7", "event_type": "tractatus.note",
                                  "ts": 1795664675.0, "rollout_id": "ro-1",
                                  "payload": {"text": "é"}, "run_id": "run-1"}
    assert files[0].read_bytes().endswith(b"\n")
    with pytest.raises(RuntimeError):
        w.write("decision", {})
    with pytest.raises(ValueError, match="unknown record type"):
        SpoolWriter(tmp_path / "x").write("metric", {})


def test_rotation_by_size_keeps_order(tmp_path: Path) -> None:
    with SpoolWriter(tmp_path, max_bytes=2000, max_age_s=60) as w:
        for i in range(60):
            w.emit_decision(decision(i))
    names = sorted(p.name for p in tmp_path.glob(SEGMENT_GLOB))
    assert len(names) > 5
    seqs = [int(NAME.match(n).group(3)) for n in names]  # type: ignore[union-attr]
    assert seqs == list(range(1, len(names) + 1))  # name order is write order
    line = len(json.dumps({"type": "decision", "data": decision(10).to_payload()},
                          separators=(",", ":"))) + 1
    assert all((tmp_path / n).stat().st_size < 2000 + line for n in names)
    assert [r["data"]["decision_id"] for r in read_spool(tmp_path)] == [f"d-{i}" for i in range(60)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_rotation_by_age_without_further_writes(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path, max_age_s=0.2)
    try:
        w.emit_decision(decision(1))
        assert list(tmp_path.glob(SEGMENT_GLOB)) == []
        deadline = time.monotonic() + 5
        while not list(tmp_path.glob(SEGMENT_GLOB)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [r["data"]["decision_id"] for r in read_spool(tmp_path)] == ["d-1"]
        w.emit_decision(decision(2))  # a new segment
        w.rotate()
        assert len(list(tmp_path.glob(SEGMENT_GLOB))) == 2
    finally:
        w.close()


def test_concurrent_writers_and_a_reader_never_see_partial_files(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path, max_bytes=4096, max_age_s=0.05)
    stop = threading.Event()
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            for f in tmp_path.glob(SEGMENT_GLOB):
                data = f.read_bytes()
                if not data.endswith(b"\n"):
                    problems.append(f"{f.name}: no final newline")
                for line in data.splitlines():
                    try:
                        json.loads(line)
                    except ValueError:
                        problems.append(f"{f.name}: partial line")

    def writer(k: int) -> None:
        for i in range(250):
            w.emit_decision(decision(k * 1000 + i))

    r = threading.Thread(target=reader)
    r.start()
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    w.close()
    stop.set()
    r.join()
    assert problems == []
    ids = [rec["data"]["decision_id"] for rec in read_spool(tmp_path)]
    assert len(ids) == 1000 and len(set(ids)) == 1000
    for k in range(4):  # each thread's records stay in its order across segments
        mine = [int(i[2:]) for i in ids if int(i[2:]) // 1000 == k]
        assert mine == sorted(mine)


def test_governor_spool_sink(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path)
    gov = Governor([lambda a, c: "BLOCK" if "trick" in a.text else None], sink=w, run_id="run-1")
    d1 = gov.check({"kind": "publish", "text": "one weird trick"}, round=1, rollout_id="ro")
    d2 = gov.check({"kind": "publish", "text": "a report"}, round=1, rollout_id="ro")
    gov.reward(0.5, round=1, rollout_id="ro")
    gov.close()
    records = read_spool(tmp_path)
    assert [r["type"] for r in records] == ["decision", "decision", "reward"]
    assert [r["data"]["executed"] for r in records[:2]] == [d1.executed, d2.executed] == [
        False, True]
    assert records[2]["data"]["reward_id"] == f"ro:{gov.instance_id}:0"


def test_line_breaks_inside_strings_are_escaped_and_surrogates_survive(tmp_path: Path) -> None:
    text = "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\x1dh\x1ei\rj\nk é"
    with SpoolWriter(tmp_path, fsync=False) as w:
        w.write_event("e-1", "note", {"text": text}, ts=1.0)
        w.write_event("e-2", "note", {"text": "lone \ud800 surrogate é"}, ts=2.0)
    (seg,) = tmp_path.glob(SEGMENT_GLOB)
    data = seg.read_bytes()
    # b"\n" ends each record and nothing else breaks a line, for any splitter.
    assert data.count(b"\n") == 2 and data.endswith(b"\n")
    assert len(data.decode("utf-8").splitlines()) == 2
    assert "é".encode() in data  # still UTF-8, not all-ASCII
    first, second = (json.loads(x) for x in data.split(b"\n")[:2])
    assert first["data"]["payload"] == {"text": text}
    assert second["data"]["payload"] == {"text": "lone \ud800 surrogate é"}


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o777])
def test_files_are_0600_and_created_folders_0700_whatever_the_umask(tmp_path: Path,
                                                                    umask: int) -> None:
    folder = tmp_path / "deep" / "spool"
    old = os.umask(umask)
    try:
        w = SpoolWriter(folder, fsync=False, max_age_s=60)
        w.write("event", {"event_id": "e"})
        (tmp,) = folder.glob(".seg-*.tmp")  # still open, under its temporary name
        tmp_mode = tmp.stat().st_mode & 0o777
        w.close()
    finally:
        os.umask(old)
    assert tmp_mode == 0o600
    (seg,) = folder.glob(SEGMENT_GLOB)
    assert seg.stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "deep").stat().st_mode & 0o777 == 0o700


def test_modes_can_be_chosen_and_an_existing_folder_is_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    with SpoolWriter(shared, fsync=False, mode=0o640) as w:
        w.write("event", {"event_id": "e"})
    (seg,) = shared.glob(SEGMENT_GLOB)
    assert seg.stat().st_mode & 0o777 == 0o640
    assert shared.stat().st_mode & 0o777 == 0o755
    SpoolWriter(tmp_path / "group", fsync=False, dir_mode=0o750).close()
    assert (tmp_path / "group").stat().st_mode & 0o777 == 0o750
