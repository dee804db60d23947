"""Many `collect` processes writing one DuckLake store (PostgreSQL catalog on 127.0.0.1) at once.

Four real Agent Lightning gateways (`agl-server`), each fed 50,000 governance decisions for its
own run while four `tractatus-watch collect --agl URL --run RUN` processes poll them into one
lake, and a reader in another DuckDB instance queries the lake all the while. Afterwards: exact
counts, nothing twice, the reader's counts never went backwards, and in every snapshot it saw,
rows, their rollups and their checks agreed. Then three collectors capture the same run from
the same gateway, and it is still stored exactly once; and a run replayed later through a
second gateway stores each decision and reward once.

The decisions travel as the Governor's sender posts them: `tractatus.decisions` events of up
to 100 decisions (`Sender.max_per_event`), in rollouts that run and then succeed, with one
reward each. Nothing deletes rollouts here, so the poller cannot miss any: every count is exact.

`TW_TEST_LAKE_DECISIONS=N` shrinks the per-run count for a quick local run; it is ignored when
`CI` is set, so CI always runs the issue's numbers.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tractatus_watch.storage.store import Store

from .collectors.conftest import AglServer, decision_payload

pytestmark = pytest.mark.slow

PER_EVENT = 100           # decisions per `tractatus.decisions` event (the sender's default)
EVENTS_PER_ROLLOUT = 5    # so a rollout holds 500 decisions
ROUNDS = 10


def _per_run_decisions() -> int:
    wanted = os.environ.get("TW_TEST_LAKE_DECISIONS")
    if wanted and not os.environ.get("CI"):
        n = int(wanted)
        assert n > 0 and n % (PER_EVENT * EVENTS_PER_ROLLOUT) == 0, \
            f"TW_TEST_LAKE_DECISIONS must be a multiple of {PER_EVENT * EVENTS_PER_ROLLOUT}"
        return n
    return 50_000


# --- the governed job: what each gateway receives, and what must be stored ---------------------

@dataclass
class Expected:
    decisions: int = 0
    checks: int = 0
    blocked: int = 0
    rewards: int = 0
    reward_sum: float = 0.0
    rollouts: int = 0


@dataclass
class Feed:
    """One training run's traffic into one gateway: rollouts enqueued with their round stamped,
    played by `agents` agents at once (running, decisions in packed events, a reward,
    succeeded). What must be stored is counted in `expected` as it is sent."""

    server: AglServer
    tag: str                     # makes decision ids unique to this feed
    rollouts: int
    agents: int = 4
    expected: Expected = field(default_factory=Expected)
    seconds: float = 0.0
    cpu_s: float = 0.0           # CPU of the feeding threads (building, encoding, posting)
    record: bool = False         # keep every request, to replay them into another gateway
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _send(self, c: httpx.Client, method: str, path: str, **kw: Any) -> None:
        c.request(method, path, **kw).raise_for_status()
        if self.record:
            with self._lock:
                self.requests.append((method, path, kw))

    def replay(self, server: AglServer) -> None:
        """The same requests, in the same order per rollout, into `server`."""
        with server.client() as c:
            for method, path, kw in self.requests:
                c.request(method, path, **kw).raise_for_status()

    def _decision(self, rid: str, index: int, k: int, sent: Expected) -> dict[str, Any]:
        blocked = (index + k) % 7 == 0
        d = decision_payload(f"{self.tag}-{rid}-d{k}", f"agent-{index % 5}",
                             verdict="block" if blocked else "allow", agent_round=index % ROUNDS)
        if k % 4 == 0:  # a second, shadow check on every fourth action
            d["checks"].append({"service": "CrossReferenceValidator", "rule_id": "inst_008",
                                "verdict": "allow", "raw_verdict": "ALLOW", "enforced": False,
                                "latency_us": 120})
        sent.decisions += 1
        sent.checks += len(d["checks"])
        sent.blocked += int(blocked)
        return d

    def _play(self, c: httpx.Client, index: int, rid: str) -> None:
        cpu = time.thread_time()
        sent = Expected()
        events = f"/api/rollouts/{rid}/attempt/a0/events"
        self._send(c, "PATCH", f"/api/rollouts/{rid}", json={"status": {
            "state": "running", "last_attempt_id": "a0"}})
        for e in range(EVENTS_PER_ROLLOUT):
            decisions = [self._decision(rid, index, e * PER_EVENT + j, sent)
                         for j in range(PER_EVENT)]
            content = json.dumps({"event_type": "tractatus.decisions", "data": {
                "schema": "tractatus.decisions/1", "decisions": decisions}},
                separators=(",", ":"))
            self._send(c, "POST", events, content=content,
                       headers={"content-type": "application/json"})
        value = 0.25 + (index % 4) / 8
        self._send(c, "POST", events, json={"event_type": "reward", "data": {"value": value}})
        self._send(c, "PATCH", f"/api/rollouts/{rid}", json={"status": {"state": "succeeded"}})
        with self._lock:
            x = self.expected
            x.decisions += sent.decisions
            x.checks += sent.checks
            x.blocked += sent.blocked
            x.rewards += 1
            x.reward_sum += value
            x.rollouts += 1
            self.cpu_s += time.thread_time() - cpu

    def run(self) -> None:
        started = time.perf_counter()
        with self.server.client() as c:
            per_round = max(1, self.rollouts // ROUNDS)
            body = [{"input": {"i": i}, "metadata": {"tractatus_watch": {
                "round": i // per_round, "group": f"g{i // 2}"}}} for i in range(self.rollouts)]
            r = c.post("/api/rollouts", json=body)
            r.raise_for_status()
            rids = [x["rollout_id"] for x in r.json()]
            assert len(rids) == self.rollouts
            if self.record:  # a replay enqueues the same rollout ids
                self.requests.append(("POST", "/api/rollouts", {"json": [
                    {**item, "rollout_id": rid} for item, rid in zip(body, rids)]}))
            with ThreadPoolExecutor(self.agents) as pool:
                list(pool.map(lambda a: self._play(c, *a), enumerate(rids)))
        self.seconds = time.perf_counter() - started


# --- collectors as a user runs them ------------------------------------------------------------

class Collector:
    """`tractatus-watch collect --agl URL... --run RUN --store SPEC --data-path DIR`, the key in
    the environment only, logs to files (a pipe nobody reads would stall it)."""

    def __init__(self, workdir: Path, name: str, urls: list[str], key: str, run: str,
                 spec: str, data: str) -> None:
        self.name, self.key = name, key
        self.out, self.err = workdir / f"{name}.out", workdir / f"{name}.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_WATCH")}
        env["AGL_KEY"] = key
        args = [sys.executable, "-m", "tractatus_watch", "collect"]
        for url in urls:
            args += ["--agl", url]
        args += ["--run", run, "--store", spec, "--data-path", data]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=err)

    def log_tail(self, lines: int = 15) -> str:
        text = self.err.read_text(errors="replace") if self.err.exists() else ""
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n" + "\n".join(
            text.splitlines()[-lines:])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(90)
        except subprocess.TimeoutExpired as err:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.name} did not stop within 90 s of SIGINT\n"
                                 + self.log_tail()) from err

    def check_logs(self) -> None:
        out = self.out.read_text(errors="replace")
        err = self.err.read_text(errors="replace")
        assert self.key not in out + err, f"{self.name} printed the key"
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines, f"{self.name} logged nothing"
        for line in lines:
            record = json.loads(line)  # every stderr line is a JSON log record
            assert record["level"] != "error", f"{self.name}: {line}"


# --- the reader ---------------------------------------------------------------------------------

# One statement is one snapshot: rows, their rollups and their checks must agree in every one.
SNAPSHOT_SQL = """
SELECT d.run_id, d.n, d.n_checks, coalesce(r.actions, 0), coalesce(c.n, 0)
FROM (SELECT run_id, count(*) AS n, sum(n_checks) AS n_checks FROM decisions GROUP BY ALL) d
LEFT JOIN (SELECT run_id, sum(actions) AS actions FROM rollup_agent GROUP BY ALL) r
    USING (run_id)
LEFT JOIN (SELECT run_id, count(*) AS n FROM checks GROUP BY ALL) c USING (run_id)
"""


def stop_cleanly(collectors: list[Collector]) -> None:
    """SIGINT every collector: each exits 0, and its logs hold no key and no error."""
    codes = {c.name: c.stop() for c in collectors}
    assert codes == {c.name: 0 for c in collectors}, "\n".join(c.log_tail() for c in collectors)
    for c in collectors:
        c.check_logs()


def kill_leftovers(collectors: list[Collector]) -> None:
    for c in collectors:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait(10)


@dataclass
class Poll:
    at: float
    counts: dict[str, int]
    torn: list[tuple[Any, ...]]   # runs whose rows, rollups and checks disagreed


class Reader(threading.Thread):
    """Queries the lake from its own read-only DuckDB instance until stopped; each poll is a
    fresh cursor, so a fresh transaction on the newest snapshot."""

    def __init__(self, spec: str, interval_s: float = 0.2) -> None:
        super().__init__(name="lake-reader", daemon=True)
        self.spec, self.interval_s = spec, interval_s
        self.polls: list[Poll] = []
        self.errors: list[str] = []
        self.startup_errors: list[str] = []
        self.halt = threading.Event()
        self.cpu_s = 0.0

    def latest(self) -> dict[str, int]:
        return dict(self.polls[-1].counts) if self.polls else {}

    def run(self) -> None:
        store: Store | None = None
        while not self.halt.is_set():
            try:
                if store is None:
                    store = Store.open(self.spec, read_only=True)
                    # One DuckDB thread: all of the reader's work is on this thread's clock,
                    # and it takes at most one of the machine's cores from the writers.
                    store.con.execute("SET threads = 1")
                cur = store.cursor()
                try:
                    rows = cur.execute(SNAPSHOT_SQL).fetchall()
                finally:
                    cur.close()
                self.polls.append(Poll(
                    at=time.monotonic(), counts={r[0]: int(r[1]) for r in rows},
                    torn=[r for r in rows if not (r[1] == r[3] and r[2] == r[4])]))
            except Exception as exc:  # noqa: BLE001
                # Until the first collector has created the lake and its schema there is
                # nothing to attach or read; after that, every poll must succeed.
                (self.errors if self.polls else self.startup_errors).append(
                    f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                if store is not None:
                    store.close()
                    store = None
                if not self.polls:
                    self.halt.wait(0.5)  # each attach attempt costs a second of CPU
            self.halt.wait(self.interval_s)
            self.cpu_s = time.thread_time()
        if store is not None:
            store.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def wait_for_counts(reader: Reader, want: dict[str, int], collectors: list[Collector],
                    timeout_s: float) -> float:
    """Until the reader has seen every run at its expected count; returns when that was."""
    deadline = time.monotonic() + timeout_s
    while True:
        latest = reader.latest()
        if all(latest.get(run) == n for run, n in want.items()):
            return reader.polls[-1].at
        over = {run: n for run, n in latest.items() if n > want.get(run, 0)}
        assert not over, f"more decisions stored than sent: {over}, sent {want}"
        dead = [c for c in collectors if c.proc.poll() is not None]
        if dead or time.monotonic() > deadline:
            why = "a collector exited" if dead else f"not done after {timeout_s:.0f} s"
            pytest.fail(f"{why}: stored {latest}, expected {want}; reader errors "
                        f"{reader.errors[-3:]}\n" + "\n".join(c.log_tail() for c in collectors))
        time.sleep(0.1)


def make_servers(tmp_path: Path, n: int) -> list[AglServer]:
    servers = []
    for k in range(n):
        workdir = tmp_path / f"agl{k}"
        workdir.mkdir()
        servers.append(AglServer(workdir, "test-" + secrets.token_hex(12)))
    return servers


def wait_until_up(servers: list[AglServer], starting: list[Any],
                  collectors: list[Collector], timeout_s: float = 120) -> None:
    """Gateways healthy and every collector polling (it logs "source started" once its store
    is open and migrated)."""
    for f in starting:
        f.result(timeout_s)
    deadline = time.monotonic() + timeout_s
    for c in collectors:
        while '"source started"' not in c.err.read_text(errors="replace"):
            if c.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{c.name} did not start\n" + c.log_tail())
            time.sleep(0.1)


def rows(lake: Store, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """All rows of `sql`, through a fresh cursor (the lake's newest snapshot)."""
    cur = lake.cursor()
    try:
        return cur.execute(sql, list(params)).fetchall()
    finally:
        cur.close()


def poller_stats(lake: Store, url: str) -> list[dict[str, Any]]:
    """Every cursor the pollers of `url` committed, oldest first."""
    return [json.loads(v[0]) for v in rows(
        lake, "SELECT cursor FROM ingest_state WHERE source = ? ORDER BY updated_at",
        f"agl:{url}")]


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> list[float]:
    """CPU seconds (user + system) each process has used so far (start-up included)."""
    import psutil

    out = []
    for proc in procs:
        t = psutil.Process(proc.pid).cpu_times()
        out.append(round(t.user + t.system, 1))
    return out


def throughput(polls: list[Poll], run: str, total: int) -> tuple[float, float]:
    """(seconds from the first stored row of `run` to its last, decisions per second)."""
    first = next(p.at for p in polls if p.counts.get(run, 0) > 0)
    done = next(p.at for p in polls if p.counts.get(run, 0) >= total)
    seconds = max(done - first, 1e-3)
    return seconds, total / seconds


# --- the tests -----------------------------------------------------------------------------------

def test_four_collectors_each_store_their_run_exactly_once_while_a_reader_watches(
        lake, tmp_path: Path) -> None:
    spec, data = lake
    per_run = _per_run_decisions()
    runs = [f"run-{k}" for k in range(4)]
    servers = make_servers(tmp_path, 4)
    collectors: list[Collector] = []
    reader = Reader(spec)
    boot = ThreadPoolExecutor(4)
    began = time.monotonic()
    try:
        starting = [boot.submit(s.start, 120) for s in servers]
        # The collectors start together on an empty lake (racing to create its catalog and
        # schema) while their gateways are still coming up.
        collectors = [Collector(tmp_path, f"collect-{k}", [s.url], s.key, runs[k], spec, data)
                      for k, s in enumerate(servers)]
        wait_until_up(servers, starting, collectors)
        reader.start()
        feeds = [Feed(s, tag=runs[k], rollouts=per_run // (PER_EVENT * EVENTS_PER_ROLLOUT))
                 for k, s in enumerate(servers)]
        t0 = time.monotonic()
        up = t0 - began
        with ThreadPoolExecutor(len(feeds)) as pool:  # all four runs train at once
            list(pool.map(Feed.run, feeds))
        fed = time.monotonic() - t0
        assert all(f.expected.decisions == per_run for f in feeds)
        done = wait_for_counts(reader, dict.fromkeys(runs, per_run), collectors,
                               timeout_s=150)
        time.sleep(1.5)  # a few more polls of the settled lake (nothing may change now)
        reader.stop()
        cpu = {"gateways": cpu_seconds([s.proc for s in servers]),
               "collectors": cpu_seconds([c.proc for c in collectors]),
               "feeders": [round(f.cpu_s, 1) for f in feeds], "reader": round(reader.cpu_s, 1)}
        t1 = time.monotonic()
        stop_cleanly(collectors)
        stopping = time.monotonic() - t1
    finally:
        reader.stop()
        kill_leftovers(collectors)
        boot.shutdown()
        for s in servers:
            s.stop()

    # The reader: many polls while the collectors wrote, never a count going back, never a
    # snapshot with rows and their rollups or checks out of step.
    polls = reader.polls
    assert not reader.errors, reader.errors[:5]
    assert len(polls) >= 20, f"only {len(polls)} polls"
    partial = [p for p in polls if any(0 < p.counts.get(r, 0) < per_run for r in runs)]
    assert len(partial) >= 5, "the reader hardly saw ingestion in progress"
    for a, b in zip(polls, polls[1:]):
        for run in runs:
            assert b.counts.get(run, 0) >= a.counts.get(run, 0), \
                f"{run}: the reader's count went back from {a.counts.get(run)} to " \
                f"{b.counts.get(run)}"
    torn = [p.torn for p in polls if p.torn]
    assert not torn, f"snapshots where rows, rollups and checks disagree: {torn[:3]}"
    assert polls[-1].counts == dict.fromkeys(runs, per_run)

    # Exact counts, nothing twice.
    with Store.open(spec, read_only=True) as view:
        exact_counts(view, runs, feeds, per_run, servers)

    # Throughput (reported, never asserted: CI machines differ).
    per = [throughput(polls, run, per_run) for run in runs]
    first = min(next(p.at for p in polls if p.counts.get(run, 0) > 0) for run in runs)
    aggregate = 4 * per_run / max(done - first, 1e-3)
    print(f"\nlake collect: 4 gateways + 4 collectors up in {up:.1f} s; "
          f"fed 4 x {per_run} decisions in {fed:.1f} s; all stored {done - t0 - fed:.1f} s "
          f"after the last was sent; SIGINT to exit {stopping:.1f} s; "
          f"stored per collector "
          + ", ".join(f"{n / 1000:.1f}k/s over {s:.1f} s" for s, n in per)
          + f"; aggregate {aggregate / 1000:.1f}k decisions/s; reader {len(polls)} polls; "
          f"CPU seconds {cpu}")


def exact_counts(view: Store, runs: list[str], feeds: list[Feed], per_run: int,
                 servers: list[AglServer]) -> None:
    got = rows(view, """
        SELECT run_id, count(*), count(DISTINCT decision_id), count_if(attempted AND NOT executed),
               sum(n_checks)
        FROM decisions GROUP BY ALL ORDER BY ALL""")
    assert got == [(run, per_run, per_run, f.expected.blocked, f.expected.checks)
                   for run, f in zip(runs, feeds)]
    got = rows(view, """
        SELECT run_id, count(*), count(DISTINCT (decision_id, idx)) FROM checks
        GROUP BY ALL ORDER BY ALL""")
    assert got == [(run, f.expected.checks, f.expected.checks) for run, f in zip(runs, feeds)]
    got = rows(view, """
        SELECT run_id, sum(actions), sum(blocked), sum(reward_n), round(sum(reward_sum), 6),
               count(DISTINCT round)
        FROM rollup_agent GROUP BY ALL ORDER BY ALL""")
    assert got == [(run, per_run, f.expected.blocked, f.expected.rewards,
                    round(f.expected.reward_sum, 6), ROUNDS) for run, f in zip(runs, feeds)]
    got = rows(view, "SELECT run_id, sum(checks) FROM rollup_rule GROUP BY ALL ORDER BY ALL")
    assert got == [(run, f.expected.checks) for run, f in zip(runs, feeds)]
    got = rows(view, "SELECT run_id, count(*), count(DISTINCT reward_id) FROM rewards "
                     "GROUP BY ALL ORDER BY ALL")
    assert got == [(run, f.expected.rewards, f.expected.rewards) for run, f in zip(runs, feeds)]
    got = rows(view, """
        SELECT run_id, count(DISTINCT rollout_id), count(*) = count(DISTINCT (rollout_id, status)),
               count_if(status = 'succeeded')
        FROM rollouts GROUP BY ALL ORDER BY ALL""")
    assert got == [(run, f.rollouts, True, f.rollouts) for run, f in zip(runs, feeds)]
    assert rows(view, "SELECT run_id FROM runs ORDER BY 1") == [(r,) for r in runs]
    assert rows(view, "SELECT count(*) FROM quarantine") == [(0,)]
    # Each poller's last committed cursor: every rollout captured, none missed.
    for s, f in zip(servers, feeds):
        last = poller_stats(view, s.url)[-1]
        assert (last["seen"], last["captured"], last["missed"], last["decisions"]) == (
            f.rollouts, f.rollouts, 0, per_run)


def test_collectors_sharing_a_run_and_a_gateway_store_it_once(lake, tmp_path: Path) -> None:
    """Three collectors, one run, one gateway: each reads every decision, the lake holds each
    once (per-run locks make the writers take turns; the natural-key check drops the rest)."""
    spec, data = lake
    per_run = 10_000
    [server] = make_servers(tmp_path, 1)
    collectors: list[Collector] = []
    reader = Reader(spec)
    boot = ThreadPoolExecutor(1)
    watch: Store | None = None
    try:
        starting = [boot.submit(server.start, 120)]
        collectors = [Collector(tmp_path, f"same-{k}", [server.url], server.key, "shared",
                                spec, data) for k in range(3)]
        wait_until_up([server], starting, collectors)
        watch = Store.open(spec, read_only=True)  # the collectors have created it
        reader.start()
        feed = Feed(server, tag="shared", rollouts=per_run // (PER_EVENT * EVENTS_PER_ROLLOUT))
        feed.run()
        wait_for_counts(reader, {"shared": per_run}, collectors, timeout_s=90)
        # Every collector has read everything (its own cursor row says so) before we stop them,
        # so each decision really was delivered three times.
        deadline = time.monotonic() + 60
        while True:
            finals = [c for c in poller_stats(watch, server.url)
                      if c["captured"] == feed.rollouts and c["decisions"] == per_run]
            # each collector commits its final cursor once it has read the last rollout
            if len(finals) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(1.5)
        reader.stop()
        stop_cleanly(collectors)
    finally:
        reader.stop()
        kill_leftovers(collectors)
        boot.shutdown()
        server.stop()
        if watch is not None:
            watch.close()

    assert len(finals) >= 3, f"not every collector read the whole run: {finals}"
    assert not reader.errors, reader.errors[:5]
    counts = [p.counts.get("shared", 0) for p in reader.polls]
    assert all(b >= a for a, b in zip(counts, counts[1:])), counts
    assert not [p.torn for p in reader.polls if p.torn]
    exp = feed.expected
    with Store.open(spec, read_only=True) as view:
        assert rows(view, "SELECT count(*), count(DISTINCT decision_id), sum(n_checks), "
                          "count_if(attempted AND NOT executed) FROM decisions") == [
            (per_run, per_run, exp.checks, exp.blocked)]
        assert rows(view, "SELECT count(*), count(DISTINCT (decision_id, idx)) FROM checks") == [
            (exp.checks, exp.checks)]
        assert rows(view, "SELECT sum(actions), sum(blocked), sum(reward_n) FROM rollup_agent") == [
            (per_run, exp.blocked, exp.rewards)]
        assert rows(view, "SELECT sum(checks) FROM rollup_rule") == [(exp.checks,)]
        assert rows(view, "SELECT count(*), count(DISTINCT reward_id) FROM rewards") == [
            (exp.rewards, exp.rewards)]
        assert rows(view, "SELECT count(*) = count(DISTINCT (rollout_id, status)), "
                          "count(DISTINCT rollout_id), count_if(status = 'succeeded') "
                          "FROM rollouts") == [(True, feed.rollouts, feed.rollouts)]
        assert rows(view, "SELECT run_id FROM runs") == [("shared",)]


def wait_until(cond: Any, what: str, collectors: list[Collector], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        dead = [c for c in collectors if c.proc.poll() is not None]
        if dead or time.monotonic() > deadline:
            pytest.fail(f"{'a collector exited' if dead else 'timed out'} waiting for {what}\n"
                        + "\n".join(c.log_tail() for c in collectors))
        time.sleep(0.2)


def test_a_run_replayed_through_a_second_gateway_stores_each_decision_once(
        lake, tmp_path: Path) -> None:
    """The same rollouts (same ids, same decision payloads) reach a second gateway after the
    first was collected, as a replay or backfill would; one collector on each gateway, one run.

    Decisions and checks carry their own `ts` in the payload, so the writer's windowed collision
    check finds the second copy. A reward's `ts` is the gateway's event time, which differs
    between the two gateways: rewards are checked against the whole run instead (this test
    found that they were stored twice while they were windowed too)."""
    spec, data = lake
    rollouts = 10
    a, b = make_servers(tmp_path, 2)
    collectors: list[Collector] = []
    boot = ThreadPoolExecutor(2)
    watch: Store | None = None
    try:
        starting = [boot.submit(s.start, 120) for s in (a, b)]
        collectors = [Collector(tmp_path, "first", [a.url], a.key, "replayed", spec, data),
                      Collector(tmp_path, "second", [b.url], b.key, "replayed", spec, data)]
        wait_until_up([a, b], starting, collectors)
        watch = Store.open(spec, read_only=True)  # the collectors have created it
        feed = Feed(a, tag="replayed", rollouts=rollouts, record=True)
        feed.run()
        per_run = feed.expected.decisions

        def captured(server: AglServer) -> bool:
            assert watch is not None
            stats = poller_stats(watch, server.url)
            return bool(stats) and (stats[-1]["captured"], stats[-1]["decisions"]) == (
                rollouts, per_run)

        wait_until(lambda: captured(a), "the first gateway's run to be stored", collectors, 90)
        feed.replay(b)
        wait_until(lambda: captured(b), "the replay to be read", collectors, 90)
        stop_cleanly(collectors)
    finally:
        kill_leftovers(collectors)
        boot.shutdown()
        a.stop()
        b.stop()
        if watch is not None:
            watch.close()

    exp = feed.expected
    with Store.open(spec, read_only=True) as view:
        assert per_run == rollouts * PER_EVENT * EVENTS_PER_ROLLOUT
        assert rows(view, "SELECT count(*), count(DISTINCT decision_id), sum(n_checks) "
                          "FROM decisions") == [(per_run, per_run, exp.checks)]
        assert rows(view, "SELECT count(*), count(DISTINCT (decision_id, idx)) FROM checks") == [
            (exp.checks, exp.checks)]
        assert rows(view, "SELECT sum(actions), sum(blocked) FROM rollup_agent") == [
            (per_run, exp.blocked)]
        assert rows(view, "SELECT sum(checks) FROM rollup_rule") == [(exp.checks,)]
        assert rows(view, "SELECT count(*) = count(DISTINCT (rollout_id, status)), "
                          "count(DISTINCT rollout_id) FROM rollouts") == [(True, rollouts)]
        assert rows(view, "SELECT run_id FROM runs") == [("replayed",)]
        [(stored, distinct, reward_n)] = rows(
            view, "SELECT count(*), count(DISTINCT reward_id), "
                  "(SELECT sum(reward_n) FROM rollup_agent) FROM rewards")
    assert distinct == exp.rewards == rollouts
    assert stored == distinct, f"{stored - distinct} of {distinct} rewards stored twice"
    assert reward_n == rollouts
