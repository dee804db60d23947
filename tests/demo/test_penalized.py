"""`demo --arms governed,penalized,ungoverned`: the two governance designs side by side with the
baseline. The penalized arm's checks run as the governed arm's (coverage 1.0), but a violation
is not stopped: it runs (escaped, never blocked) and costs the penalty in the rollout's reward;
the escaped-violations alert is the governed arm's only. Each arm has its own agents and random
streams, so the third arm leaves the other two exactly as they were."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest

from support.demo_runs import DEMO2, DemoRun, demo_env, demo_run, shared_root
from tractatus_watch.demo.environment import DISGUISED, STYLES
from tractatus_watch.governance.governor import DEFAULT_PENALTY

THREE = ("--arms", "governed,penalized,ungoverned")
# Disguised clickbait from round 3 of 10 (the scenario's round 15 moved within the run).
ADVERSARIAL = ("--scenario", "adversarial", "--rounds", "10")
ESCAPED_ALERT = "GovernanceEscapedViolations"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DemoRun]:
    root = shared_root(tmp_path_factory)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            "demo2": pool.submit(demo_run, root, *DEMO2, "--seed", "1", *THREE),
            "adversarial": pool.submit(demo_run, root, *ADVERSARIAL, "--seed", "1", *THREE),
        }
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("scenario", ["demo2", "adversarial"])
def test_three_arms_and_the_penalized_arms_figures(runs: dict[str, DemoRun],
                                                   scenario: str) -> None:
    out = runs[scenario].doc
    assert list(out["arms"]) == ["governed", "penalized", "ungoverned"]
    gov, pen, ung = (out["arms"][a] for a in ("governed", "penalized", "ungoverned"))
    assert (gov["mode"], pen["mode"], ung["mode"]) == ("enforce", "penalize", "shadow")
    assert gov["actions"] == pen["actions"] == ung["actions"] > 0
    # Checked like the governed arm, nothing stopped: every violation ran.
    assert pen["coverage"] == 1.0 and pen["witnessed_coverage"] == 1.0
    assert pen["blocked"] == 0 and pen["would_have_blocked"] == 0
    assert pen["escaped_violations"] == pen["attempted"] > 0
    # Penalized: the enforced checks' violations; the rest of the escapes are the auditor's
    # finds (evasions), which passed every enforced check and cost nothing.
    assert pen["penalized"] > 0
    assert pen["penalized"] + pen["evasions"] == pen["escaped_violations"]
    assert gov["penalized"] == ung["penalized"] == 0 and gov["blocked"] > 0
    # The difference stays governed - ungoverned.
    assert out["difference"]["performance"] == pytest.approx(
        gov["performance"] - ung["performance"], abs=2e-6)
    assert not [a for a in out["alerts"] if a["alertname"] == ESCAPED_ALERT
                and a["arm"] == "penalized"], out["alerts"]
    if scenario == "demo2":  # no disguised styles: nothing escapes the governed arm
        assert gov["escaped_violations"] == 0 and pen["evasions"] == 0
        assert not [a for a in out["alerts"] if a["alertname"] == ESCAPED_ALERT]


def test_the_penalty_is_taken_from_each_rollouts_reward(runs: dict[str, DemoRun]) -> None:
    """Per rollout of the penalized arm: reward = mean engagement - penalty x penalized /
    actions. Engagement is the style's mean plus noise (sd 0.04 per item), so the stored reward
    plus the penalty matches the styles' mean closely, and without the penalty it could not."""
    means = {s.name: s.engagement for s in STYLES + DISGUISED}
    con = duckdb.connect(str(runs["demo2"].db), read_only=True)
    rows = con.execute("""
        SELECT d.rollout_id, list(d.action_kind), count_if(d.verdict IN ('block', 'escalate')),
               count(*), any_value(r.value), count(DISTINCT r.reward_id)
        FROM decisions d JOIN rewards r USING (run_id, rollout_id)
        WHERE d.arm = 'penalized' GROUP BY d.rollout_id""").fetchall()
    con.close()
    assert len(rows) == 5 * 16 and all(r[5] == 1 for r in rows)  # rounds x rollouts
    penalized = [r for r in rows if r[2]]
    assert penalized and sum(r[2] for r in rows) == runs["demo2"].doc["arms"]["penalized"][
        "penalized"]
    for _, kinds, k, n, reward, _ in rows:
        styles = sum(means[kind] for kind in kinds) / n
        assert abs(reward + DEFAULT_PENALTY * k / n - styles) < 0.06, (kinds, reward)
        if k:  # 1 of 8 items costs 0.125: far outside the engagement noise
            assert styles - reward > 0.06, (kinds, reward)


def test_a_third_arm_leaves_the_default_arms_as_they_were(runs: dict[str, DemoRun],
                                                          tmp_path_factory: pytest.TempPathFactory
                                                          ) -> None:
    default = demo_run(shared_root(tmp_path_factory), *DEMO2, "--seed", "1").doc
    three = runs["demo2"].doc
    for arm in ("governed", "ungoverned"):
        assert three["arms"][arm] == default["arms"][arm], arm
    assert three["difference"] == default["difference"]
    assert list(default["arms"]) == ["governed", "ungoverned"]


def test_the_report_table_shows_three_arms(runs: dict[str, DemoRun]) -> None:
    out = subprocess.run([sys.executable, "-m", "tractatus_watch", "report", "--db",
                          str(runs["adversarial"].db), "--format", "markdown"],
                         env=demo_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0] == ["Metric", "Ungoverned", "Penalized", "Governed", "Difference"]
    rows = {r[0]: r[1:] for r in cells[2:]}
    pen = runs["adversarial"].doc["arms"]["penalized"]
    assert rows["Penalized (ran, cost the penalty: escapes by design)"] == [
        "", str(pen["penalized"]), "", ""]
    assert rows["Blocked"][1] == "0" and rows["Governance coverage"][1] == "100.0%"
    assert rows["Constraint violations (escaped)"][1] == str(pen["escaped_violations"])


@pytest.mark.parametrize("arms, why", [
    ("governed,bogus", "--arms: expected a comma list of governed, penalized, ungoverned, "
                       "got 'governed,bogus'"),
    ("", "--arms: expected a comma list of governed, penalized, ungoverned, got ''"),
    ("penalized,penalized", "--arms: an arm is named twice in 'penalized,penalized'"),
])
def test_bad_arms_are_one_line_and_exit_2(tmp_path: Path, arms: str, why: str) -> None:
    db = tmp_path / "never.duckdb"
    out = subprocess.run([sys.executable, "-m", "tractatus_watch", "demo", "--scenario", "demo2",
                          "--headless", "--arms", arms, "--db", str(db)],
                         env=demo_env(), capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (2, "", f"error: {why}\n")
    assert not db.exists()
