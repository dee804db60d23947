"""The light SDK: the base install of `tractatus-watch` (no extras), installed alone into a fresh
virtual environment, is what a trainer or agent needs and nothing of the dashboard's stack. The
hooks file loads through Agent Lightning's own `load_hooks` and takes a rollout through
on_enqueue and on_succeeded into the spool, a Governor checks actions, and none of duckdb,
polars, pyarrow, numpy, textual, textual_plot or rich is imported or even installed. The
`tractatus-watch` command there prints the hooks path and otherwise says what to install.

Installing needs wheels of Agent Lightning's dependencies. They are built once per set of light
requirements, constraints and Python into the user's cache (pip's own cache is not kept on these
machines), the newest few kept; every run then installs with no index at all, so the test is
offline and takes seconds once the wheelhouse exists (the first build needs the package index)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("duckdb", "polars", "pyarrow", "numpy", "textual", "textual_plot", "rich")
DASHBOARD_DISTS = {"duckdb", "polars", "pyarrow", "numpy", "textual", "textual-plot", "rich",
                   "typer", "psutil", "psycopg", "duckdb-extensions"}
KEEP_WHEELHOUSES = 3
STALE_BUILD_S = 3600.0  # a half-built wheelhouse older than this was left by a killed run
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]

CLICKBAIT = {"kind": "publish", "params": {"headline": "You won't believe this!!!"},
             "text": "The council met on Tuesday."}
INFORMATIVE = {"kind": "publish", "params": {"headline": "Council approves budget"},
               "text": "The council approved the budget on Tuesday.", "sources": ["minutes.pdf"]}

# Runs in the light environment (python -I: no cwd, no PYTHONPATH, no user site).
SCRIPT = """
import importlib.metadata as md, importlib.util, json, sys, time

t0 = time.perf_counter()
from tractatus_watch.governance.governor import Governor
governor_s = time.perf_counter() - t0
t0 = time.perf_counter()
from agentlightning.hooks import load_hooks
from tractatus_watch.governance import hooks_path
hooks = load_hooks(str(hooks_path()))
hooks_s = time.perf_counter() - t0

from agentlightning.schemas import Rollout, RolloutCreate
hooks.on_startup()
request = hooks.on_enqueue(RolloutCreate(input={"prompt": "p0"}, is_train=True))
gov = Governor.from_env(mode="enforce", agent_id="agent-1")
blocked = gov.check(CLICKBAIT, round=1)
allowed = gov.check(INFORMATIVE, round=1)
gov.close()
now = time.time()
rollout = Rollout.model_validate({
    "rollout_id": "ro-1", "input": {"prompt": "p0"}, "config": {},
    "metadata": request.metadata,
    "status": {"state": "succeeded", "last_attempt_id": "a0", "created_at": now,
               "updated_at": now}})
hooks.on_succeeded(rollout, {"a0": [{"event_type": "tractatus.decision", "attempt_id": "a0",
                                     "timestamp": now, "data": blocked.to_payload()}]}, None)
hooks.close()
print(json.dumps({
    "governor_s": governor_s, "hooks_s": hooks_s,
    "hooks_path": str(hooks_path()),
    "stamp": request.metadata["tractatus_watch"],
    "decisions": [(d.verdict, d.executed) for d in (blocked, allowed)],
    "hooks_counts": hooks.counts,
    "loaded": sorted(m for m in sys.modules if m.partition(".")[0] in FORBIDDEN),
    "found": [m for m in FORBIDDEN if importlib.util.find_spec(m) is not None],
    "dists": sorted(d.metadata["Name"].lower().replace("_", "-") for d in md.distributions()),
    "requires": md.requires("tractatus-watch"),
}))
"""


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tractatus-watch" / "test-light-sdk"


def _light_requirements() -> list[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(meta["project"]["dependencies"]) + list(meta["build-system"]["requires"])


def _wheelhouse_key(requirements: list[str]) -> str:
    h = hashlib.sha256()
    for part in (*requirements, (ROOT / "constraints.txt").read_text(encoding="utf-8"),
                 sys.version, platform.machine()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def _prune(root: Path, keep: Path) -> None:
    """The newest KEEP_WHEELHOUSES wheelhouses stay, and builds still running; the rest go."""
    now = time.time()
    done = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    for old in done[KEEP_WHEELHOUSES:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    for partial in root.glob(".build-*"):
        if now - partial.stat().st_mtime > STALE_BUILD_S:
            shutil.rmtree(partial, ignore_errors=True)


def wheelhouse() -> Path:
    """Wheels of the light install's dependencies and of the build backend, at the versions
    constraints.txt pins (as `make venv` installs them)."""
    requirements = _light_requirements()
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / _wheelhouse_key(requirements)
    if not final.is_dir():
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            done = subprocess.run(
                [*PIP, "wheel", "--progress-bar", "off", "-w", str(build),
                 "-c", str(ROOT / "constraints.txt"), *requirements],
                capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, (
                "building the light SDK's wheelhouse needs the package index once:\n"
                + done.stdout + done.stderr)
            try:
                build.rename(final)  # whole or not at all; another run may have won the race
            except OSError:
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(build, ignore_errors=True)
    os.utime(final)  # in use: the newest
    _prune(root, final)
    return final


def _source_copy(dest: Path) -> Path:
    """The project's sources as the build sees them, so building writes nothing into the tree."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    folders = set(meta["tool"]["setuptools"]["package-dir"].values())
    for folder in sorted(folders):
        shutil.copytree(ROOT / folder, dest / folder, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def _base_requirement(req: str) -> bool:
    return "extra ==" not in req.replace("extra==", "extra ==")


def test_light_sdk_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    wheels = wheelhouse()
    cached = time.perf_counter()
    offline = ["--no-index", "--find-links", str(wheels)]

    dist = tmp_path / "dist"
    built = subprocess.run([*PIP, "wheel", "--no-deps", *offline, "-w", str(dist),
                            str(_source_copy(tmp_path / "src"))],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    # The base install alone, by name, resolved from these wheels only: a dashboard dependency
    # in the base metadata has no wheel here and fails the install.
    installed = subprocess.run([*PIP, "--python", str(python), "install", *offline,
                                "--find-links", str(dist), "tractatus-watch"],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    ready = time.perf_counter()

    spool = tmp_path / "spool"
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
           "TRACTATUS_WATCH_SPOOL": str(spool), "TRACTATUS_WATCH_RUN_ID": "light-run"}
    script = (f"CLICKBAIT = {CLICKBAIT!r}\nINFORMATIVE = {INFORMATIVE!r}\n"
              f"FORBIDDEN = {FORBIDDEN!r}\n{SCRIPT}")
    ran = subprocess.run([str(python), "-I", "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    got: dict[str, Any] = json.loads(ran.stdout.splitlines()[-1])

    assert got["loaded"] == [] and got["found"] == []
    assert DASHBOARD_DISTS.isdisjoint(got["dists"])
    assert {"tractatus-watch", "agentlightning", "httpx"} <= set(got["dists"])
    base = [r for r in got["requires"] if _base_requirement(r)]
    assert sorted(r.split(">")[0].split("<")[0].split("=")[0].strip() for r in base) == [
        "agentlightning", "httpx"]
    assert not any("==" in r for r in base), base  # ranges only
    assert any("duckdb==" in r and "dashboard" in r for r in got["requires"])

    # The SDK works there: a block and an allow, the hooks stamp and capture through the spool.
    assert got["decisions"] == [["block", False], ["allow", True]]
    assert got["stamp"] == {"run_id": "light-run", "round": 1, "group": got["stamp"]["group"],
                            "is_train": True}
    assert got["hooks_counts"]["rollouts"] == 1 and got["hooks_counts"]["decisions"] == 1
    assert got["hooks_counts"]["errors"] == 0
    lines = [json.loads(line) for seg in sorted(spool.glob("seg-*.ndjson"))
             for line in seg.read_text().splitlines()]
    assert sorted(r["type"] for r in lines) == [
        "decision", "decision", "decision", "rollout", "rollout", "run"]
    hooks_file = Path(got["hooks_path"])
    assert hooks_file.name == "agl_hooks.py" and hooks_file.is_relative_to(venv)

    # The command: the hooks path works, anything else says what to install (exit 2).
    path = subprocess.run([str(venv / "bin" / "tractatus-watch"), "hooks-path"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (path.returncode, path.stdout, path.stderr) == (0, f"{hooks_file}\n", "")
    runs = subprocess.run([str(venv / "bin" / "tractatus-watch"), "runs"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert runs.returncode == 2 and runs.stdout == ""
    assert len(runs.stderr.splitlines()) == 1 and runs.stderr.startswith("error: ")
    assert "pip install 'tractatus-watch[dashboard]'" in runs.stderr
    assert "Traceback" not in runs.stderr

    with capsys.disabled():
        print(f"\nlight SDK: import Governor {got['governor_s'] * 1000:.0f} ms, load_hooks "
              f"{got['hooks_s'] * 1000:.0f} ms (fresh interpreter); wheelhouse "
              f"{cached - started:.1f} s, build+venv+install {ready - cached:.1f} s, "
              f"{len(got['dists'])} distributions")
