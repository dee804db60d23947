"""The real program in a real terminal: a tmux session to start it in, read its screen and send
it keys; and event-to-screen latency of `live --gateway` (a decision posted to the gateway until
its row is on the pane), shared by tests/tui and bench/live_latency.py."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

TMUX = shutil.which("tmux") or ("/usr/bin/tmux" if Path("/usr/bin/tmux").exists() else None)


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
        return self.wait_until(lambda screen: all(t in screen for t in texts), str(texts),
                               timeout)

    def wait_until(self, check: Callable[[str], bool], what: str,
                   timeout: float = 45.0, every_s: float = 0.2) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.pane()
            if check(screen):
                return screen
            time.sleep(every_s)
        raise AssertionError(f"{what} not on screen after {timeout}s:\n{screen}")

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.run("send-keys", "-t", "tw", key)
            time.sleep(0.15)

    def start(self, script: str, size: tuple[int, int] = (120, 40)) -> None:
        """Run `script` in a window of `size`. A window can come up at tmux's default size
        (80x24) on a busy server, and a program that reads its size before the resize lays out
        for 80 columns: so the window starts with a placeholder, is resized and checked, and
        only then is the script started in it, at the size the test reads."""
        env = {**os.environ, "TERM": "xterm-256color"}
        # COLUMNS/LINES (left in the environment by an earlier test or a CI shell) win over
        # the terminal's own size in shutil.get_terminal_size, which Textual reads: the program
        # would lay out for them, not for the window.
        for name in ("NO_COLOR", "AGL_KEY", "COLUMNS", "LINES"):
            env.pop(name, None)
        width, height = (str(n) for n in size)
        subprocess.run([TMUX or "tmux", "-L", self.socket, "new-session", "-d", "-s", "tw",
                        "-x", width, "-y", height, "sleep", "600"],
                       check=True, env=env, timeout=30)
        deadline = time.monotonic() + 30
        while True:
            self.run("resize-window", "-t", "tw", "-x", width, "-y", height)
            shown = self.run("display-message", "-p", "-t", "tw",
                             "#{window_width}x#{window_height}").strip()
            if shown == f"{width}x{height}":
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"tmux window is {shown}, not {width}x{height}")
            time.sleep(0.2)
        self.run("respawn-pane", "-k", "-t", "tw", "sh", "-c", script)

    def kill(self) -> None:
        subprocess.run([TMUX or "tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe_agent(i: int) -> str:
    """The agent of probe decision i: its name on the Events row tells the probes apart."""
    return f"lat-a{i:03d}"


def decision(i: int) -> dict[str, object]:
    """One governed, allowed decision of its own agent."""
    return {"schema": "tractatus.decision/1", "decision_id": f"lat-d{i}",
            "agent_id": probe_agent(i), "round": 0, "arm": "governed", "mode": "enforce",
            "action": {"kind": "publish", "summary": f"latency probe {i}"},
            "checks": [{"service": "BoundaryEnforcer", "rule_id": "STR-001",
                        "verdict": "allow", "raw_verdict": "PROCEED", "enforced": True,
                        "latency_us": 200}],
            "verdict": "allow", "executed": True, "latency_us": 250, "ts": time.time()}


@dataclass(frozen=True)
class Latencies:
    seconds: list[float]  # one per decision, in posting order

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def max_ms(self) -> float:
        return max(self.seconds) * 1000


def live_event_to_screen(tmp: Path, program: Sequence[str], *, decisions: int = 15,
                         interval: float = 0.25, deadline_s: float = 10.0,
                         poll_s: float = 0.01) -> Latencies:
    """Start `live --gateway --interval <interval> --view events` in tmux, then post decisions
    one at a time and time each from just before its POST until its row is on the pane (the
    pane is read every `poll_s`; each read takes a few ms, so the figure is a little high).
    Fails when a decision is not on screen within `deadline_s`."""
    port = free_port()
    db = tmp / "latency.duckdb"
    cmd = shlex.join([*program, "live", "--gateway", "--port", str(port), "--run", "lat-run",
                      "--view", "events", "--interval", str(interval), "--db", str(db)])
    tmux = Tmux(tmp)
    seconds: list[float] = []
    try:
        tmux.start(f'{cmd}; echo "exit code $?"; sleep 30')
        tmux.wait_for(f"gateway listening on 127.0.0.1:{port}")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            rid = c.post("/api/rollouts", json=[{"input": {}}]).json()[0]["rollout_id"]
            c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "running",
                                                               "last_attempt_id": "a0"}})
            for i in range(decisions):
                # Between probes: wait out a refresh so each post lands at a random phase.
                time.sleep(interval * 1.3)
                t0 = time.monotonic()
                c.post(f"/api/rollouts/{rid}/attempt/a0/events",
                       json={"event_type": "tractatus.decision", "data": decision(i)})
                tmux.wait_until(lambda screen, i=i: probe_agent(i) in screen,
                                f"decision {i}", timeout=deadline_s, every_s=poll_s)
                seconds.append(time.monotonic() - t0)
        tmux.keys("C-c")
        tmux.wait_for("exit code ", timeout=60)
    finally:
        tmux.kill()
    return Latencies(seconds)
