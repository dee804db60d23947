"""`tractatus-watch check` on real database files, as a CI gate: exit codes (0 nothing firing,
1 firing, 2 error), the JSON document, the listing, silences counted apart and --run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tractatus_watch.analysis.alerts.alert_rules import Matcher
from tractatus_watch.analysis.alerts.engine import Silence
from tractatus_watch.records.events import Decision, Reward
from tractatus_watch.storage.alert_store import DuckDBAlertStore
from tractatus_watch.storage.batch import Batch
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer

from .test_cli_storage import tw

NOW = 1_795_000_000.0
# A run id a console would read as markup and an emoji code if it were not printed verbatim.
ODD_RUN = "run-[bold]gap[/bold]-:x:-2026-11-18T11:06:40"


def decision(run: str, i: int, rnd: int, *, mode: str = "enforce",
             blocked: bool = False) -> Decision:
    enforced = mode == "enforce"
    return Decision.from_payload({
        "decision_id": f"{run}-d{i}", "agent_id": "agent-0", "round": rnd, "arm": "governed",
        "mode": mode, "action": {"kind": "informative"},
        "checks": [] if mode == "off" else [
            {"service": "BoundaryEnforcer", "rule_id": "CONTENT-CLICKBAIT", "enforced": enforced,
             "raw_verdict": "REQUIRE_HUMAN_DECISION" if blocked else "PROCEED"}],
        "executed": not (blocked and enforced), "ts": NOW + i,
    })


def add_run(path: Path, run: str, *, gap_in_coverage: bool) -> None:
    decisions = [decision(run, r * 10 + k, r, blocked=k == 0) for r in range(5)
                 for k in range(10)]
    if gap_in_coverage:  # governance switched off for some actions of the last round
        decisions += [decision(run, 100 + k, 4, mode="off") for k in range(3)]
    rewards = [Reward(f"{run}-rw{r}", f"{run}-ro{r}", "agent-0", r, "governed", 0.8, NOW + r)
               for r in range(5)]
    with Store.open(path) as store:
        writer = Writer(store)
        writer.submit(Batch.from_records(run_id=run, decisions=decisions, rewards=rewards))
        writer.close()


def make_db(path: Path, *, gap_in_coverage: bool) -> None:
    add_run(path, "run-c", gap_in_coverage=gap_in_coverage)


def check_json(db: Path, *args: str) -> tuple[int, dict]:
    result = tw("check", "--format", "json", *args, db=db)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_check_passes_on_a_clean_run(tmp_path: Path) -> None:
    db = tmp_path / "clean.duckdb"
    make_db(db, gap_in_coverage=False)
    result = tw("check", db=db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: nothing firing (8 rules, 1 run(s))")
    code, doc = check_json(db)
    assert code == 0
    assert doc == {"status": "ok", "exit_code": 0, "runs": ["run-c"], "rules": 8,
                   "firing": [], "silenced": 0, "pending": 0}


def test_check_fails_and_lists_a_coverage_gap(tmp_path: Path) -> None:
    db = tmp_path / "gap.duckdb"
    make_db(db, gap_in_coverage=True)
    code, doc = check_json(db)
    assert code == 1
    assert (doc["status"], doc["exit_code"], doc["runs"], doc["silenced"]) == (
        "firing", 1, ["run-c"], 0)
    assert [a["alertname"] for a in doc["firing"]] == ["GovernanceCoverageBelow100"]
    alert = doc["firing"][0]
    assert alert["run_id"] == "run-c" and alert["severity"] == "critical"
    assert alert["labels"] == {"alertname": "GovernanceCoverageBelow100", "arm": "governed",
                               "run_id": "run-c", "severity": "critical"}
    assert abs(alert["value"] - 10 / 13) < 1e-9
    assert alert["summary"] == "Governance coverage 76.92% in run run-c, arm governed"
    assert alert["fired_at"].endswith("Z") and alert["inhibited"] is False
    assert set(alert) == {"alertname", "severity", "run_id", "labels", "value", "active_since",
                          "fired_at", "inhibited", "summary", "annotations"}
    with Store.open(db, read_only=True) as store:  # the state and its history are persisted
        rows = store.cursor().execute(
            "SELECT alertname, to_state FROM alert_events ORDER BY ts").fetchall()
    assert ("GovernanceCoverageBelow100", "firing") in rows


def test_check_lists_firing_alerts_verbatim_with_labels_and_value(tmp_path: Path) -> None:
    db = tmp_path / "odd.duckdb"
    add_run(db, ODD_RUN, gap_in_coverage=True)
    result = tw("check", db=db, env={"COLUMNS": "80"})
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1 alert(s) firing:"
    # One line per alert, whole at any width, the run id's markup and emoji code as typed.
    assert lines[1].startswith(
        f'GovernanceCoverageBelow100{{arm="governed", run_id="{ODD_RUN}", '
        'severity="critical"} value=0.7692 since ')
    assert lines[1].endswith(" UTC")
    assert lines[2] == f"  Governance coverage 76.92% in run {ODD_RUN}, arm governed"
    assert len(lines) == 3


def test_silenced_alerts_are_counted_apart_and_do_not_fail(tmp_path: Path) -> None:
    db = tmp_path / "silenced.duckdb"
    make_db(db, gap_in_coverage=True)
    with Store.open(db) as store:
        DuckDBAlertStore(store).add_silence(Silence(
            "s1", (Matcher("alertname", "GovernanceCoverageBelow100"),),
            starts_at=0.0, ends_at=4_000_000_000.0, comment="known gap"))
    code, doc = check_json(db)
    assert code == 0
    assert (doc["status"], doc["firing"], doc["silenced"]) == ("ok", [], 1)
    table = tw("check", db=db)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines() == ["ok: nothing firing (8 rules, 1 run(s))",
                                         "1 firing alert(s) silenced (not counted)"]


def test_run_restricts_the_check_to_one_run(tmp_path: Path) -> None:
    db = tmp_path / "two.duckdb"
    add_run(db, "run-gap", gap_in_coverage=True)
    add_run(db, "run-clean", gap_in_coverage=False)
    code, doc = check_json(db)
    assert code == 1 and sorted(doc["runs"]) == ["run-clean", "run-gap"]
    code, doc = check_json(db, "--run", "run-clean")
    assert (code, doc["runs"], doc["firing"]) == (0, ["run-clean"], [])
    code, doc = check_json(db, "--run", "run-gap")
    assert code == 1 and doc["runs"] == ["run-gap"]
    assert [(a["alertname"], a["run_id"]) for a in doc["firing"]] == [
        ("GovernanceCoverageBelow100", "run-gap")]


@pytest.mark.parametrize("args, message", [
    (["--run", "nosuch"], "error: no run 'nosuch'; runs: run-c"),
    (["--format", "yaml"], "error: --format: unknown format 'yaml'; use table or json"),
])
def test_bad_input_is_exit_2_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    db = tmp_path / "c.duckdb"
    make_db(db, gap_in_coverage=True)  # would exit 1 if it were evaluated
    result = tw("check", *args, db=db)
    assert result.returncode == 2
    assert result.stderr.strip() == message and result.stdout == ""


def test_a_missing_database_is_an_error_not_a_pass(tmp_path: Path) -> None:
    missing = tmp_path / "typo.duckdb"
    result = tw("check", db=missing)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: no database at {missing}: nothing to check")
    assert list(tmp_path.iterdir()) == []  # nothing created


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


def test_help_documents_the_gate() -> None:
    result = tw("check", "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "exit 0 nothing firing, 1 firing, 2 error" in text
    assert "Exit codes: 0 nothing firing" in text
    assert "silenced (how many firing alerts a silence holds back" in text
