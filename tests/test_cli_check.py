"""`tractatus-watch check` on real database files: exit codes and what it lists."""

from __future__ import annotations

import json
from pathlib import Path

from tractatus_watch.records.events import Decision, Reward
from tractatus_watch.storage.batch import Batch
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer

from .test_cli_storage import tw

NOW = 1_795_000_000.0


def decision(i: int, rnd: int, *, mode: str = "enforce", blocked: bool = False) -> Decision:
    enforced = mode == "enforce"
    return Decision.from_payload({
        "decision_id": f"d{i}", "agent_id": "agent-0", "round": rnd, "arm": "governed",
        "mode": mode, "action": {"kind": "informative"},
        "checks": [] if mode == "off" else [
            {"service": "BoundaryEnforcer", "rule_id": "CONTENT-CLICKBAIT", "enforced": enforced,
             "raw_verdict": "REQUIRE_HUMAN_DECISION" if blocked else "PROCEED"}],
        "executed": not (blocked and enforced), "ts": NOW + i,
    })


def make_db(path: Path, *, gap_in_coverage: bool) -> None:
    decisions = [decision(r * 10 + k, r, blocked=k == 0) for r in range(5) for k in range(10)]
    if gap_in_coverage:  # governance switched off for some actions of the last round
        decisions += [decision(100 + k, 4, mode="off") for k in range(3)]
    rewards = [Reward(f"rw{r}", f"ro{r}", "agent-0", r, "governed", 0.8, NOW + r)
               for r in range(5)]
    with Store.open(path) as store:
        writer = Writer(store)
        writer.submit(Batch.from_records(run_id="run-c", decisions=decisions, rewards=rewards))
        writer.close()


def test_check_passes_on_a_clean_run(tmp_path: Path) -> None:
    db = tmp_path / "clean.duckdb"
    make_db(db, gap_in_coverage=False)
    result = tw("check", db=db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: nothing firing")


def test_check_fails_and_lists_a_coverage_gap(tmp_path: Path) -> None:
    db = tmp_path / "gap.duckdb"
    make_db(db, gap_in_coverage=True)
    result = tw("check", "--format", "json", db=db)
    assert result.returncode == 1, result.stderr
    firing = [a for a in json.loads(result.stdout) if a["state"] == "firing"]
    assert [a["alertname"] for a in firing] == ["GovernanceCoverageBelow100"]
    assert firing[0]["labels"]["run_id"] == "run-c"
    assert abs(firing[0]["value"] - 10 / 13) < 1e-9
    with Store.open(db, read_only=True) as store:  # the state and its history are persisted
        rows = store.cursor().execute(
            "SELECT alertname, to_state FROM alert_events ORDER BY ts").fetchall()
    assert ("GovernanceCoverageBelow100", "firing") in rows


def test_check_refuses_a_broken_rules_file(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    make_db(db, gap_in_coverage=False)
    rules = tmp_path / "rules.toml"
    rules.write_text('[[groups]]\nname = "g"\n[[groups.rules]]\nalert = "X"\nfor = "3 parsecs"\n'
                     'expr = "SELECT 1 AS value"\n')
    result = tw("check", "--rules", str(rules), db=db)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {rules}: groups[0].rules[0].for: invalid duration "
                                     "'3 parsecs' (expected e.g. \"5m\", \"30s\" or \"3 rounds\")")
