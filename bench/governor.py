"""Overhead that `Governor.check` adds to an agent's step, against the real Agent Lightning gateway.

Starts `agentlightning.server.app.create_app` in this process (uvicorn in a thread, 127.0.0.1,
a free port), creates rollouts the way the controllers do (POST /api/rollouts, then PATCH the
status to running with attempt "0"), and governs the same list of actions twice:

1. the SDK way: all five services in enforce mode over the 10 Tractatus rules of the test
   fixtures (`tests/fixtures/rules/governance-rules.json`, or `--rules`) plus the packaged
   content rules, decisions handed to the background sender;
2. the naive way: the same checks, then one synchronous POST of each decision to
   `AGL_EVENT_URL` before the agent may go on.

Both are timed per action around what the agent waits for. The events are then counted back
through the gateway's read API (`GET /api/rollouts/{id}/events`). The last line printed is JSON:
{"p50_us", "p99_us", "naive_p50_us", "naive_p99_us", "ratio"} with ratio = naive p50 / p50.

    .venv/bin/python bench/governor.py --actions 5000

The gateway shares this process (and its GIL) with the agent, which is harsher than a real
deployment, where it runs elsewhere. Figures vary with the machine's load: this is a benchmark,
not a test, and nothing gates on it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_RULES = ROOT / "tests" / "fixtures" / "rules" / "governance-rules.json"

# The demo's publishing styles, plus a few non-content actions so every service has work.
STYLES: list[dict[str, Any]] = [
    {"kind": "publish", "params": {"headline": "Study links regular sleep to better memory",
                                   "style": "informative"},
     "text": "Researchers at the university followed volunteers for a year and found that "
             "regular sleep schedules were associated with better memory scores.",
     "sources": ["https://example.org/sleep-study"]},
    {"kind": "publish", "params": {"headline": "City weighs new bus lanes", "style": "balanced"},
     "text": "Supporters say the bus lanes would shorten commutes; shop owners worry about "
             "deliveries. The council will hear both sides next week."},
    {"kind": "publish", "params": {"headline": "Shocking new study on sleep",
                                   "style": "sensational"},
     "text": "A new study on sleep suggests that many adults sleep less than they think."},
    {"kind": "publish", "params": {"headline": "You won't believe what this CEO did next!!!",
                                   "style": "clickbait"},
     "text": "The chief executive announced a reorganisation of the sales team."},
    {"kind": "publish",
     "params": {"headline": "Readers switch apps", "style": "unsourced_statistic"},
     "text": "73% of readers switched to our app last year, saving $1.2 million."},
    {"kind": "publish", "params": {"headline": "Our app keeps you safe",
                                   "style": "absolute_guarantee"},
     "text": "Our app is guaranteed to keep your data 100% safe and never fails."},
    {"kind": "publish", "params": {"headline": "Meet our top reader", "style": "personal_data"},
     "text": "Write to Jane at jane.doe@example.com or call 555-123-4567; her home address is "
             "12 Elm Street."},
    {"kind": "configure", "text": "connect the app to MongoDB", "params": {"port": 27017}},
    {"kind": "delete", "text": "rm -rf /var/cache/app", "destructive": True},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SERVE = """
import os, sys, uvicorn
from agentlightning.server.app import create_app
app = create_app({"key": os.environ["AGL_KEY"], "default_proxy": {
    "model_name": "bench", "train": {"temperature": 1.0}, "val": {"temperature": 0.7}}})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


class Gateway:
    """The real Agent Lightning gateway: served by uvicorn in a thread of this process
    (`thread`, the default), or in a child process (`process`, as it runs in production)."""

    def __init__(self, where: str = "thread") -> None:
        self.key = f"bench-{uuid.uuid4().hex}"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server: Any = None
        self.proc: subprocess.Popen[bytes] | None = None
        if where == "thread":
            import uvicorn
            from agentlightning.server.app import create_app

            app = create_app({"key": self.key, "default_proxy": {
                "model_name": "bench", "train": {"temperature": 1.0}, "val": {"temperature": 0.7}}})
            self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                        log_level="warning", lifespan="on"))
            self.thread = threading.Thread(target=self.server.run, name="agl-gateway", daemon=True)
            self.thread.start()
        else:
            # The key goes through the environment, never a command line others can list.
            self.proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(port)],
                                         env={**os.environ, "AGL_KEY": self.key},
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self._up():
            exited = self.proc is not None and self.proc.poll() is not None
            if time.monotonic() > deadline or exited:
                raise SystemExit(f"error: the gateway did not start on {self.url}")
            time.sleep(0.05)
        self.client = httpx.Client(base_url=self.url, timeout=30,
                                   headers={"Authorization": f"Bearer {self.key}"})

    def _up(self) -> bool:
        if self.server is not None:
            return bool(self.server.started)
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def create_rollout(self) -> str:
        rid = f"bench-{uuid.uuid4().hex[:12]}"
        self.client.post("/api/rollouts", json=[{"input": {"bench": True}, "rollout_id": rid}]
                         ).raise_for_status()
        self.client.patch(f"/api/rollouts/{rid}", json={
            "status": {"state": "running", "last_attempt_id": "0"}}).raise_for_status()
        return rid

    def event_url(self, rollout_id: str) -> str:
        return f"{self.url}/api/rollouts/{rollout_id}/attempt/0/events"

    def count_decisions(self, rollout_id: str) -> tuple[int, int]:
        """(events, decisions) stored for a rollout, unpacking `tractatus.decisions`."""
        r = self.client.get(f"/api/rollouts/{rollout_id}/events")
        r.raise_for_status()
        events = r.json()
        n = 0
        for e in events:
            if e["event_type"] == "tractatus.decision":
                n += 1
            elif e["event_type"] == "tractatus.decisions":
                n += len(e["data"]["decisions"])
        return len(events), n

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.should_exit = True
            self.thread.join(10)
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--actions", type=int, default=5000, help="actions per run (default 5000)")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured actions first")
    ap.add_argument("--rules", type=Path, default=FIXTURE_RULES,
                    help="Tractatus rule JSON (default: the test fixtures' rules)")
    ap.add_argument("--max-per-event", type=int, default=100,
                    help="decisions packed into one tractatus.decisions event (default 100)")
    ap.add_argument("--gateway", choices=("thread", "process"), default="thread",
                    help="serve the gateway in a thread of this process (default) or a child")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="sys.setswitchinterval in seconds for this process (default: Python's)")
    args = ap.parse_args(argv)
    if args.actions < 1 or args.warmup < 0:
        print("error: --actions must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    if not args.rules.is_file():
        print(f"error: rule file not found: {args.rules}", file=sys.stderr)
        return 2

    from tractatus_watch.governance.governor import Governor
    from tractatus_watch.governance.sender import Sender
    from tractatus_watch.governance.services import default_services, load_rules

    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    rules = load_rules(args.rules)
    load_before = os.getloadavg()[0]
    actions = [STYLES[i % len(STYLES)] for i in range(args.warmup + args.actions)]
    gw = Gateway(args.gateway)
    try:
        # 1. the SDK: background sender
        rid = gw.create_rollout()
        sender = Sender(gw.event_url(rid), key=gw.key, max_per_event=args.max_per_event)
        gov = Governor(default_services(rules), mode="enforce", agent_id="bench-agent",
                       run_id="bench", sink=sender)
        sdk: list[int] = []
        for i, action in enumerate(actions):
            t0 = time.perf_counter_ns()
            gov.check(action, round=i // 100)
            if i >= args.warmup:
                sdk.append(time.perf_counter_ns() - t0)
        t_close = time.perf_counter()
        stats = sender.close(timeout=60)
        flush_s = time.perf_counter() - t_close
        n_events, n_arrived = gw.count_decisions(rid)

        # 2. naive: one synchronous POST per decision
        rid2 = gw.create_rollout()
        url2 = gw.event_url(rid2)
        gov2 = Governor(default_services(rules), mode="enforce", agent_id="bench-agent",
                        run_id="bench-naive")
        naive: list[int] = []
        with httpx.Client(headers={"Authorization": f"Bearer {gw.key}"}, timeout=30) as client:
            for i, action in enumerate(actions):
                t0 = time.perf_counter_ns()
                d = gov2.check(action, round=i // 100)
                client.post(url2, json={"event_type": "tractatus.decision",
                                        "data": d.to_payload()}).raise_for_status()
                if i >= args.warmup:
                    naive.append(time.perf_counter_ns() - t0)
        _, n_arrived2 = gw.count_decisions(rid2)
    finally:
        gw.close()

    expected = args.warmup + args.actions
    p50, p99 = pct(sdk, 0.50), pct(sdk, 0.99)
    n50, n99 = pct(naive, 0.50), pct(naive, 0.99)
    print(f"Governor.check overhead per action, {args.actions} actions (+{args.warmup} warm-up), "
          f"{len(rules)} Tractatus rules, 5 services, enforce mode, gateway in a {args.gateway}")
    print(f"{'':32}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}   (microseconds)")
    for name, v in (("background sender (SDK)", sdk), ("synchronous POST (naive)", naive)):
        print(f"{name:32}{pct(v, .5):>10.0f}{pct(v, .9):>10.0f}{pct(v, .99):>10.0f}"
              f"{max(v) / 1000:>10.0f}")
    print(f"sender: {stats.sent} decisions in {stats.posts} posts, retries {stats.retries}, "
          f"dropped {stats.dropped}, failed {stats.failed}; flush at close {flush_s:.2f} s")
    print(f"arrived at the gateway: SDK {n_arrived}/{expected} decisions in {n_events} events; "
          f"naive {n_arrived2}/{expected}")
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at the end (other processes inflate the tail)")
    ok = n_arrived == expected and n_arrived2 == expected
    if not ok:
        print("error: not every decision arrived at the gateway", file=sys.stderr)
    print(f"targets: p99 <= 1000 us: {'met' if p99 <= 1000 else 'MISSED'}; "
          f"ratio >= 10: {'met' if n50 / p50 >= 10 else 'MISSED'}")
    print(json.dumps({"p50_us": round(p50, 1), "p99_us": round(p99, 1),
                      "naive_p50_us": round(n50, 1), "naive_p99_us": round(n99, 1),
                      "ratio": round(n50 / p50, 2)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
