"""The demo's long scenarios, run as a user runs them (tests/support/demo_runs.py): the
adversarial scenario's evasions raise a drift alarm within five rounds, and 200 rounds of the
persistence scenario raise none. Both runs of seed 1 are shared with test_check_gate.py."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from support.demo_runs import ADVERSARIAL, PERSISTENCE, demo_run, shared_root

DRIFT_ALERTS = {"AdherenceDrift", "EvasionDrift"}


@pytest.fixture(scope="module")
def long_scenarios(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The persistence run and the five adversarial seeds share one pool of two, longest job
    first, so one core is not idle while the 200-round run finishes."""
    root = shared_root(tmp_path_factory)
    with ThreadPoolExecutor(max_workers=2) as pool:
        persistence = pool.submit(demo_run, root, *PERSISTENCE, "--seed", "1")
        adversarial = {s: pool.submit(demo_run, root, *ADVERSARIAL, "--seed", str(s))
                       for s in range(1, 6)}
        return {"persistence": persistence.result().doc,
                "adversarial": {s: f.result().doc for s, f in adversarial.items()}}


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
