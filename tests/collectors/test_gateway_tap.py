"""Gateway tap: the real Agent Lightning app served by us answers exactly like `agl-server`, and
every event posted to it is stored exactly once."""

from __future__ import annotations

import re
import socket
import threading
import time
from typing import Any

import httpx
import pytest

from tractatus_watch.collectors.gateway_tap import GatewayTap
from tractatus_watch.collectors.sink import ListSink, writer_sink
from agentlightning.client import AgentLightningSyncClient

HEX = re.compile(r"[0-9a-f]{32}")


def decision(i: int, *, verdict: str = "allow") -> dict[str, Any]:
    return {"schema": "tractatus.decision/1", "decision_id": f"d-{i}", "agent_id": f"agent-{i % 3}",
            "round": 0, "arm": "governed", "mode": "enforce",
            "action": {"kind": "publish", "summary": f"post {i}"},
            "checks": [{"service": "BoundaryEnforcer", "rule_id": "inst_016", "verdict": verdict,
                        "raw_verdict": verdict.upper(), "enforced": True, "latency_us": 300}],
            "verdict": verdict, "executed": verdict != "block", "latency_us": 400,
            "ts": 1_790_000_000.0 + i}


def _normalise(value: Any, ids: dict[str, str]) -> Any:
    """Responses with run-specific values (generated ids, clock times) replaced by stable names."""
    if isinstance(value, dict):
        return {k: ("<t>" if k in ("timestamp", "created_at", "updated_at") else
                    _normalise(v, ids)) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, ids) for v in value]
    if isinstance(value, str):
        return HEX.sub(lambda m: ids.setdefault(m.group(0), f"<id{len(ids)}>"), value)
    return value


def client_flow(url: str, key: str) -> list[Any]:
    """Agent Lightning's own client doing what trainers, controllers and agents do."""
    ids: dict[str, str] = {}
    out: list[Any] = []
    with AgentLightningSyncClient(base_url=url, key=key, timeout=10, max_retries=0) as c:
        def rec(resp: httpx.Response) -> Any:
            body = resp.json() if resp.content else None
            out.append((resp.request.method, resp.status_code, _normalise(body, ids)))
            return body

        rec(c.get("/healthz"))
        created = rec(c.post("/api/rollouts", json=[
            {"input": {"data_id": "x1", "q": "a"}, "metadata": {"batch_idx": 0}},
            {"input": {"q": "b"}, "rollout_id": "fixed-id-1", "is_train": False}]))
        rec(c.post("/api/rollouts", json=[{"input": {"q": "again"}, "rollout_id": "fixed-id-1"}]))
        first = created[0]["rollout_id"]
        rec(c.get("/api/rollouts", params={"state_in": "queuing"}))
        rec(c.get(f"/api/rollouts/{first}"))
        rec(c.patch(f"/api/rollouts/{first}",
                    json={"status": {"state": "running", "last_attempt_id": "att-1"}}))
        rec(c.patch(f"/api/rollouts/{first}", json={"status": {"state": "queuing"}}))  # 409
        rec(c.patch(f"/api/rollouts/{first}", json={"bogus": 1}))
        for i in range(3):
            rec(c.post(f"/api/rollouts/{first}/attempt/att-1/events",
                       json={"event_type": "tractatus.decision", "data": decision(i)}))
        rec(c.post(f"/api/rollouts/{first}/attempt/att-1/events",
                   json={"event_type": "model_request", "data": {
                       "model": "m", "request": {"messages": []}, "latency_ms": 5.0,
                       "response": {"prompt_token_ids": [1, 2], "choices": [
                           {"token_ids": [3], "logprobs": {"token_logprobs": [-0.1]}}]}}}))
        rec(c.post(f"/api/rollouts/{first}/attempt/att-1/events",
                   json={"event_type": "reward", "data": {"value": 0.7, "source": "agent"}}))
        rec(c.post("/api/rollouts/missing/attempt/0/events", json={"event_type": "x"}))
        rec(c.get(f"/api/rollouts/{first}/events"))
        rec(c.get(f"/api/rollouts/{first}/events", params={"event_type": "tractatus.decision"}))
        rec(c.get(f"/api/rollouts/{first}/events", params={"format": "triplet"}))
        rec(c.get(f"/api/rollouts/{first}"))
        rec(c.patch(f"/api/rollouts/{first}", json={"status": {"state": "succeeded"}}))
        rec(c.patch("/api/rollouts/fixed-id-1", json={"status": {"state": "failed",
                                                                  "error_message": "boom"}}))
        rec(c.get("/api/rollouts/terminal", params={"after": 0, "limit": 10}))
        rec(c.get("/api/rollouts", params={"state_in": ["succeeded", "failed"]}))
        rec(c.delete(f"/api/rollouts/{first}"))
        rec(c.get(f"/api/rollouts/{first}/events"))
        rec(c.get("/api/rollouts/terminal"))
        rec(c.post("/api/models", json=[{"model": "m", "endpoint": "http://127.0.0.1:1/v1"}]))
        rec(c.get("/proxy/state"))
    with httpx.Client(base_url=url) as anonymous:
        resp = anonymous.get("/api/rollouts/terminal")
        out.append(("GET", resp.status_code, resp.json()))
    return out


def test_client_flows_identical_to_agl_server(agl_server, agl_key: str, fresh_agl_store) -> None:
    expected = client_flow(agl_server.url, agl_key)
    sink = ListSink()
    with GatewayTap(sink, port=0, key=agl_key) as tap:
        got = client_flow(tap.url, agl_key)
    assert got == expected
    assert [s for _, s, _ in got].count(409) == 1 and [s for _, s, _ in got][-1] == 401
    # And the tee saw the flow: 3 decisions, 1 reward, 1 trimmed model_request, 5 transitions.
    assert [d.decision_id for d in sink.all.decisions] == ["d-0", "d-1", "d-2"]
    assert [r.value for r in sink.all.rewards] == [0.7]
    (mr,) = sink.all.events
    assert mr.event_type == "model_request" and mr.payload == {"model": "m", "latency_ms": 5.0}
    assert sorted((t.rollout_id == "fixed-id-1", t.status) for t in sink.all.rollouts) == [
        (False, "queuing"), (False, "running"), (False, "succeeded"),
        (True, "failed"), (True, "queuing")]


def test_every_event_stored_exactly_once(agl_key: str, store, writer, q,
                                        fresh_agl_store) -> None:
    n_rollouts, per_rollout = 20, 30  # 10 decisions, 10 rewards, 10 other events each
    with GatewayTap(writer_sink(writer, "tap-run"), port=0, key=agl_key) as tap:
        with httpx.Client(base_url=tap.url, headers={"x-api-key": agl_key}) as c:
            rollouts = [r["rollout_id"] for r in c.post("/api/rollouts", json=[
                {"input": {}, "metadata": {"tractatus_watch": {"round": i % 4}}}
                for i in range(n_rollouts)]).json()]

        def agent(idx: int, rid: str) -> None:
            with httpx.Client(base_url=tap.url, headers={"x-api-key": agl_key}) as c:
                c.patch(f"/api/rollouts/{rid}",
                        json={"status": {"state": "running", "last_attempt_id": "0"}})
                for k in range(per_rollout):
                    if k % 3 == 0:
                        body = {"event_type": "tractatus.decision",
                                "data": decision(idx * 1000 + k, verdict="block" if k % 2 else
                                                 "allow")}
                    elif k % 3 == 1:
                        body = {"event_type": "reward", "data": {"value": k / 10}}
                    else:
                        body = {"event_type": "tool_call", "data": {"tool": "search", "k": k}}
                    assert c.post(f"/api/rollouts/{rid}/attempt/0/events",
                                  json=body).status_code == 200
                c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "succeeded"}})

        threads = [threading.Thread(target=agent, args=(i, rid)) for i, rid in enumerate(rollouts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    writer.flush()
    total = n_rollouts * per_rollout
    assert tap.stats.events == total
    assert q("SELECT count(*), count(DISTINCT decision_id) FROM decisions")[0] == \
        (total // 3, total // 3)
    assert q("SELECT count(*), count(DISTINCT reward_id) FROM rewards")[0] == \
        (total // 3, total // 3)
    assert q("SELECT count(*), count(DISTINCT event_id) FROM events")[0] == \
        (total // 3, total // 3)
    assert q("SELECT count(*) FROM rollouts")[0][0] == n_rollouts * 3
    # The stamped round reaches decisions and rewards; rewards learn agent and arm.
    assert q("SELECT count(*) FROM decisions d JOIN rollouts r USING (run_id, rollout_id) "
             "WHERE r.status = 'succeeded' AND d.round = r.round")[0][0] == total // 3
    assert q("SELECT count(*) FROM rewards WHERE arm = 'governed' AND agent_id LIKE 'agent-%'"
             )[0][0] == total // 3
    assert q("SELECT count(*) FROM quarantine")[0][0] == 0
    assert store.get_cursor(tap.source) is not None


def test_a_busy_port_is_a_clear_error(agl_key: str, fresh_agl_store) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        tap = GatewayTap(ListSink(), port=port, key=agl_key)
        with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{port}"):
            tap.start()
    # Nothing stays installed after a failed start: a new tap can start in this process.
    with GatewayTap(ListSink(), port=0, key=agl_key):
        pass


def test_latency_post_to_visible_row(agl_key: str, store, writer, q, fresh_agl_store) -> None:
    lat: list[float] = []
    with GatewayTap(writer_sink(writer, "lat"), port=0, key=agl_key) as tap:
        with httpx.Client(base_url=tap.url, headers={"x-api-key": agl_key}) as c:
            (r,) = c.post("/api/rollouts", json=[{"input": {}}]).json()
            for i in range(10):
                t0 = time.monotonic()
                c.post(f"/api/rollouts/{r['rollout_id']}/attempt/0/events",
                       json={"event_type": "tractatus.decision", "data": decision(i)})
                while not q("SELECT count(*) FROM decisions WHERE decision_id = ?", f"d-{i}")[0][0]:
                    assert time.monotonic() - t0 < 5
                    time.sleep(0.005)
                lat.append(time.monotonic() - t0)
    assert max(lat) < 1.0


def test_as_a_collect_source_a_failing_sink_stops_the_gateway(agl_key: str,
                                                              fresh_agl_store) -> None:
    def broken(records) -> None:  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    tap = GatewayTap(ListSink(), port=0, key=agl_key)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            tap.run(broken, stop)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while tap._server is None or not tap._server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with httpx.Client(base_url=tap.url, headers={"x-api-key": agl_key}) as c:
        c.post("/api/rollouts", json=[{"input": {}}])
    thread.join(10)
    stop.set()
    assert not thread.is_alive()
    assert failure and "disk full" in str(failure[0]) and tap.stats.lost >= 1
