"""`tractatus-watch gateway` as users run it (a subprocess, key from AGL_KEY): what it
acknowledged survives SIGKILL, and a record Agent Lightning itself cannot serve is quarantined
while the gateway goes on."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tractatus_watch.storage.store import Store

from support import clients

from .conftest import decision_payload, free_port, wait_healthy

RUN = "crash-run"


class Gateway:
    """One `tractatus-watch gateway` on a fixed store and port, restartable."""

    def __init__(self, tmp: Path) -> None:
        self.db = tmp / "gw.duckdb"
        self.port = free_port()
        self.key = "test-" + secrets.token_hex(12)
        self.log = tmp / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_WATCH")}
        env["AGL_KEY"] = self.key
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tractatus_watch", "gateway", "--store", str(self.db),
                 "--run", RUN, "--port", str(self.port)], env=env, stdout=log, stderr=log)
        wait_healthy(self.url, self.proc, self.log, timeout_s)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def client(self) -> httpx.Client:
        return clients.client(base_url=self.url, timeout=10,
                              headers={"Authorization": f"Bearer {self.key}"})

    def rollout(self, c: httpx.Client) -> str:
        """A fresh rollout, running (the gateway forgets them when it restarts)."""
        rid = f"r-{uuid.uuid4().hex[:12]}"
        c.post("/api/rollouts", json=[{"input": {}, "rollout_id": rid}]).raise_for_status()
        c.patch(f"/api/rollouts/{rid}", json={"status": {
            "state": "running", "last_attempt_id": "0"}}).raise_for_status()
        return rid

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with Store.open(self.db, read_only=True) as store:
            cur = store.cursor()
            try:
                return cur.execute(sql).fetchall()
            finally:
                cur.close()


class Poster(threading.Thread):
    """One agent posting packed decisions (unique ids) as fast as it can; records which
    POSTs were acknowledged. Survives the gateway going away: it waits and starts a new
    rollout."""

    def __init__(self, gw: Gateway, name: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.gw, self.tag, self.halt = gw, name, stop
        self.acked: set[str] = set()
        self.sent: set[str] = set()
        self.errors = 0
        self._ids = itertools.count()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                with self.gw.client() as c:
                    rid = self.gw.rollout(c)
                    while not self.halt.is_set():
                        ids = [f"{self.tag}-{next(self._ids)}" for _ in range(2)]
                        self.sent.update(ids)
                        r = c.post(f"/api/rollouts/{rid}/attempt/0/events", json={
                            "event_type": "tractatus.decisions", "data": {"decisions": [
                                decision_payload(i, f"agent-{self.tag}") for i in ids]}})
                        if 200 <= r.status_code < 300:
                            self.acked.update(ids)
                        else:
                            self.errors += 1
            except (httpx.TransportError, httpx.HTTPStatusError):
                self.errors += 1  # killed under us: try again once it is back
                self.halt.wait(0.05)


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_sigkill_five_times_under_load_loses_no_acknowledged_decision(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.start()
    stop = threading.Event()
    posters = [Poster(gw, f"p{i}", stop) for i in range(3)]
    for p in posters:
        p.start()

    def acked() -> int:
        return sum(len(p.acked) for p in posters)

    try:
        for _ in range(5):
            # Kill in full flow: only once a fresh batch has been acknowledged since the start.
            floor = acked() + 150
            wait_for(lambda floor=floor: acked() >= floor, 30, "acknowledged posts")
            gw.kill()
            gw.start()
        floor = acked() + 50
        wait_for(lambda: acked() >= floor, 30, "posts after the last restart")
    finally:
        stop.set()
        for p in posters:
            p.join(30)
    assert gw.stop() == 0, gw.log.read_text()[-3000:]

    acknowledged = set().union(*(p.acked for p in posters))
    sent = set().union(*(p.sent for p in posters))
    (total, distinct), = gw.rows(f"SELECT count(*), count(DISTINCT decision_id) FROM decisions "
                                 f"WHERE run_id = '{RUN}'")
    stored = {r[0] for r in gw.rows("SELECT decision_id FROM decisions")}
    assert total == distinct, "a decision was stored twice"
    assert acknowledged - stored == set(), f"{len(acknowledged - stored)} acknowledged lost"
    assert stored <= sent
    assert len(acknowledged) >= 5 * 150 and gw.rows("SELECT count(*) FROM quarantine") == [(0,)]
    # Every replayed segment was dropped once committed: a clean stop leaves an empty log.
    assert list(Path(f"{gw.db}.gateway-wal").glob("seg-*")) == []


def test_a_record_agent_lightning_cannot_serve_is_quarantined_and_the_rest_stored(
        tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.start()
    statuses: dict[str, int] = {}
    with gw.client() as c:
        rid = gw.rollout(c)
        for i in range(10):
            did = f"s-{i}"
            payload = decision_payload(did, "agent-1")
            if i == 4:  # the poison: a lone surrogate, sent as the JSON escape it arrives as
                payload["action"]["summary"] = "\ud800 broken"
            body = json.dumps({"event_type": "tractatus.decision", "data": payload})
            assert "\\ud800" in body or i != 4
            with gw.client() as one:  # after a 500 uvicorn drops the connection (agl-server too)
                statuses[did] = one.post(f"/api/rollouts/{rid}/attempt/0/events", content=body,
                                         headers={"content-type": "application/json"}
                                         ).status_code
        # Agent Lightning stored it but cannot answer for it; the gateway still runs.
        assert statuses["s-4"] == 500
    with gw.client() as c:
        assert c.get(f"/api/rollouts/{rid}/events").status_code == 500
    with gw.client() as c:
        assert httpx.get(f"{gw.url}/healthz").status_code == 200
        other = gw.rollout(c)
        assert c.post(f"/api/rollouts/{other}/attempt/0/events", json={
            "event_type": "tractatus.decision",
            "data": decision_payload("s-after", "agent-2")}).status_code == 200
    assert gw.stop() == 0, gw.log.read_text()[-3000:]
    gw.start()  # restarts cleanly on the same store
    assert gw.stop() == 0, gw.log.read_text()[-3000:]

    assert [s for d, s in statuses.items() if d != "s-4"] == [200] * 9
    stored = sorted(r[0] for r in gw.rows("SELECT decision_id FROM decisions"))
    assert stored == sorted([f"s-{i}" for i in range(10) if i != 4] + ["s-after"])
    ((reason, raw),) = gw.rows("SELECT reason, raw FROM quarantine")
    assert "s-4" in reason and rid in reason and "surrogate" in reason
    assert "\\ud800 broken" in raw
