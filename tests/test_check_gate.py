"""`check` as a CI gate after training: 0 on a finished run where nothing is wrong, also judged
long after it ended (`--at`, the rules' clock), 1 where a real condition holds (the adversarial
scenario's evasions). Real demo runs through the real gateway, real `tractatus-watch` processes.

The demo runs are the ones tests/demo reads (tests/support/demo_runs.py: made once a session);
`check` records alert state, so the stores it judges here are private copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest

from support.demo_runs import ADVERSARIAL, DEMO2, PERSISTENCE, demo_run, shared_root

DEMOS = {
    "demo2": DEMO2,
    # Persistence's pace and rules for 200 rounds (the full 1,000 rounds take minutes).
    "persistence": PERSISTENCE,
    # The evasions start at round 15; by round 21 they have fired EvasionDrift and let
    # violations through (GovernanceEscapedViolations).
    "adversarial": ADVERSARIAL,
}


def tw(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACTATUS_WATCH", "AGL_"))}
    env["TRACTATUS_WATCH_STORE"] = str(db)
    return subprocess.run([sys.executable, "-m", "tractatus_watch", *args], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root, tmp = shared_root(tmp_path_factory), tmp_path_factory.mktemp("gate")
    # Two at a time; a run another test file is making is waited for, not made twice.
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(demo_run, root, *args, "--seed", "1")
                   for name, args in DEMOS.items()}
        return {name: f.result().copy(tmp / name) for name, f in futures.items()}


def _last_data(db: Path) -> datetime:
    con = duckdb.connect(str(db), read_only=True)
    try:
        last = con.execute("SELECT max(ts) FROM decisions").fetchall()[0][0]
    finally:
        con.close()
    return last.replace(tzinfo=timezone.utc)


def _firing(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    doc = json.loads(result.stdout)
    if isinstance(doc, dict):  # the JSON document of the CLI output layer
        return list(doc["firing"])
    return [s for s in doc if s["state"] == "firing"]


@pytest.mark.parametrize("name", ["demo2", "persistence"])
def test_check_passes_on_a_finished_run_now_and_long_after(runs: dict[str, Path],
                                                           name: str) -> None:
    db = runs[name]
    last = _last_data(db)
    # Right after, 30 minutes after (no-data used to fire between 5 minutes and 6 hours after
    # the last data) and 30 days after the run ended.
    for at in (None, last + timedelta(minutes=30), last + timedelta(days=30)):
        args = ("check", "--format", "json") + (("--at", at.isoformat()) if at else ())
        result = tw(*args, db=db)
        assert result.returncode == 0, (at, result.stdout, result.stderr)
        assert _firing(result) == []


def test_check_fails_on_the_adversarial_run_and_says_why(runs: dict[str, Path]) -> None:
    db = runs["adversarial"]
    for at in (None, _last_data(db) + timedelta(days=30)):
        args = ("check", "--format", "json") + (("--at", at.isoformat()) if at else ())
        result = tw(*args, db=db)
        assert result.returncode == 1, (at, result.stdout, result.stderr)
        names = {s["alertname"] for s in _firing(result)}
        # A real condition, not the clock: evasions and the violations they let through.
        assert "GovernanceNoData" not in names and names & {"EvasionDrift",
                                                           "GovernanceEscapedViolations"}
