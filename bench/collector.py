"""Collector throughput and latency against the real Agent Lightning 1.0.2 gateway (127.0.0.1).

1. accept: one client POSTs decision events to a gateway as fast as it can: Agent Lightning's
   own client (what an agent uses; the ratio's denominator), and for reference a bare
   keep-alive connection (the gateway's own ceiling, printed on stderr).
2. drain: a gateway preloaded with 20,000 decision and reward events in finished rollouts (plus
   the 100 KB model_request bodies the poller must not read); the poller reads and stores them.
   Target: drain >= 10 x accept.
3. latency: through the gateway tap, a separate process POSTs decisions at 300 events/s; a reader
   sees each row appear in the database. Target: p99 <= 500 ms.
4. durability: the gateway tap as `tractatus-watch gateway` runs it (its own process, a writer on
   a DuckDB file), with its write-ahead log and durability wait and without them, in the same
   run: 1 and `--clients` client threads (another process) POST decision events as fast as
   they can for `--durable-seconds`; request latency p50/p99 and accepted POSTs/s of each, and
   the ratio with/without.
5. bridges: drain (2.) with every bridge on (Prometheus, TensorBoard, W&B offline, OTLP to a
   local receiver in its own process) and off, back to back, `--bridge-repeats` pairs: the
   median of the pairs' ratios. Target: on >= 0.9 x off. Then every bridge on at a training
   job's pace (`--bridge-rate` decisions/s through the gateway tap for `--bridge-seconds`): how
   far the spans and the scraped Prometheus counters lag behind the store.
The gateways run in their own processes (as in production), so client and server do not share a
GIL. Last line: {"accept_events_per_s", "drain_events_per_s", "ratio", "latency_p50_ms",
"latency_p99_ms", and per client count C: "durable_cC_p50_ms", "durable_cC_p99_ms",
"durable_cC_posts_per_s", "nowait_cC_…", "durable_cC_posts_ratio",
"drain_bridges_off_events_per_s", "drain_bridges_on_events_per_s", "drain_bridges_ratio",
"bridges_span_lag_p50_s", "bridges_span_lag_max_s", "bridges_metrics_lag_p50_s",
"bridges_metrics_lag_max_s"}.
Usage: bench/collector.py [--preload N] [--rate R] [--seconds S] [--clients C]
[--durable-seconds S] [--only-durability] [--only-bridges] [--bridge-repeats N]
[--bridge-preload N] [--bridge-rate R] [--bridge-seconds S] [--bridges LIST] [--dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import http.server
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import last_line  # noqa: E402

from tractatus_watch.collectors.gateway_tap import GatewayTap  # noqa: E402
from tractatus_watch.collectors.runner import run_sources  # noqa: E402
from tractatus_watch.collectors.poller import Poller, poll_until_idle  # noqa: E402
from tractatus_watch.collectors.sink import writer_sink  # noqa: E402
from tractatus_watch.monitor.bridges import BridgeContext  # noqa: E402
from tractatus_watch.storage.store import Store  # noqa: E402
from tractatus_watch.storage.writer import Writer  # noqa: E402

KEY_ENV = "AGL_KEY"


def decision(i: int, ts: float | None = None) -> dict[str, Any]:
    return {"schema": "tractatus.decision/1", "decision_id": f"b-{i:09d}",
            "agent_id": f"agent-{i % 16}", "round": i % 50, "arm": "governed", "mode": "enforce",
            "action": {"kind": "publish", "summary": "a post about the weather",
                       "digest": "sha256:" + "0" * 64},
            "checks": [{"service": "BoundaryEnforcer", "rule_id": "inst_017",
                        "verdict": "block" if i % 9 == 0 else "allow",
                        "raw_verdict": "BLOCK" if i % 9 == 0 else "ALLOW", "enforced": True,
                        "latency_us": 310, "reason": "checked"},
                       {"service": "CrossReferenceValidator", "rule_id": "inst_008",
                        "verdict": "allow", "raw_verdict": "APPROVED", "enforced": True,
                        "latency_us": 120}],
            "executed": i % 9 != 0, "latency_us": 450,
            "ts": time.time() if ts is None else ts}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- child processes --------------------------------------------------------------------------

def serve(port: int, preload: int) -> None:
    """A gateway process: Agent Lightning's app, optionally preloaded through its own store
    functions (the preload is not what is measured; POSTing 20k events would take a minute)."""
    import uvicorn
    from agentlightning.schemas import RolloutState
    from agentlightning.server import store
    from agentlightning.server.app import create_app
    from agentlightning.server.routes.events import record_event
    from agentlightning.server.routes.rollouts import enqueue_rollouts
    from agentlightning.schemas import RolloutCreate

    from tractatus_watch.collectors.gateway_tap import server_config

    app = create_app(server_config(host="127.0.0.1", port=port, key=os.environ[KEY_ENV]))
    per_rollout = 100
    created = asyncio.run(enqueue_rollouts([RolloutCreate(input={"i": i}) for i in
                                            range(preload // per_rollout)]))
    n = 0
    for r in created:
        for k in range(per_rollout):
            if k % 10 == 9:
                record_event(r.rollout_id, "0", "reward", {"value": 0.5})
            else:
                record_event(r.rollout_id, "0", "tractatus.decision", decision(n, 1.79e9 + n))
            n += 1
        record_event(r.rollout_id, "0", "model_request",
                     {"model": "m", "request": {"blob": "x" * 100_000}, "latency_ms": 9.0})
        status = r.status.model_copy(update={"state": RolloutState.SUCCEEDED})
        store._rollouts[r.rollout_id] = r.model_copy(update={"status": status})
        store._terminal_order.append(r.rollout_id)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=120)


def post_paced(port: int, rate: float, seconds: float, rollout_id: str) -> None:
    """A client process: POST one decision every 1/rate s, each stamped with its send time."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json", "x-api-key": os.environ[KEY_ENV]}
    start = time.monotonic()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        body = json.dumps({"event_type": "tractatus.decision", "data": decision(i)})
        conn.request("POST", f"/api/rollouts/{rollout_id}/attempt/0/events", body, headers)
        conn.getresponse().read()


def serve_tap(port: int, db: str, wal: str) -> None:
    """A gateway process as `tractatus-watch gateway` runs it (writer, cursor, signals), with its
    write-ahead log in `wal` or, with "none", without the log and the durability wait."""
    with Store.open(Path(db)) as store:
        writer = Writer(store, flush_interval_s=0.05)
        tap = GatewayTap(lambda records: None, port=port, key=os.environ[KEY_ENV],
                         run_id="bench", wal_dir=None if wal == "none" else wal)
        try:
            run_sources([tap], writer, run_id="bench", get_cursor=store.get_cursor)
        finally:
            writer.close()


def post_flat_out(port: int, seconds: float, clients: int) -> None:
    """A client process: `clients` threads, each on its own keep-alive connection and rollout,
    POST one decision after another for `seconds`; prints each request's latency (JSON)."""
    headers = {"Content-Type": "application/json", "x-api-key": os.environ[KEY_ENV]}
    results: list[list[float]] = [[] for _ in range(clients)]
    refused = [0] * clients
    start = threading.Barrier(clients)

    def client(k: int) -> None:
        (r,) = request(port, "POST", "/api/rollouts", [{"input": {"client": k}}])
        path = f"/api/rollouts/{r['rollout_id']}/attempt/0/events"
        conn = http.client.HTTPConnection("127.0.0.1", port)
        start.wait()
        end = time.monotonic() + seconds
        i = k * 10_000_000
        while time.monotonic() < end:
            body = json.dumps({"event_type": "tractatus.decision", "data": decision(i)})
            t0 = time.perf_counter()
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                results[k].append(time.perf_counter() - t0)
            else:
                refused[k] += 1
            i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"latencies": [x for r in results for x in r], "refused": sum(refused),
                      "seconds": seconds}))


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, *args], env=os.environ.copy())


def wait_up(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"gateway on port {port} did not come up")


def request(port: int, method: str, path: str, body: Any = None) -> Any:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, json.dumps(body) if body is not None else None,
              {"Content-Type": "application/json", "x-api-key": os.environ[KEY_ENV]})
    resp = c.getresponse()
    data = resp.read()
    if resp.status >= 300:
        raise RuntimeError(f"{method} {path}: HTTP {resp.status}")
    return json.loads(data) if data else None


# --- measurements -----------------------------------------------------------------------------

def measure_accept(events: int) -> tuple[float, float]:
    """(events/s through Agent Lightning's own client, events/s through a bare keep-alive
    connection): the first is what one agent gets, the second the gateway's own ceiling."""
    from agentlightning.client import AgentLightningSyncClient

    port = free_port()
    proc = spawn("--serve", str(port), "0")
    try:
        wait_up(port)
        (r,) = request(port, "POST", "/api/rollouts", [{"input": {}}])
        path = f"/api/rollouts/{r['rollout_id']}/attempt/0/events"
        bodies = [{"event_type": "tractatus.decision", "data": decision(i)}
                  for i in range(events)]
        with AgentLightningSyncClient(base_url=f"http://127.0.0.1:{port}",
                                      key=os.environ[KEY_ENV], max_retries=0) as client:
            t0 = time.perf_counter()
            for body in bodies:
                client.post(path, json=body).raise_for_status()
            agl_client = events / (time.perf_counter() - t0)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        headers = {"Content-Type": "application/json", "x-api-key": os.environ[KEY_ENV]}
        encoded = [json.dumps(b) for b in bodies]
        t0 = time.perf_counter()
        for body in encoded:
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"POST: HTTP {resp.status}")
        bare = events / (time.perf_counter() - t0)
        return agl_client, bare
    finally:
        proc.terminate()
        proc.wait()


def measure_drain(preload: int, workdir: Path, bridges: tuple[str, ...] = (),
                  name: str = "drain") -> tuple[float, int]:
    """Events stored per second, from the first poll to the last commit; with `bridges`, every
    bridge (Prometheus, TensorBoard, W&B offline, OTLP to a local receiver) reads the store
    meanwhile, as `collect` runs them."""
    port = free_port()
    proc = spawn("--serve", str(port), str(preload))
    receiver: subprocess.Popen[bytes] | None = None
    try:
        wait_up(port)
        with Store.open(workdir / f"{name}.duckdb") as store:
            writer = Writer(store, flush_interval_s=0.2)
            poller = Poller(f"http://127.0.0.1:{port}", key=os.environ[KEY_ENV],
                            concurrency=8)
            otlp_port = None
            if "otel" in bridges:  # the receiver in its own process, as a user's would be
                receiver = spawn("--otlp-receiver", str(otlp_port := free_port()))
                wait_listening(otlp_port)
            on = every_bridge(workdir / name, bridges, otlp_port) if bridges else []
            ctx = BridgeContext(store, lambda: writer.runs_written, lambda: [])
            for bridge in on:
                bridge.start(ctx)
            t0 = time.perf_counter()
            asyncio.run(poll_until_idle(poller, writer_sink(writer, "bench"), idle_ticks=1))
            writer.flush()
            elapsed = time.perf_counter() - t0
            cur = store.cursor()
            stored, decisions, checks = cur.execute(
                "SELECT (SELECT count(*) FROM decisions) + (SELECT count(*) FROM rewards), "
                "(SELECT count(*) FROM decisions), (SELECT count(*) FROM checks)").fetchall()[0]
            live = sum(b.spans for b in on if b.name == "otel")
            writer.close()
            closing = time.perf_counter()
            for bridge in on:
                bridge.close()
            closing = time.perf_counter() - closing
            for bridge in on:
                # The bridges did their work: every decision and check became a span.
                if bridge.name == "otel" and (bridge.spans, bridge.exporter.sent) != (
                        decisions, decisions + checks):
                    raise RuntimeError(f"otel: {bridge.spans} of {decisions} decisions and "
                                       f"{bridge.exporter.sent} spans sent")
            if on:
                print(f"bridges on: {live} of {decisions} decisions built as "
                      f"spans during the drain, the rest at close; closing the bridges took "
                      f"{closing:.1f} s", file=sys.stderr)
        if stored != preload:
            raise RuntimeError(f"drain stored {stored} of {preload} events")
        return stored / elapsed, stored
    finally:
        for process in (proc, receiver):
            if process is not None:
                process.terminate()
                process.wait()


class _Receiver(http.server.BaseHTTPRequestHandler):
    """An OTLP HTTP receiver that takes every export and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


BRIDGES = ("prometheus", "tensorboard", "wandb", "otel")


def serve_otlp(port: int) -> None:
    http.server.ThreadingHTTPServer(("127.0.0.1", port), _Receiver).serve_forever()


def wait_listening(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def every_bridge(folder: Path, names: tuple[str, ...], otlp_port: int | None) -> list[Any]:
    from tractatus_watch.monitor.otel_bridge import OtelBridge
    from tractatus_watch.monitor.prometheus_bridge import PrometheusBridge
    from tractatus_watch.monitor.tracker_bridge import TensorBoardBridge, WandbBridge

    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    made = {"prometheus": lambda: PrometheusBridge("127.0.0.1", free_port()),
            "tensorboard": lambda: TensorBoardBridge(folder / "tb"),
            "wandb": lambda: WandbBridge("tractatus-watch-bench"),
            "otel": lambda: OtelBridge(f"http://127.0.0.1:{otlp_port}/v1/traces")}
    return [made[name]() for name in names]


def bridge_figures(preload: int, workdir: Path, repeats: int,
                   names: tuple[str, ...] = BRIDGES) -> dict[str, float]:
    """Drain with every bridge on and off, alternating in the same run: medians and ratio."""
    off: list[float] = []
    on: list[float] = []
    for i in range(repeats):
        off.append(measure_drain(preload, workdir, name=f"off{i}")[0])
        on.append(measure_drain(preload, workdir, bridges=names, name=f"on{i}")[0])
    # Each pair ran back to back: the median of the pairs' ratios follows the machine's load
    # better than the ratio of the medians.
    ratios = [a / b for a, b in zip(on, off)]
    ratio = statistics.median(ratios)
    figures = {"drain_bridges_off_events_per_s": statistics.median(off),
               "drain_bridges_on_events_per_s": statistics.median(on),
               "drain_bridges_ratio": ratio}
    print(f"drain with bridges {','.join(names)} on: {figures['drain_bridges_on_events_per_s']:.0f}"
          f" events/s, off: {figures['drain_bridges_off_events_per_s']:.0f} (medians of "
          f"{repeats} pairs; median on/off of a pair {ratio:.3f}; target >= 0.90; the pairs: "
          f"{', '.join(f'{r:.3f}' for r in ratios)}; load {os.getloadavg()[0]:.1f})",
          file=sys.stderr)
    return figures


def measure_bridge_lag(rate: float, seconds: float, workdir: Path) -> dict[str, float]:
    """Every bridge on while a client POSTs decisions through the gateway tap at `rate` (a
    training job's pace, not the drain's flat out): how far behind what is stored the spans
    (built by the export process) and the Prometheus counters (as scraped) are, in seconds of
    data at that rate, sampled twice a second over the second half of the run."""
    with Store.open(workdir / "lag.duckdb") as store:
        writer = Writer(store, flush_interval_s=0.2)
        tap = GatewayTap(writer_sink(writer, "bench"), port=0, key=os.environ[KEY_ENV],
                         batch_interval_s=0.05)
        otlp_port = free_port()
        on = {b.name: b for b in every_bridge(workdir / "lag", BRIDGES, otlp_port)}
        ctx = BridgeContext(store, lambda: writer.runs_written, lambda: [])
        span_lag: list[float] = []
        metric_lag: list[float] = []
        receiver = spawn("--otlp-receiver", str(otlp_port))
        tap.start()
        try:
            wait_listening(otlp_port)
            for bridge in on.values():
                bridge.start(ctx)
            (r,) = request(tap.port, "POST", "/api/rollouts", [{"input": {}}])
            poster = spawn("--post", str(tap.port), str(rate), str(seconds), r["rollout_id"])
            cur = store.cursor()
            started = time.monotonic()
            while poster.poll() is None:
                time.sleep(0.5)
                if time.monotonic() - started < seconds / 2:
                    continue
                (stored,), = cur.execute("SELECT count(*) FROM decisions").fetchall()
                scraped = prometheus_actions(on["prometheus"].url)
                span_lag.append((stored - on["otel"].spans) / rate)
                metric_lag.append((stored - scraped) / rate)
        finally:
            tap.stop()
            writer.close()
            for bridge in on.values():
                bridge.close()
            receiver.terminate()
            receiver.wait()
    figures = {"bridges_span_lag_p50_s": statistics.median(span_lag),
               "bridges_span_lag_max_s": max(span_lag),
               "bridges_metrics_lag_p50_s": statistics.median(metric_lag),
               "bridges_metrics_lag_max_s": max(metric_lag)}
    print(f"bridges at {rate:.0f} decisions/s for {seconds:.0f} s: spans behind the store by "
          f"{figures['bridges_span_lag_p50_s']:.1f} s of data (median; max "
          f"{figures['bridges_span_lag_max_s']:.1f}), Prometheus counters by "
          f"{figures['bridges_metrics_lag_p50_s']:.1f} s (max "
          f"{figures['bridges_metrics_lag_max_s']:.1f}); load {os.getloadavg()[0]:.1f}",
          file=sys.stderr)
    return figures


def prometheus_actions(url: str) -> float:
    """The sum of tractatus_actions_total as a scrape shows it."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tractatus_actions_total{"))


def measure_latency(rate: float, seconds: float, workdir: Path) -> tuple[float, float, int]:
    with Store.open(workdir / "latency.duckdb") as store:
        writer = Writer(store, flush_interval_s=0.02)
        tap = GatewayTap(writer_sink(writer, "bench"), port=0, key=os.environ[KEY_ENV],
                         batch_interval_s=0.02)
        tap.start()
        latencies: list[float] = []
        stop = threading.Event()

        def watch() -> None:
            cur = store.cursor()
            last = ""
            while not stop.is_set():
                rows = cur.execute("SELECT decision_id, epoch_us(ts) FROM decisions WHERE "
                                   "decision_id > ? ORDER BY decision_id", [last]).fetchall()
                now = time.time()
                for did, ts_us in rows:
                    latencies.append(now - ts_us / 1e6)
                    last = did
                time.sleep(0.02)  # a tight reader loop would slow the writer it measures

        try:
            (r,) = request(tap.port, "POST", "/api/rollouts", [{"input": {}}])
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            poster = spawn("--post", str(tap.port), str(rate), str(seconds), r["rollout_id"])
            poster.wait()
            deadline = time.monotonic() + 10
            expected = int(rate * seconds)
            while len(latencies) < expected and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            watcher.join(5)
        finally:
            tap.stop()
            writer.close()
    if len(latencies) != expected:
        raise RuntimeError(f"saw {len(latencies)} of {expected} rows")
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return p50, p99, len(latencies)


def quantile_ms(sorted_s: list[float], q: float) -> float:
    return sorted_s[min(len(sorted_s) - 1, int(len(sorted_s) * q))] * 1000


def measure_durability(workdir: Path, clients: int, seconds: float, durable: bool
                       ) -> dict[str, float]:
    """One gateway process (fresh database), one client process: p50/p99 latency and
    accepted POSTs/s."""
    port = free_port()
    tag = "durable" if durable else "nowait"
    db = workdir / f"{tag}-c{clients}.duckdb"
    proc = spawn("--tap", str(port), str(db),
                 str(workdir / f"{tag}-c{clients}.wal") if durable else "none")
    try:
        wait_up(port)
        poster = subprocess.run([sys.executable, __file__, "--flat-out", str(port), str(seconds),
                                 str(clients)], env=os.environ.copy(), capture_output=True,
                                text=True, check=True)
        out = json.loads(poster.stdout.strip().splitlines()[-1])
    finally:
        proc.terminate()
        proc.wait()
    lat = sorted(out["latencies"])
    if out["refused"] or not lat:
        raise RuntimeError(f"{tag}: {out['refused']} POSTs refused, {len(lat)} accepted")
    with Store.open(db, read_only=True) as store:
        stored = store.cursor().execute("SELECT count(*) FROM decisions").fetchall()[0][0]
    if stored < len(lat):
        raise RuntimeError(f"{tag}: {len(lat)} POSTs accepted but {stored} decisions stored")
    return {"p50_ms": quantile_ms(lat, 0.5), "p99_ms": quantile_ms(lat, 0.99),
            "posts_per_s": len(lat) / seconds}


def durability_figures(workdir: Path, clients: list[int], seconds: float) -> dict[str, float]:
    figures: dict[str, float] = {}
    for c in clients:
        runs = {tag: measure_durability(workdir, c, seconds, tag == "durable")
                for tag in ("nowait", "durable")}
        for tag, got in runs.items():
            for name, value in got.items():
                figures[f"{tag}_c{c}_{name}"] = value
        ratio = runs["durable"]["posts_per_s"] / runs["nowait"]["posts_per_s"]
        figures[f"durable_c{c}_posts_ratio"] = ratio
        print(f"durability, {c} client(s): with the log and the wait p50 "
              f"{runs['durable']['p50_ms']:.2f} ms, p99 {runs['durable']['p99_ms']:.2f} ms, "
              f"{runs['durable']['posts_per_s']:.0f} POSTs/s; without p50 "
              f"{runs['nowait']['p50_ms']:.2f} ms, p99 {runs['nowait']['p99_ms']:.2f} ms, "
              f"{runs['nowait']['posts_per_s']:.0f} POSTs/s; ratio {ratio:.2f}",
              file=sys.stderr)
    return figures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--otlp-receiver":
        serve_otlp(int(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--tap":
        serve_tap(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--flat-out":
        post_flat_out(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--post":
        post_paced(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
        return
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preload", type=int, default=20_000, help="events preloaded for drain")
    ap.add_argument("--accept-events", type=int, default=3_000)
    ap.add_argument("--rate", type=float, default=300.0, help="events/s for the latency run")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=4,
                    help="client threads for the durability run (besides 1)")
    ap.add_argument("--durable-seconds", type=float, default=5.0)
    ap.add_argument("--only-durability", action="store_true")
    ap.add_argument("--only-bridges", action="store_true")
    ap.add_argument("--bridge-repeats", type=int, default=5)
    ap.add_argument("--bridge-preload", type=int, default=100_000,
                    help="events preloaded for each drain of the bridges run (long enough "
                         "for the bridges to poll several times)")
    ap.add_argument("--bridge-rate", type=float, default=1000.0,
                    help="decisions/s for the bridges' lag at a training job's pace")
    ap.add_argument("--bridge-seconds", type=float, default=20.0)
    ap.add_argument("--bridges", default=",".join(BRIDGES),
                    help="the bridges on in the bridges run (comma list)")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault(KEY_ENV, secrets.token_hex(16))  # a throwaway key, never printed
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        workdir = Path(tmp)
        bridges = bridge_figures(args.bridge_preload, workdir, args.bridge_repeats,
                                 tuple(args.bridges.split(",")))
        bridges |= measure_bridge_lag(args.bridge_rate, args.bridge_seconds, workdir)
        if args.only_bridges:
            last_line(bridges)
            return
        durability = durability_figures(workdir, sorted({1, args.clients}),
                                        args.durable_seconds)
        if args.only_durability:
            last_line(durability)
            return
        accept, bare = measure_accept(args.accept_events)
        print(f"accept: {accept:.0f} events/s POSTed by one Agent Lightning client "
              f"(gateway ceiling with a bare keep-alive connection: {bare:.0f}/s)",
              file=sys.stderr)
        drain, stored = measure_drain(args.preload, workdir)
        print(f"drain: {drain:.0f} events/s stored ({stored} events); "
              f"{drain / bare:.1f} x the bare-connection ceiling", file=sys.stderr)
        p50, p99, n = measure_latency(args.rate, args.seconds, workdir)
        print(f"latency at {args.rate:.0f} events/s through the gateway tap: p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms ({n} events)", file=sys.stderr)
    last_line({"accept_events_per_s": accept, "drain_events_per_s": drain,
               "ratio": drain / accept, "latency_p50_ms": p50, "latency_p99_ms": p99,
               **durability, **bridges})


if __name__ == "__main__":
    main()
