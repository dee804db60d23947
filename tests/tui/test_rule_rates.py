"""Per-rule denominators: a rule evaluated on N actions that fires on k has rate k/N in the
Rules view and in `report`; where the rules evaluated are unknown (audit logs) the rate is
unknown, never 100%."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tractatus_watch.collectors.audit import decision_from_audit
from tractatus_watch.governance.governor import Governor
from tractatus_watch.governance.services.base import CustomRule
from tractatus_watch.records.events import Decision
from tractatus_watch.records.rulesets import RuleSetInfo
from tractatus_watch.storage.batch import Batch
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer
from tractatus_watch.tui.app import Dashboard
from tractatus_watch.tui.table import Table

from support import truth
from .helpers import settle

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

N, K = 40, 7  # actions, and the ones rule BAD-001 blocks: 0 < K < N
RUN = "rates"


def _bad(action: Any, context: Any) -> tuple[str, str, str] | None:
    return ("BLOCK", "says bad", "BAD-001") if "bad" in action.text else None


def _never(action: Any, context: Any) -> None:
    return None


def _governor(mode: str) -> Governor:
    # Each callable names its rule, so the Governor records the rule set of every check.
    _bad.rule_id = "BAD-001"  # type: ignore[attr-defined]
    _never.rule_id = "NEVER-001"  # type: ignore[attr-defined]
    return Governor([CustomRule(_bad, name="BadWords"), CustomRule(_never, name="Quiet")],
                    mode=mode, run_id=RUN, rollout_id=f"ro-{mode}")  # type: ignore[arg-type]


def _decisions() -> list[Decision]:
    out = []
    for mode in ("enforce", "shadow"):
        gov = _governor(mode)
        for i in range(N):
            text = "bad words" if i % 5 == 0 and i // 5 < K else "fine words"
            d = gov.check({"kind": "publish", "text": f"{text} {i}"}, round=i // 10)
            # Through the wire format, as a collector receives it.
            out.append(Decision.from_payload(json.loads(json.dumps(d.to_payload()))))
    return out


def _store(path: Path, decisions: list[Decision]) -> None:
    with Store.open(path) as store:
        writer = Writer(store)
        writer.submit(Batch.from_records(decisions=decisions))
        writer.close()


def _tw(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRACTATUS_WATCH_STORE": str(db)}
    return subprocess.run([sys.executable, "-m", "tractatus_watch", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_rules_evaluated_travel_with_the_decisions() -> None:
    decisions = _decisions()
    first = decisions[0]
    assert {c.service for c in first.checks} == {"BadWords", "Quiet"}
    assert all(c.ruleset for d in decisions for c in d.checks)
    # Announced with the first decision of each rollout, not repeated on every decision.
    assert sorted(r.service for r in first.rulesets) == ["BadWords", "Quiet"]
    assert decisions[1].rulesets == []
    bad = next(r for r in first.rulesets if r.service == "BadWords")
    assert bad == RuleSetInfo.of("BadWords", ["BAD-001"])
    assert first.checks[0].ruleset == bad.version


async def test_rate_is_fires_over_evaluations_in_rules_view_and_report(tmp_path: Path) -> None:
    db = tmp_path / "rates.duckdb"
    _store(db, _decisions())
    with Store.open(db, read_only=True) as store:
        con = store.cursor()
        raw = truth.rules(con, RUN)
        con.close()
        assert raw[("governed", "BadWords", "BAD-001")] == truth.RuleTruth(
            "governed", "BadWords", "BAD-001", N, K, K, 0)
        assert raw[("ungoverned", "BadWords", "BAD-001")] == truth.RuleTruth(
            "ungoverned", "BadWords", "BAD-001", N, K, 0, K)
        assert raw[("governed", "Quiet", "NEVER-001")].evaluations == N
        app = Dashboard(store, clock=lambda: 0.0, view="rules")
        async with app.run_test(size=(200, 40)) as pilot:
            await settle(pilot)
            table = app.query_one("#rules-table", Table)
            shown = {(str(r[0]), str(r[2])): [str(c) for c in r] for r in
                     (table.get_row_at(i) for i in range(table.row_count))}
    rate = f"{K / N * 100:.2f}%"
    assert shown[("governed", "BAD-001")][3:8] == [str(N), str(K), str(K), "0", rate]
    assert shown[("ungoverned", "BAD-001")][3:8] == [str(N), str(K), "0", str(K), rate]
    assert shown[("governed", "NEVER-001")][3:8] == [str(N), "0", "0", "0", "0.00%"]
    # The latest reason (fetched in the background lane): the block's, none for a quiet rule.
    assert shown[("governed", "BAD-001")][-1] == "says bad"
    assert shown[("governed", "NEVER-001")][-2:] == ["–", ""]

    result = _tw("report", "--run", RUN, "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    gov = {r["rule_id"]: r for r in doc["arms"]["governed"]["rules"]}
    ung = {r["rule_id"]: r for r in doc["arms"]["ungoverned"]["rules"]}
    assert {k: gov["BAD-001"][k] for k in ("evaluations", "fires", "blocks", "block_rate")} == {
        "evaluations": N, "fires": K, "blocks": K, "block_rate": K / N}
    # A shadow arm's verdicts would have blocked: its block rate is 0, its would-block rate k/N.
    assert (ung["BAD-001"]["blocks"], ung["BAD-001"]["block_rate"],
            ung["BAD-001"]["would_have_blocked"], ung["BAD-001"]["would_block_rate"]) == (
        0, 0.0, K, K / N)
    assert gov["NEVER-001"]["evaluations"] == N and gov["NEVER-001"]["block_rate"] == 0.0
    assert doc["arms"]["ungoverned"]["blocked"] == 0
    assert doc["arms"]["ungoverned"]["would_have_blocked"] == K


AUDIT = [{"_id": {"$oid": f"65f1a00000000000000000{i:02d}"}, "sessionId": "agent-1",
          "action": "boundary_enforcement", "allowed": False, "service": "BoundaryEnforcer",
          "violations": [{"ruleId": "inst_017", "ruleText": "no absolute assurances",
                          "severity": "HIGH"}], "metadata": {"boundary": "VALUES"},
          "timestamp": {"$date": f"2025-10-01T10:00:{i:02d}.000Z"}} for i in range(3)]


async def test_audit_logs_give_unknown_rates_never_100_percent(tmp_path: Path) -> None:
    db = tmp_path / "audit.duckdb"
    decisions = [decision_from_audit(doc) for doc in AUDIT]
    run = decisions[0].run_id or "audit"
    for d in decisions:
        d.run_id = run
    _store(db, decisions)
    result = _tw("report", "--run", run, "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    rules = [r for arm in json.loads(result.stdout)["arms"].values() for r in arm["rules"]]
    inst = [r for r in rules if r["rule_id"] == "inst_017"]
    assert inst and all(r["fires"] == 3 and r["evaluations"] is None
                        and r["block_rate"] is None for r in inst)
    with Store.open(db, read_only=True) as store:
        app = Dashboard(store, clock=lambda: 0.0, view="rules")
        async with app.run_test(size=(200, 40)) as pilot:
            await settle(pilot)
            table = app.query_one("#rules-table", Table)
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
    row = next(r for r in rows if r[2] == "inst_017")
    assert row[3] == "?" and row[7] == "?"


def test_the_dashboards_rate_columns_are_metrics_rule_rate() -> None:
    """The Overview's and Rules view's per-round rates are computed as polars columns; they
    equal analysis/metrics.rule_rate row by row (unknown and zero evaluations included)."""
    import polars as pl

    from tractatus_watch.analysis import metrics as M
    from tractatus_watch.tui import data as D

    frame = pl.DataFrame({
        "arm": ["governed"] * 5 + ["ungoverned"] * 2,
        "service": ["S"] * 7, "rule_id": ["B", "A", "A", "A", "B", "A", "A"],
        "round": [0, 2, 0, 1, 1, 0, 1], "fires": [1, 2, 3, 0, 0, 1, 1],
        "blocks": [1, 2, 0, 0, None, 0, 0], "would_have_blocked": [0, 0, 3, 0, 0, 1, None],
        "evaluations": [4, 8, None, 0, 5, 9, 3]},
        schema_overrides={"round": pl.Int32})
    expected = {k: [rate for _, rate in v if rate is not None]
                for k, v in M.rule_trend(frame.iter_rows(named=True)).items()}
    assert {(a, s, r): t for a, s, r, t in D.rule_trend(frame).iter_rows()} == expected
    trends = {t.rule_id: t for t in D.rule_trends(frame, "governed")}
    assert trends["A"].evaluations is None and trends["A"].blocks == 5  # unknown in round 0
    assert trends["A"].rates == (M.rule_rate(2, 0, 8),)  # rounds 0 (unknown), 1 (0 evals) left out
    assert (trends["B"].evaluations, trends["B"].blocks) == (9, 1)
    assert trends["B"].rates == (0.25, 0.0)
