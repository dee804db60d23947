"""`demo --scenario bypass`: from a known round one governed agent executes a share of its
actions without asking the Governor. SDK coverage stays 100% (the SDK saw only what it was
asked); the gateway's witness shows the ungoverned actions and the alarm fires (seeds 1-5)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support.demo_runs import DemoRun, demo_env, demo_run, shared_root
from tractatus_watch.demo.scenarios import SCENARIOS

BYPASS = ("--scenario", "bypass")
SEEDS = range(1, 6)
ALERT = "WitnessedCoverageBelow100"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, DemoRun]:
    root = shared_root(tmp_path_factory)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {s: pool.submit(demo_run, root, *BYPASS, "--seed", str(s)) for s in SEEDS}
        return {s: f.result() for s, f in futures.items()}


@pytest.mark.parametrize("seed", SEEDS)
def test_witness_sees_what_the_sdk_cannot(runs: dict[int, DemoRun], seed: int) -> None:
    scenario = SCENARIOS["bypass"]
    start = scenario.bypass_round
    assert start is not None
    out = runs[seed].doc
    gov, ung = out["arms"]["governed"], out["arms"]["ungoverned"]
    assert gov["coverage"] == 1.0 and gov["escaped_violations"] == 0
    assert gov["witnessed_coverage"] < 1.0
    assert gov["ungoverned_actions"] == len(out["ungoverned_actions"]) > 0
    assert ung["ungoverned_actions"] == 0 and ung["coverage"] == ung["witnessed_coverage"] == 0.0
    # Every ungoverned action is the bypassing agent's, from the bypass round on.
    assert {(u["arm"], u["agent_id"]) for u in out["ungoverned_actions"]} == \
        {("governed", "agent-0")}
    assert min(u["round"] for u in out["ungoverned_actions"]) >= start
    assert {u["tool"] for u in out["ungoverned_actions"]} == {"publish"}
    # Governed witnessed actions = all the arm's actions that had a decision: SDK figures agree.
    assert gov["witnessed"] == gov["actions"] + gov["ungoverned_actions"]
    assert gov["unwitnessed_decisions"] == ung["unwitnessed_decisions"] == 0
    fired = [a["round"] for a in out["alerts"] if a["alertname"] == ALERT]
    assert fired and all(a["arm"] == "governed" for a in out["alerts"]
                         if a["alertname"] == ALERT)
    assert start <= min(fired) <= start + 2


def test_check_after_the_run_fails_on_the_witness(runs: dict[int, DemoRun],
                                                  tmp_path: Path) -> None:
    db = runs[1].copy(tmp_path / "copy")
    out = subprocess.run([sys.executable, "-m", "tractatus_watch", "check", "--db", str(db)],
                         env=demo_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert f"{ALERT}{{" in out.stdout and 'arm="governed"' in out.stdout
    doc = json.loads(subprocess.run(
        [sys.executable, "-m", "tractatus_watch", "check", "--db", str(db), "--format", "json"],
        env=demo_env(), capture_output=True, text=True, timeout=120).stdout)
    assert ALERT in {f["alertname"] for f in doc["firing"]}
