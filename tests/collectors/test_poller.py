"""Poller tap against the real `agl-server`: completeness under a consumer that deletes each
rollout 1 s after it ends, missed rollouts counted, gateway restart and SIGKILL of the collecting
process without loss or duplication, backoff, and a clear stop on a refused key."""

from __future__ import annotations

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
    sim = training(agl_server.url, agl_key, delete_after_s=1.0, fail_every=7,
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
    stored_terminal = {r[0] for r in q("SELECT rollout_id FROM rollouts "
                                       "WHERE status IN ('succeeded', 'failed')")}
    assert len(stored_terminal) == st.captured
    # Every missed rollout is counted: exactly those without their final read stored.
    assert st.missed == total - len(stored_terminal)
    # One rollout a round is deleted the instant it ends (to have misses to count); of those
    # the trainer deletes 1 s after they end, at least 99% are fully captured.
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
    assert q("SELECT count(*) FROM events WHERE event_type = 'model_request'")[0][0] == 0
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
