"""One truth for every number: for demo runs (`showcase` shortened, `multiagent`), every figure of
the header, the views, `runs --format json`, `report --format json`, `demo --format json` and
`check` equals the figure computed here from the raw tables by the README's definitions
(tests/support/truth.py reads decisions, checks and rulesets only, never the rollups)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from tractatus_watch.storage.store import Store
from tractatus_watch.tui import fmt
from tractatus_watch.tui.app import Dashboard
from tractatus_watch.tui.table import Table

from support import truth

from .helpers import settle

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DEMOS = {
    "showcase": ("--scenario", "showcase", "--rounds", "12", "--agents", "2"),
    "multiagent": ("--scenario", "multiagent", "--rounds", "8"),
}


def tw(*args: str, db: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACTATUS_WATCH", "AGL_"))}
    env["TRACTATUS_WATCH_STORE"] = str(db)
    return subprocess.run([sys.executable, "-m", "tractatus_watch", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _demo(folder: Path, args: tuple[str, ...]) -> tuple[Path, dict[str, Any]]:
    folder.mkdir()
    db = folder / "demo.duckdb"
    result = tw("demo", "--headless", "--format", "json", "--speed", "max", "--seed", "3",
                *args, db=db)
    assert result.returncode == 0, result.stderr[-2000:]
    return db, json.loads(result.stdout)


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("consistency")
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores: one demo process each
        futures = {name: pool.submit(_demo, tmp / name, args) for name, args in DEMOS.items()}
        return {name: f.result() for name, f in futures.items()}


def _rows(app: Any, table_id: str) -> list[list[str]]:
    table = app.query_one(f"#{table_id}", Table)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def _raw(db: Path) -> tuple[str, dict[str, truth.ArmTruth], dict[Any, truth.RuleTruth],
                            dict[str, Any]]:
    with Store.open(db, read_only=True) as store:
        con = store.cursor()
        run = con.execute("SELECT run_id FROM runs").fetchall()
        assert len(run) == 1
        run_id = run[0][0]
        extra = {
            "rounds": con.execute("SELECT max(round) + 1 FROM decisions").fetchall()[0][0],
            "agents": con.execute("SELECT arm, agent_id, count(*), count_if(covered), "
                                  "count_if(attempted AND NOT executed), "
                                  "count_if(attempted AND executed), count_if(evasion) "
                                  "FROM decisions GROUP BY ALL").fetchall(),
            "latency": con.execute("SELECT arm, quantile_cont(latency_us, 0.5), "
                                   "quantile_cont(latency_us, 0.99), avg(latency_us) "
                                   "FROM decisions GROUP BY arm").fetchall(),
            "escaped_last_round": dict(con.execute("""
                SELECT arm, count_if(attempted AND executed) FROM decisions
                WHERE round = (SELECT max(round) FROM decisions) GROUP BY arm""").fetchall()),
            "firing": con.execute("SELECT alertname, labels, value FROM alerts "
                                  "WHERE state = 'firing'").fetchall(),
        }
        arms, rules = truth.arms(con, run_id), truth.rules(con, run_id)
        con.close()
    return run_id, arms, rules, extra


def _header(arms: dict[str, truth.ArmTruth]) -> list[str]:
    """The header's text for each arm, by the definitions: a shadow arm would have blocked."""
    parts = []
    for a in arms.values():
        if a.mode == "shadow":
            parts.append(f"{a.arm} shadow  actions {a.actions:,}  would have blocked "
                         f"{a.would_have_blocked:,}  escaped {a.escaped:,}")
        else:
            # The gateway's witnessed coverage (if any) stands between coverage and actions:
            # it is checked against the report below.
            parts.append(f"{a.arm} {a.mode}  coverage {fmt.pct(a.coverage)}  ")
            parts.append(f"actions {a.actions:,}  blocked {a.blocked:,}  escaped {a.escaped:,}")
    return parts


def _witness_header(report: dict[str, Any]) -> list[str]:
    """The header's witness figures of an enforcing arm, as the report gives them (one
    definition: storage/witness_queries.py); none for a run the gateway did not witness."""
    if not any(m["witnessed"] for m in report["arms"].values()):
        return []
    parts = []
    for m in report["arms"].values():
        if m["mode"] == "shadow":
            continue
        parts.append("witnessed coverage " + (fmt.pct(m["witnessed_coverage"])
                                              if m["witnessed"] else "n/a"))
        if m["ungoverned_actions"]:
            parts.append(f"ungoverned actions {m['ungoverned_actions']:,}")
    return parts


@pytest.mark.parametrize("name", list(DEMOS))
async def test_every_surface_shows_the_raw_tables_figures(
        demos: dict[str, tuple[Path, dict[str, Any]]], name: str) -> None:
    db, demo_doc = demos[name]
    run_id, arms, rules, extra = _raw(db)
    assert set(arms) == {"governed", "ungoverned"}
    assert arms["governed"].mode == "enforce" and arms["ungoverned"].mode == "shadow"
    assert arms["ungoverned"].blocked == 0 and arms["ungoverned"].would_have_blocked > 0
    assert any(r.evaluations and 0 < r.blocks < r.evaluations for r in rules.values())

    # --- the dashboard: header and every view ---------------------------------------------
    with Store.open(db, read_only=True) as store:
        app = Dashboard(store, clock=lambda: 0.0)
        async with app.run_test(size=(220, 60)) as pilot:
            await settle(pilot)
            header = str(app.query_one("#kpis", Static).render())
            views: dict[str, list[list[str]]] = {}
            for key, table in (("2", "rules-table"), ("4", "runs-table"),
                               ("5", "agents-table"), ("7", "events-table")):
                await pilot.press(key)
                await settle(pilot)
                views[table] = _rows(app, table)
            agent_columns = app.query_one("#agents-table", Table).columns
            await pilot.press("6")
            await settle(pilot)
            deadline = 200
            while not _rows(app, "overhead-table") and deadline:
                await pilot.pause(0.05)  # its percentiles come from the slow lane
                deadline -= 1
            views["overhead-table"] = _rows(app, "overhead-table")
    for part in _header(arms):
        assert part in header, (part, header)
    firing = len(extra["firing"])
    assert f"alerts {firing} firing" in header

    shown_rules = {(r[0], r[1], r[2]): r for r in views["rules-table"]}
    assert set(shown_rules) == set(rules)
    for key, r in rules.items():
        assert shown_rules[key][3:8] == [
            "?" if r.evaluations is None else f"{r.evaluations:,}", f"{r.fires:,}",
            f"{r.blocks:,}", f"{r.would_have_blocked:,}",
            "?" if r.evaluations is None else fmt.pct(r.rule_rate, 2)], key

    (run_row,) = [r for r in views["runs-table"] if r[1] == run_id]
    assert run_row[4:7] == [str(extra["rounds"]), f"{sum(a.actions for a in arms.values()):,}",
                            f"{sum(a.escaped for a in arms.values()):,}"]

    # By column name: a witnessed run has its witness columns beside coverage.
    agents = {(r[0], r[1]): dict(zip(agent_columns, r)) for r in views["agents-table"]}
    assert len(agents) == len(extra["agents"])
    for arm, agent, actions, covered, blocked, escaped, evasions in extra["agents"]:
        row = agents[(arm, agent)]
        assert [row[c] for c in ("actions", "coverage", "blocked", "escaped", "evasions")] == [
            f"{actions:,}", fmt.pct(covered / actions), f"{blocked:,}", f"{escaped:,}",
            f"{evasions:,}"]

    overhead = {(r[0], r[1]): r for r in views["overhead-table"]}
    for arm, p50, p99, mean in extra["latency"]:
        assert overhead[(run_id, arm)][3:6] == [fmt.us(p50), fmt.us(p99), fmt.us(mean)]
    assert views["events-table"], "the Events view shows the newest decisions"

    # --- the command line ----------------------------------------------------------------------
    result = tw("runs", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    (listed,) = [r for r in json.loads(result.stdout) if r["run_id"] == run_id]
    assert listed["actions"] == sum(a.actions for a in arms.values())
    assert listed["escaped"] == sum(a.escaped for a in arms.values())
    assert listed["ended_at"] is not None  # the demo finished
    for entry in listed["arms"]:
        a = arms[entry["arm"]]
        assert {k: entry[k] for k in ("actions", "covered", "attempted", "blocked",
                                      "would_have_blocked", "escaped", "evasions")} == {
            "actions": a.actions, "covered": a.covered, "attempted": a.attempted,
            "blocked": a.blocked, "would_have_blocked": a.would_have_blocked,
            "escaped": a.escaped, "evasions": a.evasions}
        assert entry["coverage"] == pytest.approx(a.coverage)

    result = tw("report", "--run", run_id, "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for part in _witness_header(report):
        assert part in header, (part, header)
    for doc in (report, demo_doc):  # `demo --format json` is the same report
        for arm, a in arms.items():
            got = doc["arms"][arm]
            assert {k: got[k] for k in ("actions", "attempted", "blocked", "would_have_blocked",
                                        "escaped_violations", "evasions", "mode")} == {
                "actions": a.actions, "attempted": a.attempted, "blocked": a.blocked,
                "would_have_blocked": a.would_have_blocked, "escaped_violations": a.escaped,
                "evasions": a.evasions, "mode": a.mode}
            assert got["coverage"] == pytest.approx(a.coverage)
    for arm in arms:
        listed_rules = {(arm, r["service"], r["rule_id"]): r for r in report["arms"][arm]["rules"]}
        assert set(listed_rules) == {k for k in rules if k[0] == arm}
        for key, r in listed_rules.items():
            t = rules[key]
            assert (r["evaluations"], r["fires"], r["blocks"], r["would_have_blocked"]) == (
                t.evaluations, t.fires, t.blocks, t.would_have_blocked), key
            assert r["block_rate"] == pytest.approx(t.block_rate) if t.block_rate is not None \
                else r["block_rate"] is None

    result = tw("check", "--run", run_id, "--format", "json", db=db)
    assert result.returncode in (0, 1), result.stderr
    doc = json.loads(result.stdout)
    states = doc["firing"] if isinstance(doc, dict) else [s for s in doc
                                                          if s["state"] == "firing"]
    assert result.returncode == (1 if states else 0)
    assert len(states) == firing  # what the header counted
    for s in states:
        if s["alertname"] == "GovernanceEscapedViolations":
            assert s["value"] == extra["escaped_last_round"][s["labels"]["arm"]]
