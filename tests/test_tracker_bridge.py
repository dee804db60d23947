"""Governance curves in the trainers' trackers: the per-round scalars read back with TensorBoard's
own reader (EventAccumulator) and from a W&B offline run's files equal the store's figures
(storage/queries per_round, rule_counts by round, reward_gap) for every round, each once."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from support.bridge_spool import new_spool, write_round
from support.demo_runs import DEMO2, demo_env, demo_run, shared_root
from tractatus_watch.collectors.spool_reader import SpoolReader
from tractatus_watch.monitor.session import CollectionSession
from tractatus_watch.monitor.tracker_bridge import TensorBoardBridge, WandbBridge
from tractatus_watch.storage import queries as Q
from tractatus_watch.storage.store import Store

Scalars = dict[str, dict[int, float]]  # tag -> step -> value


def expected(con: Any, run_id: str) -> Scalars:
    """The store's per-round figures, straight from the queries (the test's own reading of
    the definitions: coverage = covered / actions, a rule's rate = (blocks + would have
    blocked) / evaluations, the gap = governed - ungoverned mean reward)."""
    out: Scalars = {}

    def put(tag: str, step: int, value: Any) -> None:
        if value is not None and math.isfinite(value):
            out.setdefault(tag, {})[step] = float(value)

    for r in Q.per_round(con, run_id).iter_rows(named=True):
        g, s = f"governance/{r['arm']}/", int(r["round"])
        put(g + "coverage", s, r["covered"] / r["actions"] if r["actions"] else None)
        for name in ("actions", "blocked", "would_have_blocked", "escaped", "evasions"):
            put(g + name, s, r[name])
        put(g + "overhead/latency_us_per_action", s, r["latency_us_mean"])
    for r in Q.rule_counts(con, run_id, by_round=True).iter_rows(named=True):
        if r["evaluations"]:
            put(f"governance/{r['arm']}/block_rate/{r['service']}/{r['rule_id']}",
                int(r["round"]), (r["blocks"] + r["would_have_blocked"]) / r["evaluations"])
    for r in Q.reward_gap(con, run_id).iter_rows(named=True):
        put("governance/gap", int(r["round"]), r["gap"])
    return out


def read_tensorboard(folder: Path) -> tuple[Scalars, Counter[tuple[str, int]]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    got: Scalars = {}
    seen: Counter[tuple[str, int]] = Counter()
    for tag in acc.Tags()["scalars"]:
        for event in acc.Scalars(tag):
            got.setdefault(tag, {})[event.step] = event.value
            seen[(tag, event.step)] += 1
    return got, seen


def assert_same(got: Scalars, want: Scalars, rel: float = 1e-6) -> None:
    assert sorted(got) == sorted(want)
    for tag, steps in want.items():
        assert sorted(got[tag]) == sorted(steps), tag
        for step, value in steps.items():
            assert got[tag][step] == pytest.approx(value, rel=rel, abs=1e-9), (tag, step)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = demo_run(shared_root(tmp_path_factory), *DEMO2)
    return run.db, str(run.doc["run_id"])


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tractatus_watch", *args], cwd=cwd,
                          env=demo_env(), capture_output=True, text=True, timeout=120)


def test_export_tensorboard_holds_the_stored_rounds(demo: tuple[Path, str],
                                                    tmp_path: Path) -> None:
    db, run_id = demo
    result = cli("export", "--tensorboard", str(tmp_path / "tb"), "--run", run_id,
                 "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "tb" / run_id
    assert result.stderr.strip() == (f"exported 5 rounds of run {run_id} to {folder} "
                                     "(TensorBoard event files)")
    files = list(folder.iterdir())
    assert files and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    got, seen = read_tensorboard(folder)
    assert max(seen.values()) == 1  # no step written twice
    store = Store.open(db, read_only=True)
    try:
        want = expected(store.cursor(), run_id)
    finally:
        store.close()
    rounds = {s for steps in want.values() for s in steps}
    assert len(rounds) >= 3 and any("/block_rate/" in t for t in want)
    assert any(v > 0 for v in want["governance/ungoverned/escaped"].values())
    assert_same(got, want)

    # A second export into the same folder would repeat every step: refused, in one line.
    again = cli("export", "--tensorboard", str(tmp_path / "tb"), "--run", run_id,
                "--db", str(db), cwd=tmp_path)
    assert again.returncode == 2 and "already holds event files" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (("--run", "no-such-run"), "no run 'no-such-run'"),
    (("--run", "x", "--table", "decisions"), "drop --table"),
])
def test_export_tensorboard_errors_are_one_line(demo: tuple[Path, str], tmp_path: Path,
                                                args: tuple[str, ...], message: str) -> None:
    result = cli("export", "--tensorboard", str(tmp_path / "tb"), *args, "--db", str(demo[0]),
                 cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "tb").exists()


def test_export_without_table_or_tensorboard_is_one_line(demo: tuple[Path, str],
                                                         tmp_path: Path) -> None:
    result = cli("export", "--run", demo[1], "--db", str(demo[0]), cwd=tmp_path)
    assert result.returncode == 2 and "Missing option '--table'" in result.stderr
    assert "--tensorboard DIR --run RUN" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- W&B offline files: the transaction log of wandb-core (a LevelDB-style log of protobuf
# Records; wandb 0.31 ships no Python reader of its own), decoded with wandb's own protos.

def wandb_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, records, partial = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header: padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        if length == 0 and kind == 0:
            break
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        partial = chunk if kind in (1, 2) else partial + chunk
        if kind in (1, 4):  # FULL, LAST
            rec = pb.Record()
            rec.ParseFromString(partial)
            records.append(rec)
    return records


def read_wandb(path: Path) -> tuple[Scalars, Counter[tuple[str, int]], Any]:
    got: Scalars = {}
    seen: Counter[tuple[str, int]] = Counter()
    run = None
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run = rec.run
        elif kind == "history":
            step = rec.history.step.num
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                if key.startswith("governance/"):
                    got.setdefault(key, {})[step] = json.loads(item.value_json)
                    seen[(key, step)] += 1
    return got, seen, run


def test_live_session_writes_complete_rounds_to_tensorboard_and_wandb(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_id = "live-tracker-run"
    spool = new_spool(tmp_path / "spool")
    store = Store.open(tmp_path / "live.duckdb")
    tb = TensorBoardBridge(tmp_path / "tb", interval_s=0.1)
    wb = WandbBridge("tractatus-test", interval_s=0.1)
    session = CollectionSession(store, [SpoolReader(tmp_path / "spool", settle_s=0.1,
                                                    poll_s=0.05)],
                                run_id=run_id, bridges=[tb, wb]).start()
    folder = tmp_path / "tb" / run_id
    try:
        write_round(spool, 0, 10)
        write_round(spool, 1, 8)
        # Round 0 is complete once round 1 has data: written while the session runs; round
        # 1 is not (more of it may come).
        deadline = time.monotonic() + 30
        while True:
            got, _ = read_tensorboard(folder) if folder.exists() else ({}, Counter())
            tags = ("governance/governed/actions", "governance/ungoverned/actions",
                    "governance/gap")
            steps = [set(got.get(tag, {})) for tag in tags]
            if all(0 in s for s in steps) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert steps == [{0}, {0}, {0}]
        write_round(spool, 2, 12)
        con = store.cursor()
        deadline = time.monotonic() + 30
        while Q.totals(con, run_id)["actions"].sum() < 2 * (10 + 8 + 12):  # all stored
            assert time.monotonic() < deadline, "the spool was not collected in time"
            time.sleep(0.05)
    finally:
        session.close()  # the last poll writes the rounds left
    want = expected(con, run_id)
    assert sorted(want["governance/governed/actions"]) == [0, 1, 2]
    assert any(v > 0 for v in want["governance/governed/evasions"].values())
    assert any("/block_rate/Auditor/AUD-1" in t for t in want)

    got, seen = read_tensorboard(folder)
    assert max(seen.values()) == 1  # every (tag, round) once: watermarks hold
    assert_same(got, want)

    files = list((tmp_path / "wandb-dir").glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    got_wb, seen_wb, run = read_wandb(files[0])
    assert run is not None and run.display_name == run_id and run.run_id == run_id
    assert run.project == "tractatus-test"
    assert max(seen_wb.values()) == 1
    assert_same(got_wb, want)
    assert "WANDB_API_KEY" not in os.environ
