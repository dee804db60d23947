"""The demo's speed: rounds per second and HTTP requests per rollout for `persistence` and for
`scale` at 1, 10, 100 and 1000 agents per arm, next to the request capacity of the gateway on
this machine, measured in the same run, and the share of it each demo uses.

The demo runs as `tractatus-watch demo --headless` runs it (a DemoSession with the CLI's writer
interval, the default arms, the gateway the session starts by default). Requests are counted
at every HTTP client in this process (httpx: the trainer's creates and the senders; the demo's
own http.client requests, demo/rest.py: the controller, agents and the trainer's reads): each
request the gateway serves, not the proxy's call to the model server. CPU time is this
process's plus the gateway's own process's, when it has one (the default; `--in-process`: the
tap in the demo's process).

The gateway's capacity: N client threads in a tight loop over the demo's request mix per
rollout (create, running, one proxied chat completion, decisions event, reward event,
succeeded, terminal log, events, delete), against the same kind of gateway the demo starts,
with a model server like the demo's behind the proxy. Its requests per second at the best N
are the capacity (median of --reps windows).

Usage: bench/demo.py [--sizes 1,10,100,1000] [--scale-rounds 3] [--rounds 1000] [--reps 3]
                     [--threads 1,2,4] [--window-s 5] [--in-process]
`--rounds 100` is a quick run (persistence_1000_s is then scaled from it, and says so).
The machine is shared: figures are medians, with CPU time where wall time is noisy.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import structlog

sys.path.insert(0, str(Path(__file__).parent))
from _common import last_line  # noqa: E402

from tractatus_watch.collectors.gateway_process import GatewayProcess  # noqa: E402
from tractatus_watch.collectors.gateway_tap import GatewayTap, server_config  # noqa: E402
from tractatus_watch.collectors.sink import ListSink  # noqa: E402
from tractatus_watch.demo.environment import PUBLISH_TOOL  # noqa: E402
from tractatus_watch.demo.policy_server import PolicyServer, ToolCalls  # noqa: E402
from tractatus_watch.demo.rest import JsonClient, Response  # noqa: E402
from tractatus_watch.demo.scenarios import SCENARIOS  # noqa: E402
from tractatus_watch.demo.session import DemoSession  # noqa: E402
from tractatus_watch.storage.store import Store  # noqa: E402

CLI_FLUSH_S = 1.0  # the writer interval `demo --headless` gives its session
ID = re.compile(r"/[0-9a-f]{32}(?=/|$)")


class RequestCount:
    """Requests sent by every HTTP client of this process (httpx's and the demo's own), by
    method and route."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._send: Callable[..., httpx.Response] = httpx.Client.send
        self._request: Callable[..., Response] = JsonClient.request

    def _count(self, method: str, path: str) -> None:
        with self._lock:
            self.counts[(method, ID.sub("/{id}", path.split("?", 1)[0]))] += 1

    def __enter__(self) -> RequestCount:
        send, request = self._send, self._request

        def counted_send(client: httpx.Client, req: httpx.Request, **kw: Any) -> httpx.Response:
            self._count(req.method, req.url.path)
            return send(client, req, **kw)

        def counted_request(client: JsonClient, method: str, path: str, **kw: Any) -> Response:
            self._count(method, path)
            return request(client, method, path, **kw)

        # Patched on the classes: every client, whoever made it, is counted.
        httpx.Client.send = counted_send  # type: ignore[method-assign,assignment]
        JsonClient.request = counted_request  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        httpx.Client.send = self._send  # type: ignore[method-assign]
        JsonClient.request = self._request  # type: ignore[method-assign]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def cpu_s() -> tuple[float, float]:
    """(this process, its waited-for children: the gateway process) CPU seconds."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


@dataclass
class DemoRun:
    rounds: int
    seconds: float
    requests: int
    rollouts: int
    cpu_s: float          # this process
    gateway_cpu_s: float  # the gateway's process (0 in process)
    routes: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def rounds_per_s(self) -> float:
        return self.rounds / self.seconds

    @property
    def requests_per_rollout(self) -> float:
        return self.requests / max(1, self.rollouts)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds


def run_demo(workdir: Path, scenario: str, *, agents: int | None, rounds: int,
             in_process: bool) -> DemoRun:
    sc = SCENARIOS[scenario].with_overrides(agents=agents, rounds=rounds)
    name = f"{scenario}-{sc.agents}"
    with Store.open(workdir / f"{name}.duckdb") as store, RequestCount() as requests:
        session = DemoSession(store, sc, 1, f"bench-{name}", flush_interval_s=CLI_FLUSH_S,
                              gateway_process=not in_process)
        (me0, kids0), t0 = cpu_s(), time.monotonic()
        session.run()
        seconds = time.monotonic() - t0
        me1, kids1 = cpu_s()
    return DemoRun(rounds=len(session.rounds), seconds=seconds, requests=requests.total,
                   rollouts=sum(r.rollouts for r in session.rounds), cpu_s=me1 - me0,
                   gateway_cpu_s=kids1 - kids0, routes=dict(requests.counts))


# --- the gateway's capacity --------------------------------------------------------------------

PLAN: ToolCalls = [("publish", {"style": "informative", "topic": "science",
                               "headline": "Study links regular sleep to better memory"})] * 8
# One decision of the demo's shape; a rollout's event carries eight.
DECISION: dict[str, Any] = {
    "schema": "tractatus.decision/1", "decision_id": "", "agent_id": "agent-0", "round": 0,
    "arm": "governed", "mode": "enforce", "action": {"kind": "publish", "summary": "post"},
    "checks": [{"service": "BoundaryEnforcer", "rule_id": "inst_016", "verdict": "allow",
                "raw_verdict": "ALLOW", "enforced": True, "latency_us": 300}],
    "verdict": "allow", "executed": True, "latency_us": 400, "ts": 1_790_000_000.0}
MIX = 9  # requests per cycle below


def rollout_cycle(c: httpx.Client) -> None:
    """One rollout's requests, as the demo sends them."""
    rid = secrets.token_hex(16)
    c.post("/api/rollouts", json=[{"rollout_id": rid, "input": {"arm": "governed"}}]
           ).raise_for_status()
    c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "running",
                                                     "last_attempt_id": "0"}}).raise_for_status()
    c.post(f"/proxy/rollout/{rid}/attempt/0/mode/train/openai/v1/chat/completions", json={
        "model": "demo-policy", "user": "bench", "tools": [PUBLISH_TOOL],
        "messages": [{"role": "user", "content": "Round 0: plan 8 items."}]}).raise_for_status()
    decisions = {"schema": "tractatus.decisions/1",
                 "decisions": [dict(DECISION, decision_id=secrets.token_hex(8))
                               for _ in range(8)]}
    c.post(f"/api/rollouts/{rid}/attempt/0/events",
           json={"event_type": "tractatus.decisions", "data": decisions}).raise_for_status()
    c.post(f"/api/rollouts/{rid}/attempt/0/events",
           json={"event_type": "reward", "data": {"value": 0.5}}).raise_for_status()
    c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "succeeded"}}).raise_for_status()
    c.get("/api/rollouts/terminal", params={"after": 0, "limit": 1}).raise_for_status()
    c.get(f"/api/rollouts/{rid}/events").raise_for_status()
    c.delete(f"/api/rollouts/{rid}").raise_for_status()


class _Gateway:
    """The gateway the demo would start (its own process, or a tap in this one), with a
    model server registered behind its proxy."""

    def __init__(self, in_process: bool) -> None:
        self.key = secrets.token_urlsafe(24)
        config = server_config(host="127.0.0.1", port=0, key=self.key)
        self.model = str(config["default_proxy"]["model_name"])
        self.sink = ListSink()
        self._stop = threading.Event()
        if in_process:
            self.tap: Any = GatewayTap(self._count, batch_interval_s=0.25, config=config)
            self.tap.start()
            self._thread = None
        else:
            self.tap = GatewayProcess(self._count, config=config, batch_interval_s=0.25)
            self._thread = threading.Thread(target=self.tap.run,
                                            args=(self._count, self._stop), daemon=True)
            self._thread.start()
            if not self.tap.listening.wait(60):
                raise RuntimeError("the gateway process did not start")
        self.records = 0
        self.policies = PolicyServer({"bench": lambda body: PLAN})
        with self.client() as c:
            c.post("/api/models", json=[{"model": self.model,
                                         "endpoint": self.policies.endpoint}]).raise_for_status()

    def _count(self, records: Any) -> None:
        self.records += len(records)  # kept nowhere: the capacity is the gateway's

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.tap.url, timeout=60,
                            headers={"Authorization": f"Bearer {self.key}"})

    def close(self) -> None:
        self.policies.close()
        if self._thread is None:
            self.tap.stop()
        else:
            self._stop.set()
            self._thread.join(60)


@dataclass
class Capacity:
    rps: float            # requests per second the gateway served
    client_cpu_ms: float  # this process's CPU per request (the load's own cost)


def capacity(in_process: bool, threads: list[int], window_s: float, reps: int
             ) -> dict[int, Capacity]:
    gw = _Gateway(in_process)
    out: dict[int, Capacity] = {}
    try:
        with gw.client() as warm:  # connections, imports and caches before the clock
            for _ in range(20):
                rollout_cycle(warm)
        for n in threads:
            rates: list[float] = []
            cpus: list[float] = []
            for _ in range(reps):
                rate, cpu = _window(gw, n, window_s)
                rates.append(rate)
                cpus.append(cpu)
            out[n] = Capacity(statistics.median(rates), statistics.median(cpus))
            print(f"  gateway capacity, {n} client thread(s): {out[n].rps:.0f} requests/s "
                  f"(median of {reps} x {window_s:g} s; this process {out[n].client_cpu_ms:.2f}"
                  f" ms CPU per request)", flush=True)
    finally:
        gw.close()
    return out


def _window(gw: _Gateway, n: int, window_s: float) -> tuple[float, float]:
    done = [0] * n
    deadline = time.monotonic() + window_s

    def loop(i: int) -> None:
        with gw.client() as c:
            while time.monotonic() < deadline:
                rollout_cycle(c)
                done[i] += MIX

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(n)]
    (me0, _), t0 = cpu_s(), time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.monotonic() - t0
    me1, _ = cpu_s()
    return sum(done) / seconds, (me1 - me0) / max(1, sum(done)) * 1000


# --- main ----------------------------------------------------------------------------------------

def _load() -> str:
    """The machine's load (it is shared: a wall time means little without it)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _runs(args: argparse.Namespace) -> Iterator[tuple[str, str, int | None, int]]:
    yield "persistence", "persistence", None, args.rounds
    for n in (int(x) for x in args.sizes.split(",") if x):
        yield f"scale_{n}", "scale", n, args.scale_rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,10,100,1000", help="scale: agents per arm")
    ap.add_argument("--scale-rounds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1000, help="persistence rounds")
    ap.add_argument("--reps", type=int, default=3, help="capacity windows per thread count")
    ap.add_argument("--threads", default="1,2,4", help="capacity: client threads")
    ap.add_argument("--window-s", type=float, default=5.0)
    ap.add_argument("--in-process", action="store_true",
                    help="the gateway tap in the demo's own process")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # Agent Lightning's proxy logs each call at debug level through structlog (to stdout).
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    where = "in the demo's process" if args.in_process else "in its own process"
    print(f"gateway {where}; demo's request mix per rollout ({MIX} requests):", flush=True)
    cap = capacity(args.in_process, [int(x) for x in args.threads.split(",")], args.window_s,
                   args.reps)
    capacity_rps = max(v.rps for v in cap.values())
    figures: dict[str, Any] = {"gateway_capacity_rps": capacity_rps,
                               "gateway_in_process": args.in_process}
    workdir = Path(tempfile.mkdtemp(prefix="tw-bench-demo-"))
    for key, scenario, agents, rounds in _runs(args):
        r = run_demo(workdir, scenario, agents=agents, rounds=rounds,
                     in_process=args.in_process)
        share = r.requests_per_s / capacity_rps
        label = key.replace("_", " ") + (" agents/arm" if agents else "")
        print(f"{label}: {r.rounds} rounds in {r.seconds:.1f} s ({r.rounds_per_s:.2f} rounds/s), "
              f"{r.requests_per_rollout:.2f} requests per rollout, {r.requests_per_s:.0f} "
              f"requests/s = {share:.0%} of the gateway's capacity; CPU {r.cpu_s:.1f} s here + "
              f"{r.gateway_cpu_s:.1f} s gateway; load {_load()}", flush=True)
        if key == "persistence":
            figures["persistence_rounds"] = r.rounds
            figures["persistence_s"] = r.seconds
            figures["persistence_1000_s"] = r.seconds * 1000 / max(1, r.rounds)
            figures["persistence_cpu_s"] = r.cpu_s + r.gateway_cpu_s
            figures["requests_per_rollout"] = r.requests_per_rollout
            figures["persistence_rounds_per_s"] = r.rounds_per_s
            figures["persistence_capacity_share"] = share
            figures["persistence_load"] = os.getloadavg()[0]
            for (method, route), count in sorted(r.routes.items(), key=lambda kv: -kv[1]):
                print(f"    {count / max(1, r.rollouts):5.2f} per rollout  {method} {route}")
        else:
            n = int(agents or 0)
            figures[f"rounds_per_s_{n}"] = r.rounds_per_s
            figures[f"requests_per_rollout_{n}"] = r.requests_per_rollout
            figures[f"capacity_share_{n}"] = share
            figures[f"cpu_s_{n}"] = r.cpu_s + r.gateway_cpu_s
            figures[f"seconds_{n}"] = r.seconds
    if figures.get("persistence_rounds") != 1000:
        figures["persistence_1000_s_scaled_from_rounds"] = figures.get("persistence_rounds")
    last_line(figures)


if __name__ == "__main__":
    main()
