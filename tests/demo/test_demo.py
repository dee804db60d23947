"""The demo, run as a user runs it: `tractatus-watch demo --headless --format json`, through a
real in-process Agent Lightning gateway, into a real DuckDB file (tests/support/demo_runs.py).
The long scenarios (persistence, adversarial) are in test_long_scenarios.py, a file of their
own so that the two workers of `make test` can run both files at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from support.demo_runs import DEMO2, demo_run, shared_root

DRIFT_ALERTS = {"AdherenceDrift", "EvasionDrift"}
SEEDS = range(1, 6)


@pytest.fixture(scope="module")
def demo2(tmp_path_factory: pytest.TempPathFactory) -> dict[Any, dict[str, Any]]:
    """The five seeds, and seed 3 a second time ("again"), two at a time: the machine has two
    cores and each demo is one process. Seed 1's run is shared with test_check_gate.py."""
    root = shared_root(tmp_path_factory)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures: dict[Any, Any] = {s: pool.submit(demo_run, root, *DEMO2, "--seed", str(s))
                                   for s in SEEDS}
        futures["again"] = pool.submit(demo_run, root, *DEMO2, "--seed", "3", tag="again")
        return {s: f.result().doc for s, f in futures.items()}


@pytest.mark.parametrize("seed", SEEDS)
def test_demo2_reproduces_the_published_table(demo2: dict[Any, dict[str, Any]],
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
    # Through the gateway's proxy: every tool call the model proposed was governed.
    assert gov["witnessed_coverage"] == 1.0 and gov["ungoverned_actions"] == 0
    assert gov["witnessed"] == gov["actions"] and gov["unwitnessed_decisions"] == 0
    assert ung["witnessed_coverage"] == 0.0 and ung["witnessed"] == ung["actions"]
    assert out["ungoverned_actions"] == []
    assert gov["escaped_violations"] == 0
    assert gov["blocked"] >= 1
    assert gov["performance"] < ung["performance"]
    assert out["difference"]["performance"] < 0
    assert not DRIFT_ALERTS & {a["alertname"] for a in out["alerts"]}


def test_same_seed_same_json(demo2: dict[Any, dict[str, Any]]) -> None:
    # Two separate processes, run side by side: the seed alone decides the document, but for
    # where it is stored (its run, experiment and store).
    ids = ("run_id", "experiment", "store")
    assert demo2["again"]["run_id"] != demo2[3]["run_id"]
    assert ({k: v for k, v in demo2["again"].items() if k not in ids}
            == {k: v for k, v in demo2[3].items() if k not in ids})
