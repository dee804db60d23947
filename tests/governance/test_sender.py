"""The background sender against the real Agent Lightning gateway (and two failing targets)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tractatus_watch.records.events import Action, Check, Decision, Reward
from tractatus_watch.governance.sender import Sender, parse_event_url


def decision(i: int, rollout_id: str = "") -> Decision:
    return Decision(
        decision_id=f"d-{i:05d}", agent_id="agent-1", round=i // 10, arm="governed", mode="enforce",
        action=Action(kind="publish", summary=f"article {i}", digest=f"sha256:{i:064x}"),
        checks=[Check(service="BoundaryEnforcer", verdict="allow", raw_verdict="PROCEED",
                      latency_us=40)],
        verdict="allow", executed=True, latency_us=90, ts=1795664672.0 + i, rollout_id=rollout_id,
    )


def stored_decisions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for e in events:
        if e["event_type"] == "tractatus.decision":
            out.append(e["data"])
        elif e["event_type"] == "tractatus.decisions":
            assert e["data"]["schema"] == "tractatus.decisions/1"
            out.extend(e["data"]["decisions"])
    return out


def test_parse_event_url() -> None:
    assert parse_event_url("http://h:8080/api/rollouts/r-1/attempt/0/events") == (
        "http://h:8080", "r-1", "0")
    with pytest.raises(ValueError, match="AGL_EVENT_URL"):
        parse_event_url("http://h:8080/events")


def test_every_decision_arrives_once_and_in_order(agl_gateway: Any) -> None:
    rid = agl_gateway.create_rollout()
    sender = Sender(agl_gateway.event_url(rid), key=agl_gateway.key, max_per_event=7)
    sender.emit_decision(decision(0))
    assert sender.flush(10)
    for i in range(1, 300):
        sender.emit_decision(decision(i))
    stats = sender.close(timeout=20)
    events = agl_gateway.events(rid)
    got = stored_decisions(events)
    assert [d["decision_id"] for d in got] == [f"d-{i:05d}" for i in range(300)]
    assert (stats.queued, stats.sent, stats.dropped, stats.failed, stats.retries) == (
        300, 300, 0, 0, 0)
    assert stats.posts == len(events)
    assert events[0]["event_type"] == "tractatus.decision"
    packed = [e for e in events if e["event_type"] == "tractatus.decisions"]
    assert packed and all(len(e["data"]["decisions"]) <= 7 for e in packed)
    assert len(events) < 300  # packing saved round trips
    back = Decision.from_payload(got[42])
    assert back.to_payload() == decision(42).to_payload()


def test_decisions_go_to_their_rollout_and_rewards_as_agl_rewards(agl_gateway: Any) -> None:
    ra, rb = agl_gateway.create_rollout(), agl_gateway.create_rollout()
    sender = Sender(agl_gateway.event_url(ra), key=agl_gateway.key)
    for i in range(10):
        sender.emit_decision(decision(i, rollout_id=ra if i % 2 else rb))
    sender.emit_decision(decision(99))  # no rollout id: the one of AGL_EVENT_URL
    sender.emit_reward(Reward(reward_id=f"{rb}:0", rollout_id=rb, agent_id="agent-1", round=3,
                              arm="governed", value=0.89, ts=1795664672.0))
    sender.emit_event("tractatus.note", {"text": "hello"}, rollout_id=rb)
    stats = sender.close(timeout=20)
    assert (stats.sent, stats.failed) == (13, 0)
    assert [d["decision_id"] for d in stored_decisions(agl_gateway.events(ra))] == [
        "d-00001", "d-00003", "d-00005", "d-00007", "d-00009", "d-00099"]
    assert [d["decision_id"] for d in stored_decisions(agl_gateway.events(rb))] == [
        "d-00000", "d-00002", "d-00004", "d-00006", "d-00008"]
    rewards = agl_gateway.events(rb, event_type="reward")
    assert len(rewards) == 1
    assert rewards[0]["data"]["value"] == 0.89 and rewards[0]["data"]["source"] == "agent"
    assert rewards[0]["data"]["round"] == 3
    notes = agl_gateway.events(rb, event_type="tractatus.note")
    assert [e["data"] for e in notes] == [{"text": "hello"}]


def test_a_flush_ends_the_linger_and_a_rollout_goes_as_one_event(agl_gateway: Any) -> None:
    # A linger far longer than the flush may wait: only the flush's kick sends in time.
    rid = agl_gateway.create_rollout()
    sender = Sender(agl_gateway.event_url(rid), key=agl_gateway.key, linger_s=60.0)
    try:
        for round_ in range(3):  # three rollouts' worth, one after the other
            for i in range(8):
                sender.emit_decision(decision(round_ * 10 + i))
            sender.emit_reward(Reward(reward_id=f"{rid}:{round_}", rollout_id=rid,
                                      agent_id="agent-1", round=round_, arm="governed",
                                      value=0.5, ts=1795664672.0))
            started = time.monotonic()
            assert sender.flush(10)
            assert time.monotonic() - started < 10
        assert (sender.stats.sent, sender.stats.posts) == (27, 6)  # 8 decisions + 1 reward, x3
    finally:
        sender.close(timeout=10)
    packed = agl_gateway.events(rid, event_type="tractatus.decisions")
    assert [len(e["data"]["decisions"]) for e in packed] == [8, 8, 8]


def test_the_key_is_never_shown(agl_gateway: Any) -> None:
    rid = agl_gateway.create_rollout()
    sender = Sender(agl_gateway.event_url(rid), key=agl_gateway.key)
    try:
        for text in (repr(sender), str(sender), repr(vars(sender))):
            assert agl_gateway.key not in text
    finally:
        sender.close()


def test_rejections_are_counted_not_raised(agl_gateway: Any) -> None:
    rid = agl_gateway.create_rollout()
    wrong_key = Sender(agl_gateway.event_url(rid), key="not-the-key", max_retries=3)
    wrong_key.emit_decision(decision(1))
    stats = wrong_key.close(timeout=10)
    assert (stats.sent, stats.failed, stats.retries) == (0, 1, 0)  # 401 is not retried
    missing = Sender(agl_gateway.event_url("no-such-rollout"), key=agl_gateway.key)
    missing.emit_decision(decision(2))
    assert missing.close(timeout=10).failed == 1  # 404
    no_rollout = Sender(base_url=agl_gateway.url, key=agl_gateway.key)
    no_rollout.emit_decision(decision(3))  # neither the decision nor the URL names a rollout
    assert no_rollout.close(timeout=10).failed == 1
    assert stored_decisions(agl_gateway.events(rid)) == []


# --- failing targets ------------------------------------------------------------------------------

class _Target:
    """A local HTTP server that answers every POST with `status`, optionally holding requests
    until `release` is set; it records the bodies it received."""

    def __init__(self, status: int, hold: bool = False) -> None:
        self.status = status
        self.hold = hold
        self.release = threading.Event()
        self.bodies: list[dict[str, Any]] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                target.bodies.append(json.loads(body))
                if target.hold:
                    target.release.wait(10)
                self.send_response(target.status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def event_url(self) -> str:
        return f"{self.url}/api/rollouts/r1/attempt/0/events"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def failing_target() -> Iterator[_Target]:
    t = _Target(503)
    yield t
    t.close()


def test_5xx_is_retried_then_counted_as_failed(failing_target: _Target) -> None:
    sender = Sender(failing_target.event_url(), key="k", max_retries=3, backoff_base_s=0.005,
                    backoff_max_s=0.02, seed=1)
    sender.emit_decision(decision(1))  # never raises
    stats = sender.close(timeout=10)
    assert (stats.sent, stats.failed, stats.retries, stats.dropped) == (0, 1, 3, 0)
    assert len(failing_target.bodies) == 4  # the first attempt and three retries
    assert failing_target.bodies[0]["event_type"] == "tractatus.decision"


def test_connection_refused_is_retried_then_counted() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    sender = Sender(f"http://127.0.0.1:{port}/api/rollouts/r/attempt/0/events", key="k",
                    max_retries=2, backoff_base_s=0.005, backoff_max_s=0.01)
    for i in range(3):
        sender.emit_decision(decision(i))
    stats = sender.close(timeout=10)
    assert stats.sent == 0 and stats.failed == 3 and stats.retries >= 2


def test_close_timeout_gives_up_on_a_dead_target() -> None:
    target = _Target(503)
    try:
        sender = Sender(target.event_url(), key="k", max_retries=50, backoff_base_s=0.2,
                        backoff_max_s=0.2)
        for i in range(5):
            sender.emit_decision(decision(i))
        t0 = time.perf_counter()
        stats = sender.close(timeout=0.5)
        assert time.perf_counter() - t0 < 3
        assert stats.sent == 0 and stats.failed + stats.dropped == 5
    finally:
        target.close()


@pytest.mark.parametrize("drop", ["newest", "oldest"])
def test_a_full_buffer_drops_and_counts(drop: str) -> None:
    target = _Target(200, hold=True)
    try:
        sender = Sender(target.event_url(), key="k", max_queue=5, drop=drop)  # type: ignore[arg-type]
        sender.emit_decision(decision(0))
        deadline = time.monotonic() + 5
        while not target.bodies and time.monotonic() < deadline:  # the thread is now stuck posting
            time.sleep(0.005)
        t0 = time.perf_counter()
        for i in range(1, 21):
            sender.emit_decision(decision(i))
        assert time.perf_counter() - t0 < 1.0  # the post in flight holds for 10 s: no waiting on it
        assert sender.stats.dropped == 15
        target.release.set()
        stats = sender.close(timeout=10)
        assert (stats.sent, stats.dropped, stats.failed) == (6, 15, 0)
        ids = [d["decision_id"] for d in stored_decisions([
            {"event_type": b["event_type"], "data": b["data"]} for b in target.bodies])]
        kept = range(1, 6) if drop == "newest" else range(16, 21)
        assert ids == ["d-00000", *(f"d-{i:05d}" for i in kept)]
    finally:
        target.close()


def test_emits_after_close_are_dropped(agl_gateway: Any) -> None:
    rid = agl_gateway.create_rollout()
    sender = Sender(agl_gateway.event_url(rid), key=agl_gateway.key)
    sender.close()
    sender.emit_decision(decision(1))
    assert sender.stats.dropped == 1 and stored_decisions(agl_gateway.events(rid)) == []


def test_pending_decisions_are_flushed_at_exit(agl_gateway: Any) -> None:
    rid = agl_gateway.create_rollout()
    script = (
        "import os\n"
        "from tractatus_watch.governance.governor import Governor\n"
        "gov = Governor.from_env([lambda a, c: None], agent_id='exiting')\n"
        "for i in range(40):\n"
        "    gov.check({'kind': 'publish', 'text': f'article {i}'}, round=i)\n"
        "# no close(): the atexit hook must send what is queued\n"
    )
    env = {**os.environ, "AGL_EVENT_URL": agl_gateway.event_url(rid), "AGL_KEY": agl_gateway.key}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert agl_gateway.key not in done.stdout + done.stderr
    got = stored_decisions(agl_gateway.events(rid))
    assert len(got) == 40 and [d["round"] for d in got] == list(range(40))
    assert {d["agent_id"] for d in got} == {"exiting"}


def test_a_flush_waits_only_for_what_was_queued_before_it() -> None:
    # A rollout's decisions go out; while their post is held at the target, another rollout's
    # decision is queued. The flush returns once the first batch is answered; the second
    # lingers (60 s) for its own flush, as one event.
    target = _Target(200, hold=True)
    sender = Sender(target.event_url(), key="k", linger_s=60.0)
    try:
        for i in range(8):
            sender.emit_decision(decision(i))
        result: list[bool] = []
        flushing = threading.Thread(target=lambda: result.append(sender.flush(20)))
        flushing.start()
        deadline = time.monotonic() + 10
        while not target.bodies and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(target.bodies) == 1  # the first batch is in flight, held
        sender.emit_decision(decision(100))  # queued after the flush began
        target.release.set()
        flushing.join(20)
        assert result == [True]
        assert sender.stats.sent == 8 and len(target.bodies) == 1
        assert len(target.bodies[0]["data"]["decisions"]) == 8
        stats = sender.close(timeout=10)
        assert (stats.sent, stats.failed, len(target.bodies)) == (9, 0, 2)
    finally:
        target.close()
