"""The real program in a real terminal: `tractatus-watch open --db …` inside tmux."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tractatus_watch.storage.store import Store

from .helpers import build_db, command

TMUX = shutil.which("tmux") or ("/usr/bin/tmux" if Path("/usr/bin/tmux").exists() else None)
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (CI installs it; "
                                                     "apt-get install tmux to run this test)")


class Tmux:
    def __init__(self, tmp: Path) -> None:
        self.socket = f"tw-test-{uuid.uuid4().hex[:8]}"
        self.tmp = tmp

    def run(self, *args: str) -> str:
        out = subprocess.run([TMUX or "tmux", "-L", self.socket, *args], capture_output=True,
                             text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def pane(self) -> str:
        return self.run("capture-pane", "-p", "-t", "tw")

    def wait_for(self, *texts: str, timeout: float = 45.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.pane()
            if all(t in screen for t in texts):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{texts} not on screen after {timeout}s:\n{screen}")

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.run("send-keys", "-t", "tw", key)
            time.sleep(0.15)

    def kill(self) -> None:
        subprocess.run([TMUX or "tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=30)


def test_open_in_tmux(tmp_path: Path) -> None:
    db = tmp_path / "watch.duckdb"
    build_db(db)
    with Store.open(db, read_only=True) as store:
        con = store.cursor()
        actions, blocked = con.execute("""
            SELECT count(*), count_if(attempted AND NOT executed) FROM decisions
            WHERE run_id = 'alpha' AND arm = 'governed'""").fetchall()[0]
        str001 = con.execute("""SELECT count(*), count_if(verdict = 'block') FROM checks
            WHERE run_id = 'alpha' AND service = 'BoundaryEnforcer' AND rule_id = 'STR-001'
            """).fetchall()[0]
        con.close()
    exit_file = tmp_path / "exit-code"
    program = shlex.join([*command(), "open", "--db", str(db)])
    # Textual draws on stderr, so it cannot be redirected; errors stay on the pane.
    script = f"{program}; echo $? > {exit_file}; sleep 30"
    tmux = Tmux(tmp_path)
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    try:
        subprocess.run([TMUX or "tmux", "-L", tmux.socket, "new-session", "-d", "-s", "tw",
                        "-x", "120", "-y", "40", "sh", "-c", script], check=True, env=env,
                       timeout=30)
        screen = tmux.wait_for("coverage 100.0%", f"actions {actions:,}")
        words = " ".join(screen.split())  # the KPI strip wraps at 120 columns
        assert f"blocked {blocked:,}" in words and "alerts 1 firing, 1 pending" in words
        assert "watch.duckdb read-only" in screen
        tmux.keys("2")
        screen = tmux.wait_for("per service and rule")
        line = next(ln for ln in screen.splitlines()
                    if "BoundaryEnforcer" in ln and " STR-001 " in ln)
        assert f"{str001[0]:,}" in line and f"{str001[1]:,}" in line
        tmux.keys("?")
        tmux.wait_for("this help", "filter the current view")
        tmux.keys("Escape", "7")
        tmux.wait_for("decisions, newest first")
        tmux.keys("q")
        deadline = time.monotonic() + 30
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert exit_file.exists(), tmux.pane()
        assert exit_file.read_text().strip() == "0", tmux.pane()
    finally:
        tmux.kill()
