"""The real program in a real terminal: `tractatus-watch open --db …` and `live --gateway`
inside tmux."""

from __future__ import annotations

import shlex
import socket
import time
from pathlib import Path

import httpx
import pytest

from support import truth
from tractatus_watch.storage.store import Store

from support.tmux import TMUX, Tmux, free_port

from .helpers import build_db, command

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (CI installs it; "
                                                     "apt-get install tmux to run this test)")


def test_open_in_tmux(tmp_path: Path) -> None:
    db = tmp_path / "watch.duckdb"
    build_db(db)
    with Store.open(db, read_only=True) as store:
        con = store.cursor()
        actions, blocked = con.execute("""
            SELECT count(*), count_if(attempted AND NOT executed) FROM decisions
            WHERE run_id = 'alpha' AND arm = 'governed'""").fetchall()[0]
        # The governed arm's row of STR-001, by the definitions (from the raw tables).
        str001 = truth.rules(con, "alpha")[("governed", "BoundaryEnforcer", "STR-001")]
        con.close()
    program = shlex.join([*command(), "open", "--db", str(db)])
    # Textual draws on stderr, so it cannot be redirected; errors stay on the pane, and so
    # does the exit code the shell prints once the program ends.
    script = f'{program}; echo "exit code $?"; sleep 30'
    tmux = Tmux(tmp_path)
    try:
        tmux.start(script)
        screen = tmux.wait_for("coverage 100.0%", f"actions {actions:,}")
        words = " ".join(screen.split())  # the KPI strip wraps at 120 columns
        assert f"blocked {blocked:,}" in words and "alerts 1 firing, 1 pending" in words
        assert "watch.duckdb read-only" in screen
        tmux.keys("2")
        screen = tmux.wait_for("per service and rule")
        line = next(ln for ln in screen.splitlines()
                    if "BoundaryEnforcer" in ln and " STR-001 " in ln)
        assert line.split()[:6] == ["governed", "BoundaryEnforcer", "STR-001",
                                    f"{str001.evaluations:,}", f"{str001.fires:,}",
                                    f"{str001.blocks:,}"]
        tmux.keys("?")
        tmux.wait_for("this help", "filter the current view")
        tmux.keys("Escape", "7")
        tmux.wait_for("decisions, newest first")
        tmux.keys("C-c")  # quits, as q does (k9s, btop): no "press ctrl+q" hint
        screen = tmux.wait_for("exit code ", timeout=30)
        assert "exit code 0" in screen and "Do you want to quit" not in screen, screen
    finally:
        tmux.kill()


def _decision(i: int) -> dict[str, object]:
    return {"schema": "tractatus.decision/1", "decision_id": f"tmux-d{i}",
            "agent_id": "tmux-agent", "round": 0, "arm": "governed", "mode": "enforce",
            "action": {"kind": "publish", "summary": f"post {i}"},
            "checks": [{"service": "BoundaryEnforcer", "rule_id": "STR-001",
                        "verdict": "allow", "raw_verdict": "PROCEED", "enforced": True,
                        "latency_us": 200}],
            "verdict": "allow", "executed": True, "latency_us": 250, "ts": time.time()}


def test_live_gateway_keeps_third_party_logs_off_the_screen(tmp_path: Path) -> None:
    """Agent Lightning warns through structlog when it has no key, uvicorn warns on a bad
    request: both go to the log file, none is drawn over the dashboard."""
    port = free_port()
    db = tmp_path / "live.duckdb"
    program = shlex.join([*command(), "live", "--gateway", "--port", str(port), "--run",
                          "tmux-run", "--view", "events", "--interval", "0.5", "--db",
                          str(db)])
    tmux = Tmux(tmp_path)
    try:
        tmux.start(f'{program}; echo "exit code $?"; sleep 30')
        screen = tmux.wait_for(f"gateway listening on 127.0.0.1:{port}, point the trainer here")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")  # uvicorn: "Invalid HTTP request"
            raw.recv(1024)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=10) as c:
            rid = c.post("/api/rollouts", json=[{"input": {"i": 0}}]).json()[0]["rollout_id"]
            c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "running",
                                                               "last_attempt_id": "a0"}})
            for i in range(3):
                c.post(f"/api/rollouts/{rid}/attempt/a0/events",
                       json={"event_type": "tractatus.decision", "data": _decision(i)})
        log = db.with_name(db.name + ".live.log")
        deadline = time.monotonic() + 45
        while "Invalid HTTP request" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, tmux.pane()
            time.sleep(0.2)
        def rows(screen: str) -> list[str]:
            # The table's rows (the detail pane names the decision id).
            return [ln for ln in screen.splitlines() if "tmux-agent" in ln and "tmux-d" not in ln]

        # The decisions reach the screen over a refresh or two: wait for all three.
        screen = tmux.wait_until(lambda screen: len(rows(screen)) >= 3, "3 decisions")
        assert screen.splitlines()[0].startswith(" 1 Overview 2 Rules 3 Alerts"), screen
        assert len(rows(screen)) == 3, screen
        for line in ("AGL_KEY not set", "authentication disabled", "Invalid HTTP request",
                     "WARNING", "INFO", "uvicorn", "Traceback", "event="):
            assert line not in screen, (line, screen)
        text = log.read_text()
        assert "AGL_KEY not set" in text and "Invalid HTTP request" in text, text
        assert log.stat().st_mode & 0o777 == 0o600
        tmux.keys("C-c")
        screen = tmux.wait_for("exit code ", timeout=60)
        assert "exit code 0" in screen, screen
    finally:
        tmux.kill()
