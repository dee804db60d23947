"""Witnessed coverage on every surface: the report, `runs`, the alert rule and `check` show the
same figures, from one reconciliation (storage/witness_queries.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.sinks import DecisionList
from tractatus_watch.analysis.alerts.alert_rules import load_default_alert_rules
from tractatus_watch.analysis.alerts.engine import AlertEngine
from tractatus_watch.governance.governor import Governor
from tractatus_watch.monitor.report import build_report
from tractatus_watch.monitor.store_evaluator import evaluate_once
from tractatus_watch.records.witness import witnessed_actions
from tractatus_watch.storage.alert_store import DuckDBAlertStore
from tractatus_watch.storage.batch import Batch
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer

RUN = "witness-run"
CLI = [sys.executable, "-m", "tractatus_watch"]


def call(i: int) -> dict[str, Any]:
    args = {"headline": f"Item {i} on housing", "text": "With the report linked."}
    return {"id": f"c{i}", "type": "function",
            "function": {"name": "publish", "arguments": json.dumps(args)}}


def build(path: Path) -> None:
    """Governed arm: rounds 0-2, 4 calls a round; in round 2 the agent skips the Governor on
    one call. Ungoverned arm (shadow): 2 calls a round, all checked in shadow."""
    sink = DecisionList()
    witnessed = []
    govs = {arm: Governor(mode=mode, agent_id="agent-0", arm=arm, run_id=RUN, sink=sink)
            for arm, mode in (("governed", "enforce"), ("ungoverned", "shadow"))}
    for rnd in range(3):
        for arm, n in (("governed", 4), ("ungoverned", 2)):
            rid = f"{arm}-{rnd}"
            calls = [call(100 * rnd + i) for i in range(n)]
            data = {"response": {"choices": [{"index": 0, "message": {"tool_calls": calls}}]}}
            witnessed += witnessed_actions(data, event_id=f"{rid}:0:model_request:0",
                                           rollout_id=rid, position=0, ts=1_790_000_000.0 + rnd,
                                           run_id=RUN, agent_id="agent-0", arm=arm, round=rnd)
            for i, c in enumerate(calls):
                if arm == "governed" and rnd == 2 and i == 3:
                    continue  # executed without asking the Governor
                govs[arm].check({"kind": "publish", "summary": f"item {i}"}, round=rnd,
                                rollout_id=rid, tool_call=c)
    store = Store.open(path)
    writer = Writer(store)
    writer.submit(Batch.from_records(run_id=RUN, decisions=sink.decisions, witnessed=witnessed))
    writer.close()
    store.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("witness") / "w.duckdb"
    build(path)
    return path


def test_report_runs_and_alert_agree(db: Path) -> None:
    store = Store.open(db)
    try:
        con = store.cursor()
        report = build_report(con, RUN)
        gov, ungov = report.arms["governed"], report.arms["ungoverned"]
        assert (gov.coverage, gov.witnessed, gov.ungoverned_actions) == (1.0, 12, 1)
        assert gov.witnessed_coverage == 11 / 12 and gov.unwitnessed_decisions == 0
        # Shadow checks are not governance: the witness says so as SDK coverage does.
        assert (ungov.coverage, ungov.witnessed_coverage, ungov.ungoverned_actions) == \
            (0.0, 0.0, 0)
        (u,) = report.ungoverned
        assert (u["rollout_id"], u["agent_id"], u["arm"], u["round"], u["tool"], u["idx"]) == \
            ("governed-2", "agent-0", "governed", 2, "publish", 3)
        fired = []
        engine = AlertEngine(load_default_alert_rules(), DuckDBAlertStore(store),
                             notifiers=[])
        for t in evaluate_once(engine, con, runs=[RUN]):
            if t.to_state == "firing":
                fired.append((t.alertname, dict(t.labels).get("arm"), t.value))
        # The alarm judges the latest round (3 of 4 governed), not the run's 11/12.
        assert ("WitnessedCoverageBelow100", "governed", 0.75) in fired
        assert [f for f in fired if f[0] == "WitnessedCoverageBelow100"] == \
            [("WitnessedCoverageBelow100", "governed", 0.75)]
        con.close()
    finally:
        store.close()

    out = subprocess.run([*CLI, "report", "--db", str(db), "--run", RUN, "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    arms = json.loads(out.stdout)["arms"]
    assert arms["governed"]["coverage"] == 1.0
    assert arms["governed"]["witnessed_coverage"] == gov.witnessed_coverage
    assert json.loads(out.stdout)["ungoverned_actions"][0]["rollout_id"] == "governed-2"
    out = subprocess.run([*CLI, "runs", "--db", str(db), "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (run,) = json.loads(out.stdout)
    by_arm = {w["arm"]: w for w in run["witnessed"]}
    assert by_arm["governed"]["witnessed_coverage"] == gov.witnessed_coverage
    assert by_arm["governed"]["ungoverned"] == 1
    listed = subprocess.run([*CLI, "runs", "--db", str(db)], capture_output=True, text=True,
                            timeout=120, env=_wide()).stdout.splitlines()
    # The governing arm's witnessed coverage, the one the report shows.
    assert listed[0].split()[5] == "witnessed" and listed[2].split()[6] == "91.7%"
    table = subprocess.run([*CLI, "report", "--db", str(db), "--run", RUN],
                           capture_output=True, text=True, timeout=120, env=_wide())
    assert "Witnessed coverage (gateway)" in table.stdout and "91.7%" in table.stdout
    assert "round 2  governed/agent-0  publish  rollout governed-2 (call 3" in table.stdout


def test_check_fails_and_lists_the_witness_alert(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "c.duckdb"
    copy.write_bytes(db.read_bytes())
    out = subprocess.run([*CLI, "check", "--db", str(copy), "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    names = {(f["alertname"], f["labels"].get("arm")) for f in doc["firing"]}
    assert ("WitnessedCoverageBelow100", "governed") in names


def _wide() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200"}
