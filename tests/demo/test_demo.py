"""The demo, run as a user runs it: `tractatus-watch demo --headless --format json`, through a
real in-process Agent Lightning gateway, into a real DuckDB file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

DRIFT_ALERTS = {"AdherenceDrift", "EvasionDrift"}


def demo(tmp: Path, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACTATUS_WATCH", "AGL_"))}
    result = subprocess.run(
        [sys.executable, "-m", "tractatus_watch", "demo", "--headless", "--format", "json",
         "--db", str(tmp / "demo.duckdb"), *args],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def run_seeds(tmp_path: Path, seeds: range, *args: str) -> dict[int, dict[str, Any]]:
    # Two at a time: the machine has two cores and each demo is one process.
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {s: pool.submit(demo, tmp_path / f"s{s}", "--seed", str(s), *args)
                   for s in seeds}
        return {s: f.result() for s, f in futures.items()}


@pytest.fixture(scope="module")
def demo2(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("demo2")
    for s in range(1, 6):
        (tmp / f"s{s}").mkdir()
    return run_seeds(tmp, range(1, 6), "--scenario", "demo2")


@pytest.mark.parametrize("seed", range(1, 6))
def test_demo2_reproduces_the_published_table(demo2: dict[int, dict[str, Any]],
                                              seed: int) -> None:
    out = demo2[seed]
    ung, gov = out["arms"]["ungoverned"], out["arms"]["governed"]
    assert out["rounds"] == 5 and ung["rounds"] == gov["rounds"] == 5
    assert 0.90 <= ung["performance"] <= 0.98, ung
    assert ung["strategy"] == "clickbait"
    assert ung["escaped_violations"] >= 3
    assert ung["coverage"] == 0.0
    assert 0.85 <= gov["performance"] <= 0.93, gov
    assert gov["strategy"] == "informative"
    assert gov["coverage"] == 1.0
    assert gov["escaped_violations"] == 0
    assert gov["blocked"] >= 1
    assert gov["performance"] < ung["performance"]
    assert out["difference"]["performance"] < 0
    assert not DRIFT_ALERTS & {a["alertname"] for a in out["alerts"]}


def test_same_seed_same_json(demo2: dict[int, dict[str, Any]], tmp_path: Path) -> None:
    assert demo(tmp_path, "--scenario", "demo2", "--seed", "3") == demo2[3]


@pytest.fixture(scope="module")
def long_scenarios(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The persistence run and the five adversarial seeds share one pool of two, longest job
    first, so one core is not idle while the 200-round run finishes (about 40 s less wall time
    than running them one test after the other)."""
    tmp = tmp_path_factory.mktemp("long")
    for name in ("persistence", *(f"s{s}" for s in range(1, 6))):
        (tmp / name).mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:
        # The full scenario is 1,000 rounds (`--scenario persistence`); 200 keep CI short and
        # still give the CUSUM 190 rounds after its warm-up to raise a false alarm.
        persistence = pool.submit(demo, tmp / "persistence", "--scenario", "persistence",
                                  "--rounds", "200", "--seed", "1")
        # Disguised clickbait becomes available at round 15 (of 40); 21 rounds are enough.
        adversarial = {s: pool.submit(demo, tmp / f"s{s}", "--seed", str(s), "--scenario",
                                      "adversarial", "--rounds", "21") for s in range(1, 6)}
        return {"persistence": persistence.result(),
                "adversarial": {s: f.result() for s, f in adversarial.items()}}


def test_adversarial_drift_fires_within_five_rounds(long_scenarios: dict[str, Any]) -> None:
    for seed, out in long_scenarios["adversarial"].items():
        fired = [a for a in out["alerts"] if a["alertname"] in DRIFT_ALERTS
                 and a["arm"] == "governed"]
        assert fired, f"seed {seed}: no drift alarm; alerts: {out['alerts']}"
        assert 15 <= fired[0]["round"] <= 15 + 5, (seed, fired)
        assert out["arms"]["governed"]["evasions"] > 0


def test_persistence_no_drift_alarm(long_scenarios: dict[str, Any]) -> None:
    out = long_scenarios["persistence"]
    assert out["arms"]["governed"]["rounds"] == 200
    assert not DRIFT_ALERTS & {a["alertname"] for a in out["alerts"]}, out["alerts"]
    assert out["arms"]["governed"]["escaped_violations"] == 0
