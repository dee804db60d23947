"""The gateway tap in a process of its own (collectors/gateway_process.py): it answers exactly
as the in-process tap (and so as `agl-server`), hands over the same records, stores every event
exactly once, and its child never outlives it."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tractatus_watch.collectors.gateway_process import GatewayProcess
from tractatus_watch.collectors.gateway_tap import GatewayTap, server_config
from tractatus_watch.collectors.sink import ListSink, writer_sink

from .test_gateway_tap import client_flow, decision


@contextmanager
def serving(proc: GatewayProcess, sink: Any, timeout_s: float = 60.0) -> Iterator[GatewayProcess]:
    """`proc` run as a collect source in a thread, until the block ends (then drained)."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            proc.run(sink, stop)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not proc.listening.wait(0.05):
        assert not failure, failure
        assert thread.is_alive() and time.monotonic() < deadline, "the child did not listen"
    try:
        yield proc
    finally:
        stop.set()
        thread.join(timeout_s)
        assert not thread.is_alive(), "run() did not return"
    assert not failure, failure


def child(key: str, **kw: Any) -> GatewayProcess:
    return GatewayProcess(ListSink(), config=server_config(host="127.0.0.1", port=0, key=key),
                          **kw)


def _records(sink: ListSink) -> dict[str, Any]:
    """What the tee handed over, without the clock times."""
    all_ = sink.all
    return {"decisions": [(d.decision_id, d.rollout_id == "", d.verdict) for d in
                          all_.decisions],
            "rewards": [r.value for r in all_.rewards],
            "events": [(e.event_type, e.payload) for e in all_.events],
            "rollouts": sorted((t.rollout_id == "fixed-id-1", t.status) for t in all_.rollouts)}


def test_the_child_answers_and_tees_as_the_tap_in_process(agl_key: str,
                                                          fresh_agl_store: None) -> None:
    here = ListSink()
    with GatewayTap(here, port=0, key=agl_key) as tap:
        expected = client_flow(tap.url, agl_key)
    there = ListSink()
    with serving(child(agl_key), there) as proc:
        got = client_flow(proc.url, agl_key)
    assert got == expected
    assert _records(there) == _records(here)
    assert [d.decision_id for d in there.all.decisions] == ["d-0", "d-1", "d-2"]
    # Its stats came back with the records: the same figures the tap in this process counts.
    assert (proc.stats.decisions, proc.stats.rewards, proc.stats.events) == (3, 1, 5)
    assert proc.handed_decisions == 3
    # Each delivery carries the tap's cursor for this source, as the tap's own would.
    assert {c.cursor[0] for c in there.calls if c.cursor} == {proc.source}


def test_every_event_stored_exactly_once_through_the_child(agl_key: str, writer: Any,
                                                          q: Any) -> None:
    n_rollouts, per_rollout = 12, 20
    proc = child(agl_key, batch_interval_s=0.05)
    with serving(proc, writer_sink(writer, "proc-run")):
        with httpx.Client(base_url=proc.url, headers={"x-api-key": agl_key}) as c:
            rollouts = [r["rollout_id"] for r in c.post("/api/rollouts", json=[
                {"input": {}, "metadata": {"tractatus_watch": {"round": i % 3}}}
                for i in range(n_rollouts)]).json()]

            def agent(idx: int, rid: str) -> None:
                with httpx.Client(base_url=proc.url, headers={"x-api-key": agl_key}) as a:
                    a.patch(f"/api/rollouts/{rid}",
                            json={"status": {"state": "running", "last_attempt_id": "0"}})
                    for k in range(per_rollout):
                        body = ({"event_type": "tractatus.decision",
                                 "data": decision(idx * 1000 + k)} if k % 2 == 0 else
                                {"event_type": "reward", "data": {"value": k / 10}})
                        assert a.post(f"/api/rollouts/{rid}/attempt/0/events",
                                      json=body).status_code == 200
                    a.patch(f"/api/rollouts/{rid}", json={"status": {"state": "succeeded"}})

            threads = [threading.Thread(target=agent, args=(i, rid))
                       for i, rid in enumerate(rollouts)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            half = n_rollouts * per_rollout // 2
            # Asked for, the records come at once, not after the batch interval.
            proc.deliver_now()
            deadline = time.monotonic() + 30
            while proc.handed_decisions < half and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.handed_decisions == half
    writer.flush()
    assert q("SELECT count(*), count(DISTINCT decision_id) FROM decisions")[0] == (half, half)
    assert q("SELECT count(*), count(DISTINCT reward_id) FROM rewards")[0] == (half, half)
    assert q("SELECT count(*) FROM rollouts")[0][0] == n_rollouts * 3
    assert q("SELECT count(*) FROM decisions d JOIN rollouts r USING (run_id, rollout_id) "
             "WHERE r.status = 'succeeded' AND d.round = r.round")[0][0] == half
    assert q("SELECT count(*) FROM quarantine")[0][0] == 0
    assert (proc.stats.decisions, proc.stats.rewards) == (half, half)


def test_the_child_stops_with_its_source_and_a_busy_port_is_a_clear_error(
        agl_key: str, caplog: pytest.LogCaptureFixture) -> None:
    proc = child(agl_key)
    with caplog.at_level(logging.INFO, logger="tractatus_watch"):
        with serving(proc, ListSink()):
            port = proc.port
            assert httpx.get(f"{proc.url}/healthz").status_code == 200
    # The child's own log lines came through this process's loggers.
    assert any(r.name == "tractatus_watch.collectors.gateway_tap" and "drained" in r.message
               for r in caplog.records)
    with pytest.raises(httpx.ConnectError):  # nothing listens there any more
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        bad = GatewayProcess(ListSink(), config=server_config(host="127.0.0.1", port=taken,
                                                              key=agl_key))
        with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{taken}"):
            bad.run(ListSink(), threading.Event())
