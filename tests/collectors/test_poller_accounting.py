"""The poller's accounting by what was captured, against the real `agl-server` (1.0.2, and 1.0.2
with the open upstream change that prunes deleted rollouts from the terminal log) and real DuckDB:

- Agent Lightning's own `AglAsyncRolloutManager` driving rollouts played in parallel, deleting
  each group as soon as it is complete: what the poller reports, per rollout and in total, is
  exactly what is stored; every rollout it knew of has its terminal state unless it says why not;
  on the pruning gateway no restart is reported and no record is read twice;
- the races the poller can lose, played deterministically: deleted between the log read and the
  final read (state from the log), deleted before its log entry was read (vanished);
- a real restart of a pruning gateway is still detected; a restarted poller on a pruned log is
  not taken for one.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentlightning.verl.agl_rollout_manager import AglAsyncRolloutManager, EnqueuedRollout
from tractatus_watch.collectors.poller import CONSUMED, VANISHED, Poller
from tractatus_watch.collectors.sink import writer_sink
from tractatus_watch.records.delivery import Records, Sink

from .conftest import AglServer, decision_payload, free_port
from .pruning_agl_server import PruningEvents
from .test_poller import no_duplicates, start_poller, wait_for

PRUNING = Path(__file__).with_name("pruning_agl_server.py")
NOT_READ = "rollout not read to its end"


@pytest.fixture(params=["agl-1.0.2", "pruning"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path, agl_key: str) -> Iterator[AglServer]:
    """`agl-server` as released, or with deleted rollouts pruned from its terminal log."""
    command = [sys.executable, str(PRUNING)] if request.param == "pruning" else None
    server = AglServer(tmp_path, agl_key, command=command)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def prunes(server: AglServer) -> bool:
    return server.command[-1] == str(PRUNING)


class CountingSink:
    """The writer's sink, counting every decision and reward record delivered (by id)."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.decisions: Counter[str] = Counter()
        self.rewards: Counter[str] = Counter()

    def __call__(self, records: Records) -> None:
        self.decisions.update(d.decision_id for d in records.decisions)
        self.rewards.update(r.reward_id for r in records.rewards)
        self.inner(records)


def passes(poller: Poller, sink: Sink, n: int, *, running: bool) -> None:
    """`n` passes of the poller in this thread (deterministic)."""
    async def run() -> None:
        async with poller._client() as client:
            for _ in range(n):
                await poller.poll_once(client, sink, running=running)

    asyncio.run(run())


def settle(poller: Poller, sink: Sink) -> None:
    """Passes (with listings) until the poller follows no rollout any more: on a quiet gateway
    the rollouts that left the listing are settled one pass after the one that noticed."""
    for _ in range(20):
        if not poller._tracked and not poller._retry:
            return
        passes(poller, sink, 1, running=True)
    raise AssertionError(f"still following {sorted(poller._tracked)}")


# --- AglAsyncRolloutManager under parallel agents --------------------------------------------

class Agents:
    """Agent pods: a dispatcher hands each queuing rollout to one of `workers` threads, which
    plays it: running, `decisions` decisions (every third pair packed in one event) a step
    apart, a model_request, a reward, then the end (every fifth rollout fails)."""

    def __init__(self, server: AglServer, *, workers: int = 6, decisions: int = 5,
                 step_s: float = 0.02) -> None:
        self.server, self.decisions, self.step_s = server, decisions, step_s
        self.posted: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._todo: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._dispatch, daemon=True)]
        self._threads += [threading.Thread(target=self._work, daemon=True)
                          for _ in range(workers)]

    def __enter__(self) -> Agents:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for _ in self._threads[1:]:
            self._todo.put(None)
        for t in self._threads:
            t.join(20)

    def _dispatch(self) -> None:
        handed: set[str] = set()
        with self.server.client() as c:
            while not self._stop.is_set():
                for r in c.get("/api/rollouts", params={"state_in": "queuing"}).json():
                    if r["rollout_id"] not in handed:
                        handed.add(r["rollout_id"])
                        self._todo.put(r["rollout_id"])
                time.sleep(0.02)

    def _work(self) -> None:
        with self.server.client() as c:
            while (rid := self._todo.get()) is not None:
                self._play(c, rid)

    def _play(self, c: httpx.Client, rid: str) -> None:
        with self._lock:
            n = len(self.posted)
            self.posted[rid] = {"decisions": set(), "state": None}
        state = "failed" if n % 5 == 4 else "succeeded"
        c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "running",
                                                           "last_attempt_id": "a0"}})
        ids = [f"{rid}-d{k}" for k in range(self.decisions)]
        k = 0
        while k < len(ids):
            if k % 3 == 1 and k + 1 < len(ids):
                event = {"event_type": "tractatus.decisions", "data": {"decisions": [
                    decision_payload(ids[k], "agent-1", verdict="block"),
                    decision_payload(ids[k + 1], "agent-1")]}}
                step = 2
            else:
                event = {"event_type": "tractatus.decision",
                         "data": decision_payload(ids[k], "agent-1")}
                step = 1
            c.post(f"/api/rollouts/{rid}/attempt/a0/events", json=event).raise_for_status()
            self.posted[rid]["decisions"].update(ids[k:k + step])
            k += step
            time.sleep(self.step_s)
        c.post(f"/api/rollouts/{rid}/attempt/a0/events", json={
            "event_type": "model_request", "data": {"model": "qwen", "latency_ms": 9.0,
                                                    "request": {}, "response": {}}})
        c.post(f"/api/rollouts/{rid}/attempt/a0/events", json={
            "event_type": "reward", "data": {"value": 0.0 if state == "failed" else 1.0}})
        self.posted[rid]["state"] = state
        c.patch(f"/api/rollouts/{rid}", json={"status": {"state": state}})


def train(server: AglServer, steps: int, groups: int, n: int) -> list[str]:
    """The async trainer's loop: each step enqueues `groups` groups of `n` and waits for all
    but one (it carries over), then a last call finishes the carried ones. Returns the ids of
    the completed rollouts (each deleted as soon as its group completed)."""
    carry: list[EnqueuedRollout] = []
    completed: list[str] = []

    def manager(step: int) -> AglAsyncRolloutManager:
        return AglAsyncRolloutManager(agl_base_url=server.url, agl_key=server.key,
                                      model="qwen", step=step, train_rollout_n=n,
                                      poll_interval_seconds=0.5)

    for step in range(steps):
        done, carry = manager(step).enqueue_and_wait_until_group_completed(
            {"prompt": [f"p{step}-{i}" for i in range(groups)]}, carry, is_train=True,
            target_finished_group_num=groups - 1)
        completed += [c.rollout_id for c in done]
    if carry:
        done, carry = manager(steps).enqueue_and_wait_until_group_completed(
            {}, carry, is_train=True,
            target_finished_group_num=len({c.data_id for c in carry}))
        completed += [c.rollout_id for c in done]
    assert not carry
    return completed


def test_async_manager_deleting_groups_completeness_is_what_was_stored(
        gateway: AglServer, store, writer, q, poller_log) -> None:
    sink = CountingSink(writer_sink(writer, "async-run"))
    poller = Poller(gateway.url, key=gateway.key, interval_s=0.05, running_interval_s=0.2)
    thread, stop = start_poller(poller, sink, store)
    steps, groups, n = 3, 4, 4
    with Agents(gateway) as agents:
        completed = train(gateway, steps, groups, n)
    total = steps * groups * n
    assert len(completed) == len(set(completed)) == total
    with gateway.client() as c:  # every group was deleted when it completed
        assert c.get("/api/rollouts", params={"state_in": ["succeeded", "failed"]}).json() == []
    stop.set()
    thread.join(20)
    assert not thread.errors
    settle(poller, sink)
    writer.flush()

    truth = agents.posted
    assert set(truth) == set(completed)
    decisions: dict[str, set[str]] = defaultdict(set)
    for rid, did in q("SELECT rollout_id, decision_id FROM decisions"):
        decisions[rid].add(did)
    rewards = Counter(rid for (rid,) in q("SELECT rollout_id FROM rewards"))
    known = {rid for (rid,) in q("SELECT DISTINCT rollout_id FROM rollouts")}
    ended = {rid: (status, json.loads(meta)["capture"]) for rid, status, meta in q(
        "SELECT rollout_id, status, metadata FROM rollouts WHERE status IN "
        "('succeeded', 'failed')")}
    vanished = {f["rollout_id"]: f for f in poller_log.fields(NOT_READ)
                if f["reason"] == VANISHED}
    assert not set(ended) & set(vanished)

    captured = consumed = short = 0
    for rid, posted in truth.items():
        got = decisions[rid]
        assert got <= posted["decisions"], rid
        if rid in ended:
            state, capture = ended[rid]
            assert state == posted["state"], rid  # its terminal state, always the right one
            assert (capture["decisions"], capture["rewards"]) == (len(got), rewards[rid]), rid
            if capture["complete"]:
                captured += 1
                assert (got, rewards[rid]) == (posted["decisions"], 1), rid
            else:
                assert capture["reason"] == CONSUMED, rid
                consumed += 1
        elif rid in vanished:
            reported = vanished[rid]
            assert (reported["decisions"], reported["rewards"]) == (len(got), rewards[rid])
        else:  # ran and ended between two passes of the poller: nothing of it is stored
            assert rid not in known and not got and not rewards[rid], rid
        short += len(posted["decisions"]) - len(got)
    unseen = total - len(ended) - len(vanished)

    st = poller.stats
    print(f"\n{gateway.command[-1]}: {st.summary()}")
    # The figures are what is stored, per rollout (above) and in total.
    assert (st.captured, st.consumed, st.vanished, st.state_unknown) == (
        captured, consumed, len(vanished), len(vanished))
    assert st.seen == total - (unseen if prunes(gateway) else 0)  # 1.0.2 counts its positions
    assert st.missed == st.seen - captured and st.retrying == 0
    stored = q("SELECT count(*) FROM decisions")[0][0]
    assert st.decisions == stored == sum(len(p["decisions"]) for p in truth.values()) - short
    assert st.rewards == q("SELECT count(*) FROM rewards")[0][0] == sum(rewards.values())
    assert st.decisions_unverified == sum(len(decisions[r]) for r in truth if r not in ended
                                          or not ended[r][1]["complete"])
    # Nothing read twice, no restart; on the pruning gateway the log moved and was followed.
    assert max(sink.decisions.values()) == 1 and max(sink.rewards.values()) == 1
    assert st.restarts == 0 and not poller_log.fields("gateway restarted")
    if prunes(gateway):
        assert st.resyncs > 0 and st.skipped == 0
    else:
        assert st.resyncs == 0
    no_duplicates(q)
    assert json.loads(store.get_cursor(poller.source) or "{}")["captured"] == captured


# --- the races the poller can lose, each played on purpose -----------------------------------

@contextmanager
def serve(app: Any) -> Iterator[str]:
    """An ASGI app (Agent Lightning's own, wrapped) on 127.0.0.1, served by uvicorn in a
    thread, for as long as the block runs."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class DeleteWhenListed:
    """The trainer winning the race between the poller's terminal log read and its final read,
    every time: once a terminal page naming a doomed rollout has been computed, the doomed
    rollouts are deleted by Agent Lightning's own route before the page is sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.doomed: dict[str, set[str]] = {}  # listed rollout -> rollouts deleted then

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/api/rollouts/terminal":
            return await self.app(scope, receive, send)
        held: list[Any] = []

        async def hold(message: Any) -> None:
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                body = b"".join(m.get("body", b"") for m in held if m["type"] != "http."
                                "response.start")
                listed = {it["rollout_id"] for it in json.loads(body).get("items", [])}
                from agentlightning.server.routes.rollouts import delete_rollout

                for rid in [r for r in self.doomed if r in listed]:
                    for victim in self.doomed.pop(rid):
                        await delete_rollout(victim)
                for m in held:
                    await send(m)

        await self.app(scope, receive, hold)


@pytest.fixture(params=[False, True], ids=["agl-1.0.2", "pruning"])
def in_process(request: pytest.FixtureRequest, fresh_agl_store: None, agl_key: str,
               monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[tuple[str, DeleteWhenListed, bool]]:
    """Agent Lightning's app on an empty store (pruning or not), with the deletion hook."""
    from agentlightning.server import store
    from agentlightning.server.app import create_app

    if request.param:
        events, fresh = PruningEvents(store._terminal_order), store._events
        for module in [m for n, m in list(sys.modules.items())
                       if m is not None and n.startswith("agentlightning.")]:
            if getattr(module, "_events", None) is fresh:
                monkeypatch.setattr(module, "_events", events)
    app = DeleteWhenListed(create_app({"key": agl_key, "default_proxy": {
        "model_name": "m", "train": {"temperature": 1.0}, "val": {"temperature": 0.7}}}))
    with serve(app) as url:
        yield url, app, request.param


def rollout(c: httpx.Client, rid: str, decisions: int, *, start: int = 0,
            end: str | None = None, reward: bool = False) -> None:
    """Create (once) and run rollout `rid`, post decisions `start..`, then a reward, an end."""
    if start == 0:
        c.post("/api/rollouts", json=[{"input": {}, "rollout_id": rid}]).raise_for_status()
        c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "running",
                                                           "last_attempt_id": "a0"}})
    for k in range(start, start + decisions):
        c.post(f"/api/rollouts/{rid}/attempt/a0/events", json={
            "event_type": "tractatus.decision",
            "data": decision_payload(f"{rid}-d{k}", "agent-1")}).raise_for_status()
    if reward:
        c.post(f"/api/rollouts/{rid}/attempt/a0/events",
               json={"event_type": "reward", "data": {"value": 0.5}}).raise_for_status()
    if end:
        c.patch(f"/api/rollouts/{rid}", json={"status": {"state": end}}).raise_for_status()


def test_deleted_between_the_log_read_and_the_final_read_keeps_its_state(
        in_process, agl_key, store, writer, q, poller_log) -> None:
    url, hook, pruning = in_process
    sink = CountingSink(writer_sink(writer, "race-run"))
    poller = Poller(url, key=agl_key)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {agl_key}"}) as c:
        rollout(c, "first", 1, reward=True, end="succeeded")
        passes(poller, sink, 1, running=False)  # read whole: the anchor of the cursor
        rollout(c, "doomed", 2)
        rollout(c, "fine", 2)
        passes(poller, sink, 1, running=True)  # both read while they run
        rollout(c, "doomed", 1, start=2, reward=True, end="failed")
        rollout(c, "fine", 1, start=2, reward=True, end="succeeded")
        # The page naming `doomed` is computed; then the trainer deletes it, and `first`
        # (consumed already: on the pruning gateway the log moves under the cursor).
        hook.doomed["doomed"] = {"doomed", "first"}
        passes(poller, sink, 2, running=False)
    assert not hook.doomed
    writer.flush()

    st = poller.stats
    assert (st.seen, st.captured, st.consumed, st.missed, st.partial, st.state_unknown) == (
        3, 2, 1, 1, 1, 0)
    assert (st.decisions, st.rewards, st.decisions_unverified, st.rewards_unverified) == (
        1 + 2 + 3, 2, 2, 0)
    assert (st.restarts, st.resyncs, st.skipped) == (0, 1 if pruning else 0, 0)
    rows = {(rid, status): json.loads(meta or "{}") for rid, status, meta in q(
        "SELECT rollout_id, status, metadata FROM rollouts")}
    assert set(rows) == {("first", "queuing"), ("first", "succeeded"), ("doomed", "queuing"),
                         ("doomed", "running"), ("doomed", "failed"), ("fine", "queuing"),
                         ("fine", "running"), ("fine", "succeeded")}
    # Its terminal state from the log entry, with what was read of it and why not all.
    assert rows[("doomed", "failed")]["capture"] == {
        "complete": False, "reason": CONSUMED, "decisions": 2, "rewards": 0}
    assert rows[("doomed", "failed")]["state_from"] == "terminal log"
    assert rows[("fine", "succeeded")]["capture"] == {
        "complete": True, "reason": "read after it ended", "decisions": 3, "rewards": 1}
    assert q("SELECT decision_id FROM decisions WHERE rollout_id = 'doomed' ORDER BY 1") == [
        ("doomed-d0",), ("doomed-d1",)]
    assert [(f["rollout_id"], f["reason"], f["state"], f["decisions"])
            for f in poller_log.fields(NOT_READ)] == [("doomed", CONSUMED, "failed", 2)]
    assert not poller_log.fields("gateway restarted")
    assert max(sink.decisions.values()) == 1
    no_duplicates(q)


def test_deleted_before_its_log_entry_was_read_is_reported_with_what_was_read(
        gateway: AglServer, store, writer, q, poller_log) -> None:
    sink = CountingSink(writer_sink(writer, "vanish-run"))
    poller = Poller(gateway.url, key=gateway.key)
    with gateway.client() as c:
        rollout(c, "seen", 2)
        passes(poller, sink, 1, running=True)  # read while it runs
        rollout(c, "seen", 1, start=2, reward=True, end="succeeded")
        rollout(c, "unseen", 2, reward=True, end="succeeded")  # ran between two passes
        for rid in ("seen", "unseen"):
            c.delete(f"/api/rollouts/{rid}").raise_for_status()
        passes(poller, sink, 1, running=True)  # its entry is gone; it left the listing
        assert (poller.stats.vanished, sorted(poller._tracked)) == (0, ["seen"])
        passes(poller, sink, 1, running=False)  # gone from the log read after that: vanished
    writer.flush()

    st = poller.stats
    # 1.0.2 skips the deleted entries' positions: `unseen` is counted, not named; the pruning
    # gateway leaves no trace of it at all.
    pruning = prunes(gateway)
    assert (st.seen, st.ended, st.vanished, st.skipped, st.captured, st.missed) == (
        (1, 1, 1, 0, 0, 1) if pruning else (2, 1, 1, 2, 0, 2))
    assert (st.partial, st.state_unknown, st.decisions, st.decisions_unverified) == (1, 1, 2, 2)
    assert (st.restarts, st.rewards) == (0, 0)
    assert q("SELECT rollout_id, status FROM rollouts ORDER BY ALL") == [
        ("seen", "queuing"), ("seen", "running")]  # its terminal state is known nowhere
    assert q("SELECT decision_id FROM decisions ORDER BY 1") == [("seen-d0",), ("seen-d1",)]
    assert [(f["rollout_id"], f["reason"], f["state"], f["decisions"], f["partial"])
            for f in poller_log.fields(NOT_READ)] == [("seen", VANISHED, None, 2, True)]
    summary = st.summary()
    assert f"1 {VANISHED}" in summary and "2 decisions and 0 rewards of theirs stored" in summary


def test_a_restart_of_a_pruning_gateway_is_still_detected(
        tmp_path: Path, agl_key: str, store, writer, q, training, poller_log) -> None:
    server = AglServer(tmp_path, agl_key, command=[sys.executable, str(PRUNING)])
    server.start()
    try:
        sim = training(server.url, agl_key, delete_after_s=1.0)
        sim.start_consumer()
        poller = Poller(server.url, key=agl_key, interval_s=0.05, running_interval_s=0.2,
                        backoff_cap_s=0.3)
        thread, stop = start_poller(poller, writer_sink(writer, "restart-run"), store)
        sim.round(0, 12)
        # The consumer deletes them: the log shrinks below the cursor, which is no restart.
        wait_for(lambda: poller.stats.captured == 12 and poller.stats.resyncs > 0,
                 what="round 0, pruned")
        with server.client() as c:
            wait_for(lambda: c.get("/api/rollouts/terminal").json()["total_terminal"] == 0,
                     what="every entry pruned")
        assert poller.stats.restarts == 0
        in_flight = sim.enqueue(1, 3)
        for i, rid in enumerate(in_flight):
            sim.play(rid, i, 1, finish=False)
        wait_for(lambda: poller.stats.decisions == 15 * sim.decisions, what="in-flight reads")
        server.restart()
        wait_for(lambda: poller.stats.restarts == 1, what="restart detection")
        sim.round(2, 12)
        wait_for(lambda: poller.stats.captured == 24, what="round 2")
        stop.set()
        thread.join(10)
        assert not thread.errors
    finally:
        server.stop()
    writer.flush()
    st = poller.stats
    assert (st.restarts, st.epoch, st.captured, st.lost_in_restart, st.partial) == (1, 1, 24, 3, 3)
    assert (st.seen, st.missed, st.state_unknown) == (27, 3, 3)
    assert [f["lost_rollouts"] for f in poller_log.fields("gateway restarted")] == [3]
    assert q("SELECT count(*) FROM decisions") == [(27 * sim.decisions,)]
    no_duplicates(q)


def test_a_poller_resumed_on_a_pruned_log_takes_it_for_no_restart(
        tmp_path: Path, agl_key: str, store, writer, q, poller_log) -> None:
    server = AglServer(tmp_path, agl_key, command=[sys.executable, str(PRUNING)])
    server.start()
    try:
        sink = CountingSink(writer_sink(writer, "resume-run"))
        with server.client() as c:
            for i in range(3):
                rollout(c, f"old-{i}", 2, reward=True, end="succeeded")
            rollout(c, "running", 2)
            first = Poller(server.url, key=agl_key)
            passes(first, sink, 1, running=True)
            writer.flush()
            for i in range(3):  # deleted (and pruned) while no poller runs
                c.delete(f"/api/rollouts/old-{i}").raise_for_status()
            rollout(c, "new", 1, reward=True, end="succeeded")
            rollout(c, "running", 1, start=2, reward=True, end="succeeded")
            second = Poller(server.url, key=agl_key)
            second.resume(store.get_cursor(second.source))
            passes(second, sink, 2, running=True)
    finally:
        server.stop()
    writer.flush()
    st = second.stats
    assert (st.restarts, st.epoch, st.resyncs, st.seen, st.captured) == (0, 0, 1, 5, 5)
    assert not poller_log.fields("gateway restarted")
    # `running` is read again from its start by the new poller (it keeps no positions): that
    # is the one legitimate re-read, and the store keeps one copy.
    assert sink.decisions == Counter({**{f"old-{i}-d{k}": 1 for i in range(3) for k in (0, 1)},
                                      "new-d0": 1, "running-d0": 2, "running-d1": 2,
                                      "running-d2": 1})
    assert q("SELECT count(*), count(DISTINCT reward_id) FROM rewards") == [(5, 5)]
    no_duplicates(q)
