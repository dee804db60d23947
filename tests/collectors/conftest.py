"""Fixtures for the collector tests: the real `agl-server` (Agent Lightning 1.0.2) on 127.0.0.1 in
a subprocess (so a restart really loses its memory), and a real DuckDB store with its writer."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer

from support import clients

AGL_SERVER = Path(sys.executable).with_name("agl-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Until `url`/healthz answers 200 (bounded); a server that exits or never answers
    fails with the end of its log."""
    deadline = time.monotonic() + timeout_s
    with clients.client(timeout=0.5) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url} exited: {log.read_text()[-3000:]}")
            try:
                if c.get(f"{url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up: {log.read_text()[-3000:]}")


class AglServer:
    """`agl-server` as users run it, keyed through the environment (never on a command line)."""

    def __init__(self, workdir: Path, key: str, port: int | None = None,
                 command: list[str] | None = None) -> None:
        self.workdir = workdir
        self.key = key
        self.port = port or free_port()
        self.command = command or [str(AGL_SERVER)]  # what runs it (its arguments follow)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return clients.client(base_url=self.url, timeout=10,
                              headers={"Authorization": f"Bearer {self.key}"})

    def start(self, timeout_s: float = 30.0) -> None:
        log = open(self.workdir / "agl-server.log", "ab")
        self.proc = subprocess.Popen(
            [*self.command, "host=127.0.0.1", f"port={self.port}", "key=${oc.env:AGL_KEY}",
             f"hydra.run.dir={self.workdir / 'hydra'}", "hydra.output_subdir=null",
             "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"],
            env={**os.environ, "AGL_KEY": self.key}, stdout=log, stderr=log,
            cwd=self.workdir)
        log.close()
        wait_healthy(self.url, self.proc, self.workdir / "agl-server.log", timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class LogList(logging.Handler):
    """The log records of a logger, kept for a test to read."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def fields(self, msg: str) -> list[dict[str, object]]:
        return [getattr(r, "fields", {}) for r in self.records if msg in r.getMessage()]


@pytest.fixture
def poller_log() -> Iterator[LogList]:
    """What the poller logs (INFO and up) during the test."""
    logger = logging.getLogger("tractatus_watch.collectors.poller")
    handler, level = LogList(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def agl_key() -> str:
    return "test-" + secrets.token_hex(12)


@pytest.fixture
def agl_server(tmp_path: Path, agl_key: str) -> Iterator[AglServer]:
    server = AglServer(tmp_path, agl_key)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "tw.duckdb")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def writer(store: Store) -> Iterator[Writer]:
    w = Writer(store, flush_interval_s=0.05)
    try:
        yield w
    finally:
        w.close()


def count(store: Store, sql: str, *params: object) -> int:
    cur = store.cursor()
    try:
        return int(cur.execute(sql, list(params)).fetchall()[0][0])
    finally:
        cur.close()


@pytest.fixture
def q(store: Store):  # type: ignore[no-untyped-def]
    """q(sql, *params) -> all rows, through a reader cursor of the test's store."""

    def run(sql: str, *params: object) -> list[tuple[object, ...]]:
        cur = store.cursor()
        try:
            return cur.execute(sql, list(params)).fetchall()
        finally:
            cur.close()

    return run


# --- a simulated governed training run against a gateway -------------------------------------

def decision_payload(decision_id: str, agent: str, *, verdict: str = "allow",
                     agent_round: int = 0) -> dict[str, object]:
    return {"schema": "tractatus.decision/1", "decision_id": decision_id, "agent_id": agent,
            "round": agent_round, "arm": "governed", "mode": "enforce",
            "action": {"kind": "publish", "summary": decision_id},
            "checks": [{"service": "BoundaryEnforcer", "rule_id": "inst_017", "verdict": verdict,
                        "raw_verdict": verdict.upper(), "enforced": True, "latency_us": 250}],
            "verdict": verdict, "executed": verdict != "block", "latency_us": 300,
            "ts": time.time()}


class Training:
    """Trainer + agents + a consumer that deletes each rollout `delete_after_s` after it ends
    (what the verl trainer does). Ground truth is kept in `expected`."""

    def __init__(self, url: str, key: str, *, run_id: str = "sim", decisions: int = 4,
                 agents: int = 8, step_s: float = 0.02, delete_after_s: float | None = 1.0,
                 fail_every: int = 0, instant_delete_every: int = 0) -> None:
        import threading

        self.url, self.key, self.run_id = url, key, run_id
        self.decisions, self.agents, self.step_s = decisions, agents, step_s
        self.delete_after_s = delete_after_s
        self.fail_every = fail_every
        self.instant_delete_every = instant_delete_every
        self.expected: dict[str, dict[str, object]] = {}
        self._lock = threading.Lock()
        self._done: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._consumer: threading.Thread | None = None
        self.instant: set[str] = set()  # deleted the moment they ended

    def client(self) -> httpx.Client:
        return clients.client(base_url=self.url, timeout=10,
                              headers={"Authorization": f"Bearer {self.key}"})

    def start_consumer(self) -> None:
        import threading

        def consume() -> None:
            with self.client() as c:
                while not (self._stop.is_set() and not self._done):
                    now = time.time()
                    with self._lock:
                        due = [rid for t, rid in self._done if t <= now]
                        self._done = [(t, rid) for t, rid in self._done if t > now]
                    for rid in due:
                        try:
                            c.delete(f"/api/rollouts/{rid}")
                        except httpx.TransportError:
                            pass  # the gateway is restarting: its memory is gone anyway
                    time.sleep(0.05)

        if self.delete_after_s is not None:
            self._consumer = threading.Thread(target=consume, daemon=True)
            self._consumer.start()

    def stop_consumer(self) -> None:
        self._stop.set()
        if self._consumer is not None:
            self._consumer.join(30)

    def enqueue(self, round_: int, n: int) -> list[str]:
        with self.client() as c:
            body = [{"input": {"i": i}, "metadata": {"tractatus_watch": {
                "run_id": self.run_id, "round": round_, "group": f"g{round_}-{i // 2}"}}}
                for i in range(n)]
            return [r["rollout_id"] for r in c.post("/api/rollouts", json=body).json()]

    def play(self, rid: str, index: int, round_: int, *, finish: bool = True) -> None:
        """One agent episode: running, decisions (every third packed), a reward, terminal."""
        fail = bool(self.fail_every) and index % self.fail_every == self.fail_every - 1
        instant = bool(self.instant_delete_every) and \
            index % self.instant_delete_every == self.instant_delete_every - 1
        agent = f"agent-{index % 5}"
        ids = [f"{rid}-d{k}" for k in range(self.decisions)]
        with self.client() as c:
            c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "running",
                                                               "last_attempt_id": "a0"}})
            k = 0
            while k < len(ids):
                if k % 3 == 2 and k + 1 < len(ids):
                    c.post(f"/api/rollouts/{rid}/attempt/a0/events", json={
                        "event_type": "tractatus.decisions", "data": {"decisions": [
                            decision_payload(ids[k], agent, verdict="block"),
                            decision_payload(ids[k + 1], agent)]}})
                    k += 2
                else:
                    c.post(f"/api/rollouts/{rid}/attempt/a0/events", json={
                        "event_type": "tractatus.decision",
                        "data": decision_payload(ids[k], agent)})
                    k += 1
                time.sleep(self.step_s)
            c.post(f"/api/rollouts/{rid}/attempt/a0/events",
                   json={"event_type": "model_request", "data": {
                       "model": "m", "latency_ms": 12.5, "request": {"blob": "x" * 2000},
                       "response": {"choices": []}, "status": "ok"}})
            c.post(f"/api/rollouts/{rid}/attempt/a0/events",
                   json={"event_type": "reward", "data": {"value": 0.5 + index % 3 / 10}})
            with self._lock:
                self.expected[rid] = {"decisions": set(ids), "round": round_,
                                      "state": "failed" if fail else "succeeded",
                                      "finished": finish}
            if not finish:
                return
            c.patch(f"/api/rollouts/{rid}", json={"status": {
                "state": "failed" if fail else "succeeded"}})
            if instant:
                c.delete(f"/api/rollouts/{rid}")
                with self._lock:
                    self.instant.add(rid)
            elif self.delete_after_s is not None:
                with self._lock:
                    self._done.append((time.time() + self.delete_after_s, rid))

    def round(self, round_: int, n: int) -> list[str]:
        from concurrent.futures import ThreadPoolExecutor

        rids = self.enqueue(round_, n)
        with ThreadPoolExecutor(self.agents) as pool:
            list(pool.map(lambda a: self.play(a[1], a[0], round_), enumerate(rids)))
        return rids


@pytest.fixture
def training():  # type: ignore[no-untyped-def]
    made: list[Training] = []

    def make(url: str, key: str, **kw: object) -> Training:
        t = Training(url, key, **kw)  # type: ignore[arg-type]
        made.append(t)
        return t

    yield make
    for t in made:
        t.stop_consumer()


@pytest.fixture
def fresh_agl_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty Agent Lightning state for an in-process gateway, restored afterwards.

    Agent Lightning keeps its store in module globals, shared by every gateway app in this
    process (the session `agl_gateway` fixture's too); a gateway we start must begin empty, as
    `agl-server` does, without disturbing the others."""
    import agentlightning.server.app  # noqa: F401  (imports every module holding the store)
    from agentlightning.server import store

    fresh = {name: type(getattr(store, name))() for name in
             ("_rollouts", "_events", "_models", "_terminal_order")}
    originals = {name: getattr(store, name) for name in fresh}
    for module in [m for n, m in list(sys.modules.items())
                   if m is not None and n.startswith("agentlightning.")]:
        for name, value in fresh.items():
            if getattr(module, name, None) is originals[name]:
                monkeypatch.setattr(module, name, value)
