"""Poller tap against the real `agl-server`: completeness under a consumer that deletes each
rollout 1 s after it ends, missed rollouts counted, gateway restart and SIGKILL of the collecting
process without loss or duplication, backoff, and a clear stop on a refused key."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tractatus_watch.collectors.gateway_tap import GatewayTap
from tractatus_watch.collectors.poller import AuthError, Poller
from tractatus_watch.collectors.sink import ListSink, writer_sink
from tractatus_watch.storage.store import Store

from .conftest import AglServer, decision_payload

WORKER = Path(__file__).with_name("poll_worker.py")


def wait_for(cond, timeout_s: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def start_poller(poller: Poller, sink, store=None) -> tuple[threading.Thread, threading.Event]:  # type: ignore[no-untyped-def]
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            poller.run(sink, stop, store.get_cursor if store is not None else None)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.errors = errors  # type: ignore[attr-defined]
    return t, stop


def no_duplicates(q) -> None:  # type: ignore[no-untyped-def]
    for table, key in (("decisions", "run_id, decision_id"), ("checks", "run_id, decision_id, idx"),
                       ("rewards", "run_id, reward_id"), ("events", "run_id, event_id"),
                       ("rollouts", "run_id, rollout_id, status")):
        total, distinct = q(f"SELECT count(*), count(DISTINCT ({key})) FROM {table}")[0]
        assert total == distinct, f"duplicates in {table}"


def test_quarter_second_polling_captures_what_a_deleting_trainer_leaves(
        agl_server, agl_key, store, writer, q, training) -> None:
    # The trainer deletes a rollout 10 s after it ends: forty poll intervals, so that a loaded
    # machine (one poll pass took over 3 s at load 14 in CI) still tests capture, not the
    # scheduler. The test waits for what the poller saw, never for the deletions.
    sim = training(agl_server.url, agl_key, delete_after_s=10.0, fail_every=7,
                   instant_delete_every=25, step_s=0.01)
    sim.start_consumer()
    poller = Poller(agl_server.url, key=agl_key, interval_s=0.25)
    thread, stop = start_poller(poller, writer_sink(writer, "poll-run"), store)
    rounds, per_round = 3, 40
    for r in range(rounds):
        sim.round(r, per_round)
    total = rounds * per_round
    wait_for(lambda: poller.stats.seen >= total, what="every terminal rollout")
    stop.set()
    thread.join(10)
    assert not thread.errors  # type: ignore[attr-defined]
    writer.flush()

    st = poller.stats
    assert st.seen == total and st.captured + st.missed == total
    ended = {rid: json.loads(meta)["capture"] for rid, meta in q(
        "SELECT rollout_id, metadata FROM rollouts WHERE status IN ('succeeded', 'failed')")}
    stored_terminal = {rid for rid, capture in ended.items() if capture["complete"]}
    assert len(stored_terminal) == st.captured
    # Every missed rollout is counted: exactly those without their final read stored (a
    # rollout deleted between the log read and the final read keeps its state, not complete).
    assert st.missed == total - len(stored_terminal)
    assert len(ended) - len(stored_terminal) == st.consumed
    # One rollout a round is deleted the instant it ends (to have misses to count); of those
    # the trainer deletes 10 s after they end, at least 99% are fully captured.
    assert len(sim.instant) == rounds
    normal = set(sim.expected) - sim.instant
    assert len(normal & stored_terminal) >= 0.99 * len(normal)
    # A captured rollout is complete: every decision (packed ones too), its reward, its round.
    for rid in stored_terminal:
        exp = sim.expected[rid]
        got = {r[0] for r in q("SELECT decision_id FROM decisions WHERE rollout_id = ?", rid)}
        assert got == exp["decisions"], rid
        assert q("SELECT DISTINCT round FROM decisions WHERE rollout_id = ?", rid) == \
            [(exp["round"],)]
        assert q("SELECT count(*), min(round) FROM rewards WHERE rollout_id = ?", rid)[0] == \
            (1, exp["round"])
        assert q("SELECT status FROM rollouts WHERE rollout_id = ? AND status <> 'queuing' "
                 "AND status <> 'running'", rid) == [(exp["state"],)]
        # Its model request too (the witness of coverage), trimmed: never the bodies.
        assert q("SELECT payload FROM events WHERE rollout_id = ? "
                 "AND event_type = 'model_request'", rid) == \
            [('{"model": "m", "latency_ms": 12.5, "status": "ok"}',)]
    no_duplicates(q)
    # The completeness figures are stored with the cursor.
    stored = json.loads(store.get_cursor(poller.source) or "{}")
    assert (stored["seen"], stored["captured"], stored["missed"]) == (st.seen, st.captured,
                                                                    st.missed)


def test_gateway_restart_mid_run_loses_and_duplicates_nothing(
        agl_server, agl_key, store, writer, q, training) -> None:
    sim = training(agl_server.url, agl_key, delete_after_s=None)
    poller = Poller(agl_server.url, key=agl_key, interval_s=0.1, running_interval_s=0.2,
                    backoff_cap_s=0.5)
    thread, stop = start_poller(poller, writer_sink(writer, "restart-run"), store)
    sim.round(0, 20)
    wait_for(lambda: poller.stats.seen >= 20, what="round 0")
    # Three rollouts are running, part-way through, when the gateway goes down.
    in_flight = sim.enqueue(1, 3)
    for i, rid in enumerate(in_flight):
        sim.play(rid, i, 1, finish=False)
    wait_for(lambda: poller.stats.decisions >= 23 * sim.decisions, what="in-flight reads")
    writer.flush()
    before = q("SELECT decision_id FROM decisions ORDER BY 1")
    agl_server.restart()
    wait_for(lambda: poller.stats.restarts == 1, what="restart detection")
    sim.round(2, 20)
    wait_for(lambda: poller.stats.seen >= 43, what="round 2")
    stop.set()
    thread.join(10)
    assert not thread.errors  # type: ignore[attr-defined]
    writer.flush()

    st = poller.stats
    assert (st.restarts, st.epoch, st.seen, st.captured, st.missed, st.lost_in_restart,
            st.partial) == (1, 1, 43, 40, 3, 3, 3)
    after = q("SELECT decision_id FROM decisions ORDER BY 1")
    assert set(before) <= set(after)  # nothing stored was lost
    assert len(after) == 43 * sim.decisions  # in-flight decisions were read while running
    no_duplicates(q)
    assert q("SELECT count(*) FROM rollouts WHERE status = 'succeeded'")[0][0] == 40


def test_sigkill_of_the_collecting_process(tmp_path: Path, agl_server, agl_key, training) -> None:
    db = tmp_path / "killed.duckdb"
    sim = training(agl_server.url, agl_key, delete_after_s=None)

    def spawn() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(WORKER), str(db), agl_server.url],
                                stdout=subprocess.PIPE, stderr=open(tmp_path / "w.log", "a"),
                                text=True, env={**os.environ, "AGL_KEY": agl_key})

    def wait_seen(proc: subprocess.Popen[str], n: int) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line)["seen"] >= n:
                return
        raise AssertionError(f"worker ended before seeing {n}")

    proc = spawn()
    sim.round(0, 15)
    wait_seen(proc, 15)
    rids = sim.enqueue(1, 15)
    player = threading.Thread(target=lambda: [sim.play(r, i, 1) for i, r in enumerate(rids)])
    player.start()
    wait_seen(proc, 20)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: round 1 is still being played
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    proc = spawn()
    player.join(60)
    wait_seen(proc, 30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    log_lines = (tmp_path / "w.log").read_text()
    assert agl_key not in log_lines
    assert '"msg": "collect finished"' in log_lines

    with Store.open(db) as store:
        cur = store.cursor()
        rows = cur.execute("SELECT rollout_id, decision_id FROM decisions").fetchall()
        assert len(rows) == 30 * sim.decisions == len(set(rows))
        assert {d for _, d in rows} == set().union(*(e["decisions"] for e in
                                                     sim.expected.values()))
        assert cur.execute("SELECT count(*), count(DISTINCT reward_id) FROM rewards"
                           ).fetchall()[0] == (30, 30)
        stats = json.loads(store.get_cursor(f"agl:{agl_server.url}") or "{}")
        assert (stats["seen"], stats["captured"], stats["missed"]) == (30, 30, 0)


def test_refused_key_stops_with_a_clear_message(agl_key, fresh_agl_store) -> None:
    with GatewayTap(ListSink(), port=0, key=agl_key) as gateway:  # the same app, in-process
        poller = Poller(gateway.url, key="not-" + agl_key)
        started = time.monotonic()
        with pytest.raises(AuthError, match="refused the API key") as info:
            poller.run(ListSink(), threading.Event())
    assert time.monotonic() - started < 2
    assert agl_key not in str(info.value) and "not-" not in str(info.value)


def test_unreachable_gateway_backs_off_and_keeps_trying() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    poller = Poller(f"http://127.0.0.1:{port}", backoff_base_s=0.05, backoff_cap_s=0.2)
    sink = ListSink()
    thread, stop = start_poller(poller, sink)
    time.sleep(1.0)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and not thread.errors  # type: ignore[attr-defined]
    assert 3 <= poller.stats.errors <= 60


# --- one rollout never stops the poller; reward identity across gateway restarts -------------

# Agent Lightning stores this decision, then answers 500 to every events read of its rollout:
# its JSON encoder refuses the lone surrogate (checked in the tests below).
POISON = ('{"event_type": "tractatus.decision", "data": {"schema": "tractatus.decision/1", '
          '"decision_id": "poison", "agent_id": "a", "round": 0, "arm": "governed", '
          '"mode": "enforce", "action": {"kind": "publish", "summary": "x\\ud800"}, '
          '"checks": [], "verdict": "allow", "executed": true, "latency_us": 1}}')


def send(server, method: str, path: str, **kw) -> int:  # type: ignore[no-untyped-def]
    """One request on its own connection (after a 500 the gateway drops the connection)."""
    with server.client() as c:
        return c.request(method, path, **kw).status_code


def post_poison(server, rid: str, attempt: str = "a0") -> None:  # type: ignore[no-untyped-def]
    send(server, "POST", f"/api/rollouts/{rid}/attempt/{attempt}/events", content=POISON,
         headers={"content-type": "application/json"})
    # The event is stored; from now on the gateway cannot serve this rollout's decisions.
    assert send(server, "GET", f"/api/rollouts/{rid}/events",
                params={"event_type": "tractatus.decision"}) == 500


def poll_passes(poller: Poller, sink, n: int) -> None:  # type: ignore[no-untyped-def]
    """`n` passes of the poller, in this thread (deterministic)."""
    async def run() -> None:
        async with poller._client() as client:
            for _ in range(n):
                await poller.poll_once(client, sink, running=False)

    asyncio.run(run())


def test_a_rollout_the_gateway_cannot_serve_is_reported_and_the_others_are_stored(
        agl_server, agl_key, store, writer, q, training, poller_log) -> None:
    sim = training(agl_server.url, agl_key, delete_after_s=None)
    poller = Poller(agl_server.url, key=agl_key, interval_s=0.1, running_interval_s=0.2)
    thread, stop = start_poller(poller, writer_sink(writer, "poison-run"), store)
    [bad] = sim.enqueue(0, 1)
    send(agl_server, "PATCH", f"/api/rollouts/{bad}", json={"status": {
        "state": "running", "last_attempt_id": "a0"}})
    send(agl_server, "POST", f"/api/rollouts/{bad}/attempt/a0/events", json={
        "event_type": "tractatus.decision", "data": decision_payload(f"{bad}-d0", "agent-9")})
    wait_for(lambda: q("SELECT count(*) FROM decisions WHERE decision_id = ?", f"{bad}-d0")
             == [(1,)], what="the decision read while it ran")
    post_poison(agl_server, bad)
    wait_for(lambda: poller_log.fields("cannot read a running rollout"),
             what="the running read to fail")
    player = threading.Thread(target=sim.round, args=(0, 10))  # the others, meanwhile
    player.start()
    send(agl_server, "POST", f"/api/rollouts/{bad}/attempt/a0/events",
         json={"event_type": "reward", "data": {"value": 0.5}})
    send(agl_server, "PATCH", f"/api/rollouts/{bad}", json={"status": {"state": "succeeded"}})
    player.join(60)
    wait_for(lambda: poller.stats.seen == 11 and poller.stats.retrying == 0,
             what="every rollout settled")
    stop.set()
    thread.join(10)
    assert not thread.errors and not thread.is_alive()  # type: ignore[attr-defined]
    writer.flush()

    st = poller.stats
    assert (st.seen, st.after, st.captured, st.missed, st.unreadable, st.partial) == (
        11, 11, 10, 1, 1, 1)
    assert st.read_errors >= poller.read_attempts and st.errors == 0  # never a backoff
    # Reported with its id and status: log lines, and a quarantine row in the store.
    assert [(f["rollout_id"], f["status"]) for f in poller_log.fields(
        "cannot read a running rollout")] == [(bad, 500)]
    assert [(f["rollout_id"], f["status"], f["attempts"]) for f in poller_log.fields(
        "rollout unreadable, given up")] == [(bad, 500, poller.read_attempts)]
    [(source, reason, raw)] = q("SELECT source, reason, raw FROM quarantine")
    assert source == poller.source and reason.startswith(f"rollout {bad}: unreadable")
    assert "HTTP 500" in reason
    assert json.loads(raw)["rollout_id"] == bad and json.loads(raw)["status"] == 500
    # Every other rollout is stored whole; of the bad one, what was read while it ran.
    others = set(sim.expected) - {bad}
    assert len(others) == 10
    assert {r[0] for r in q("SELECT decision_id FROM decisions")} == \
        set().union(*(sim.expected[r]["decisions"] for r in others)) | {f"{bad}-d0"}
    assert {r[0] for r in q("SELECT rollout_id FROM rewards")} == others
    assert json.loads(store.get_cursor(poller.source) or "{}")["unreadable"] == 1
    no_duplicates(q)


def test_an_unreadable_rollout_is_retried_a_bounded_number_of_times_across_poller_restarts(
        agl_server, agl_key, store, writer, q) -> None:
    with agl_server.client() as c:
        c.post("/api/rollouts", json=[{"input": {}, "rollout_id": r} for r in ("bad", "good")])
        for rid in ("bad", "good"):
            c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "running",
                                                               "last_attempt_id": "a0"}})
        c.post("/api/rollouts/good/attempt/a0/events", json={
            "event_type": "tractatus.decision", "data": decision_payload("good-d0", "a")})
    post_poison(agl_server, "bad")
    for rid in ("bad", "good"):
        send(agl_server, "PATCH", f"/api/rollouts/{rid}", json={"status": {"state": "succeeded"}})
    sink = writer_sink(writer, "retry-run")

    first = Poller(agl_server.url, key=agl_key, read_attempts=3)
    poll_passes(first, sink, 1)
    st = first.stats
    assert (st.seen, st.captured, st.missed, st.retrying, st.read_errors) == (2, 1, 0, 1, 1)
    writer.flush()
    # A restarted poller resumes the pending retry from the committed cursor.
    second = Poller(agl_server.url, key=agl_key, read_attempts=3)
    second.resume(store.get_cursor(second.source))
    assert second.stats.retrying == 1
    poll_passes(second, sink, 1)
    assert (second.stats.retrying, second.stats.unreadable) == (1, 0)  # second read failed
    poll_passes(second, sink, 3)  # the third gives up; later passes read nothing more of it
    st = second.stats
    assert (st.seen, st.captured, st.missed, st.unreadable, st.retrying, st.read_errors) == (
        2, 1, 1, 1, 0, 3)
    writer.flush()
    assert q("SELECT count(*) FROM quarantine WHERE reason LIKE 'rollout bad: unreadable, "
             "given up after 3 reads%'") == [(1,)]
    assert q("SELECT decision_id FROM decisions") == [("good-d0",)]


def play_with_rewards(server, rid: str, tag: str, value: float) -> None:  # type: ignore[no-untyped-def]
    """A rollout with one decision, Agent Lightning's own reward event and our SDK's reward
    (a new Governor each time: a new agent process)."""
    from tractatus_watch.governance.governor import Governor
    from tractatus_watch.governance.sender import Sender

    with server.client() as c:
        c.post("/api/rollouts", json=[{"input": {}, "rollout_id": rid}]).raise_for_status()
        c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "running",
                                                           "last_attempt_id": "a0"}})
        c.post(f"/api/rollouts/{rid}/attempt/a0/events", json={
            "event_type": "tractatus.decision",
            "data": decision_payload(f"{rid}-{tag}-d0", "agent-1")}).raise_for_status()
        c.post(f"/api/rollouts/{rid}/attempt/a0/events", json={
            "event_type": "reward", "data": {"value": value}}).raise_for_status()
        sender = Sender(f"{server.url}/api/rollouts/{rid}/attempt/a0/events", key=server.key)
        gov = Governor([], agent_id="agent-1", arm="governed", rollout_id=rid, sink=sender)
        gov.reward(value + 0.01, round=0)
        gov.close()
        assert sender.stats.sent == 1
        c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "succeeded"}})


def test_a_rollout_id_reused_after_a_gateway_restart_keeps_its_rewards(
        agl_server, agl_key, store, writer, q) -> None:
    poller = Poller(agl_server.url, key=agl_key, interval_s=0.1, running_interval_s=0.2,
                    backoff_cap_s=0.5)
    thread, stop = start_poller(poller, writer_sink(writer, "reuse-run"), store)
    play_with_rewards(agl_server, "reused", "first", 0.25)
    wait_for(lambda: poller.stats.captured == 1, what="the first rollout")
    agl_server.restart()  # the gateway forgets it; a new job enqueues the same id
    wait_for(lambda: poller.stats.restarts == 1, what="restart detection")
    play_with_rewards(agl_server, "reused", "second", 0.75)
    wait_for(lambda: poller.stats.captured == 2, what="the second rollout")
    stop.set()
    thread.join(10)
    assert not thread.errors  # type: ignore[attr-defined]
    writer.flush()

    assert sorted(v for (v,) in q("SELECT value FROM rewards WHERE rollout_id = 'reused'")) == [
        0.25, 0.26, 0.75, 0.76]
    assert q("SELECT sum(reward_n) FROM rollup_agent") == [(4,)]
    native = sorted(r for (r,) in q("SELECT reward_id FROM rewards WHERE value IN (0.25, 0.75)"))
    assert native == ["reused:a0:reward:0", "reused:a0:reward:0@1"]  # position, then epoch
    assert q("SELECT count(*) FROM decisions") == [(2,)]
    no_duplicates(q)


def test_a_rollout_replayed_into_a_second_gateway_stores_each_reward_once(
        tmp_path: Path, agl_server, agl_key, store, writer, q) -> None:
    """Same rollout id, same payloads (our SDK's reward_id included), another gateway: one
    copy of everything (the DuckLake version of this is in test_lake_collect.py)."""
    (tmp_path / "second").mkdir()
    second = AglServer(tmp_path / "second", agl_key)
    second.start()
    try:
        sink = writer_sink(writer, "replay-run")
        play_with_rewards(agl_server, "rp", "once", 0.5)
        poll_passes(Poller(agl_server.url, key=agl_key), sink, 1)
        with agl_server.client() as c:
            events = c.get("/api/rollouts/rp/events").json()
        with second.client() as c:
            c.post("/api/rollouts", json=[{"input": {}, "rollout_id": "rp"}]).raise_for_status()
            c.patch("/api/rollouts/rp", json={"status": {"state": "running",
                                                         "last_attempt_id": "a0"}})
            for ev in events:
                c.post("/api/rollouts/rp/attempt/a0/events", json={
                    "event_type": ev["event_type"], "data": ev["data"]}).raise_for_status()
            c.patch("/api/rollouts/rp", json={"status": {"state": "succeeded"}})
        replayed = Poller(second.url, key=agl_key)
        poll_passes(replayed, sink, 1)
        assert (replayed.stats.captured, replayed.stats.rewards) == (1, 2)
    finally:
        second.stop()
    writer.flush()
    assert q("SELECT count(*), count(DISTINCT reward_id), sum(value) FROM rewards") == [
        (2, 2, 1.01)]
    assert q("SELECT count(*) FROM decisions") == [(1,)]
    no_duplicates(q)


def test_a_rollout_that_breaks_the_running_listing_leaves_final_reads_going(
        agl_server, agl_key, store, writer, q, training, poller_log) -> None:
    """A lone surrogate in one rollout's metadata makes Agent Lightning answer 500 to every
    listing of queuing/running rollouts; the terminal log still answers, so the poller reads
    each rollout when it ends instead of backing off."""
    send(agl_server, "POST", "/api/rollouts", headers={"content-type": "application/json"},
         content='[{"input": {}, "rollout_id": "meta", "metadata": {"note": "x\\ud800"}}]')
    assert send(agl_server, "GET", "/api/rollouts", params={"state_in": "queuing"}) == 500
    sim = training(agl_server.url, agl_key, delete_after_s=None)
    poller = Poller(agl_server.url, key=agl_key, interval_s=0.1, running_interval_s=0.2)
    thread, stop = start_poller(poller, writer_sink(writer, "listing-run"), store)
    sim.round(0, 6)
    wait_for(lambda: poller.stats.captured == 6, what="every rollout, read when it ended")
    stop.set()
    thread.join(10)
    assert not thread.errors  # type: ignore[attr-defined]
    writer.flush()
    assert (poller.stats.seen, poller.stats.missed, poller.stats.errors) == (6, 0, 0)
    assert [f["status"] for f in poller_log.fields("cannot list running rollouts")] == [500]
    assert q("SELECT count(*) FROM decisions") == [(6 * sim.decisions,)]
    no_duplicates(q)
