"""Demo runs made once per test session and shared by the test files that only read them.

A run is `tractatus-watch demo --headless --format json` as a user runs it (a subprocess, its
real in-process Agent Lightning gateway, a real DuckDB file). Several files need the same runs
(demo2 seed 1, persistence, adversarial seed 1): the first test that asks makes it and the
others wait for it. Under pytest-xdist the workers share one folder, so one run serves every
worker; a run that failed fails every test that asked for it, with its stderr.

A test that writes to the store (`check` records alert state) works on a copy
(`DemoRun.copy`), so the shared store stays as the demo left it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The runs more than one file reads, with the arguments every file must use for them.
DEMO2 = ("--scenario", "demo2")
# The full scenario is 1,000 rounds; 200 still give the CUSUM 190 rounds after its warm-up to
# raise a false alarm.
PERSISTENCE = ("--scenario", "persistence", "--rounds", "200")
# Disguised clickbait becomes available at round 15 (of 40); 21 rounds are enough.
ADVERSARIAL = ("--scenario", "adversarial", "--rounds", "21")

RUN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class DemoRun:
    folder: Path
    doc: dict[str, Any]   # the demo's `--format json` document

    @property
    def db(self) -> Path:
        return self.folder / "demo.duckdb"

    def copy(self, dest: Path) -> Path:
        """A private copy of the run's store (for commands that write to it); its path."""
        shutil.copytree(self.folder, dest)
        return dest / "demo.duckdb"


def shared_root(factory: pytest.TempPathFactory) -> Path:
    """This session's folder of shared runs: under xdist, each worker's base folder is a
    subfolder (`popen-gwN`) of the session's, which the workers share."""
    base = factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "demo-runs"
    root.mkdir(exist_ok=True)
    return root


def demo_env() -> dict[str, str]:
    """The environment of a user who set nothing: no store, run or gateway of ours."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("TRACTATUS_WATCH", "AGL_"))}


def demo_run(root: Path, *args: str, tag: str = "") -> DemoRun:
    """The run of `demo --headless --format json *args`, made once in `root` (`tag` names a
    separate run of the same arguments, e.g. a second run to compare with the first)."""
    key = re.sub(r"[^A-Za-z0-9]+", "-", " ".join(args + (tag,))).strip("-")
    folder = root / key
    with open(root / f"{key}.lock", "w") as lock:
        _lock(lock, timeout_s=RUN_TIMEOUT_S + 120, what=key)
        failed = folder / "failed.txt"
        if failed.exists():
            pytest.fail(f"demo {' '.join(args)} failed: {failed.read_text()}")
        if not (folder / "out.json").exists():
            _make(folder, args)
        return DemoRun(folder, json.loads((folder / "out.json").read_text()))


def _lock(lock: Any, timeout_s: float, what: str) -> None:
    """Take the run's lock: whoever holds it is making the run (bounded by its timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                pytest.fail(f"demo run {what}: still being made by another test after "
                            f"{timeout_s:g} s")
            time.sleep(0.1)


def _make(folder: Path, args: tuple[str, ...]) -> None:
    folder.mkdir(exist_ok=True)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tractatus_watch", "demo", "--headless", "--format", "json",
             "--db", str(folder / "demo.duckdb"), *args],
            env=demo_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        why = f"no result after {RUN_TIMEOUT_S:g} s"
    else:
        why = "" if result.returncode == 0 else \
            f"exit {result.returncode}: {result.stderr[-2000:]}"
    if why:
        # Recorded, so the tests waiting for this run fail at once instead of making it again.
        (folder / "failed.txt").write_text(why)
        pytest.fail(f"demo {' '.join(args)} failed: {why}")
    json.loads(result.stdout)  # one JSON document, or the run is no good
    (folder / "out.json").write_text(result.stdout)
