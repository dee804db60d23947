"""The tap's seam into Agent Lightning: the store's objects stay the store while a tap runs and
after it stops (same objects, every change in them), and a tap can start again."""

from __future__ import annotations

import sys
from typing import Any

import httpx

from tractatus_watch.collectors.gateway_tap import GatewayTap
from tractatus_watch.collectors.sink import ListSink

from .test_gateway_tap import decision

STORE_NAMES = ("_rollouts", "_events", "_models", "_terminal_order")


def agl_state() -> dict[tuple[str, str], Any]:
    """Every module attribute of Agent Lightning that holds a store container or
    `record_event`, by (module, name): the objects themselves."""
    import agentlightning.server.app  # noqa: F401  (imports every route module)

    out: dict[tuple[str, str], Any] = {}
    for mod_name, module in list(sys.modules.items()):
        if module is None or not mod_name.startswith("agentlightning."):
            continue
        for name in (*STORE_NAMES, "record_event"):
            if hasattr(module, name):
                out[(mod_name, name)] = getattr(module, name)
    return out


def same_objects(before: dict[tuple[str, str], Any]) -> list[tuple[str, str]]:
    """The attributes that no longer hold the very object they held before."""
    now = agl_state()
    return [k for k, v in before.items() if now.get(k) is not v] + \
        [k for k in now if k not in before]


def play(url: str, key: str, rid: str, decisions: range, *, finish: bool,
         tool_call: bool = False) -> None:
    with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=10) as c:
        assert c.post("/api/rollouts", json=[{"input": {}, "rollout_id": rid}]).status_code == 201
        c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "running",
                                                           "last_attempt_id": "0"}})
        for i in decisions:
            assert c.post(f"/api/rollouts/{rid}/attempt/0/events", json={
                "event_type": "tractatus.decision", "data": decision(i)}).status_code == 200
        if tool_call:
            c.post(f"/api/rollouts/{rid}/attempt/0/events",
                   json={"event_type": "tool_call", "data": {"k": 0}})
        c.post(f"/api/rollouts/{rid}/attempt/0/events",
               json={"event_type": "reward", "data": {"value": 0.5}})
        if finish:
            c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "succeeded"}})


def test_the_store_objects_stay_in_place_and_hold_everything(agl_key: str,
                                                             fresh_agl_store: None) -> None:
    # What code holds that imported the names before any tap started (Agent Lightning's own
    # tests do this, to clear the store between tests).
    from agentlightning.server.routes import events as events_route
    from agentlightning.server.store import _events, _rollouts, _terminal_order

    before = agl_state()
    original_record_event = events_route.record_event
    sink = ListSink()
    with GatewayTap(sink, port=0, key=agl_key) as tap:
        play(tap.url, agl_key, "kept", range(0, 3), finish=True)
        play(tap.url, agl_key, "gone", range(10, 12), finish=True)
        # While the tap runs the store is already the objects imported earlier: no copy.
        assert set(_rollouts) == {"kept", "gone"} and len(_events["kept"]["0"]) == 4
        with httpx.Client(base_url=tap.url, headers={"x-api-key": agl_key}) as c:
            assert c.delete("/api/rollouts/gone").status_code == 204
        assert "gone" not in _rollouts
    assert same_objects(before) == []
    assert events_route.record_event is original_record_event
    # Plain containers with what the routes put there, nothing of ours left in them.
    assert type(_rollouts) is dict and type(_events) is dict
    assert type(_events["kept"]) is dict and type(_events["kept"]["0"]) is list
    assert list(_rollouts) == ["kept"] and _rollouts["kept"].status.state == "succeeded"
    assert [(e.event_type, e.data.get("decision_id")) for e in _events["kept"]["0"]] == [
        ("tractatus.decision", "d-0"), ("tractatus.decision", "d-1"),
        ("tractatus.decision", "d-2"), ("reward", None)]
    assert _terminal_order == ["kept", "gone"]
    # And the tee saw all of it while it ran.
    assert sorted(d.decision_id for d in sink.all.decisions) == ["d-0", "d-1", "d-10", "d-11",
                                                                 "d-2"]


def test_a_second_tap_in_the_same_process_continues_the_store(agl_key: str,
                                                             fresh_agl_store: None) -> None:
    from agentlightning.server.store import _events

    before = agl_state()
    first = ListSink()
    with GatewayTap(first, port=0, key=agl_key) as tap:
        play(tap.url, agl_key, "r1", range(0, 2), finish=False, tool_call=True)
    assert same_objects(before) == []
    second = ListSink()
    with GatewayTap(second, port=0, key=agl_key) as tap:
        with httpx.Client(base_url=tap.url, headers={"x-api-key": agl_key}) as c:
            # The rollout the first tap served is still there, and its events go on.
            assert c.get("/api/rollouts/r1").json()["rollout"]["status"]["state"] == "running"
            for i in (2, 3):
                assert c.post("/api/rollouts/r1/attempt/0/events", json={
                    "event_type": "tractatus.decision", "data": decision(i)}).status_code == 200
                assert c.post("/api/rollouts/r1/attempt/0/events", json={
                    "event_type": "tool_call", "data": {"k": i}}).status_code == 200
            c.patch("/api/rollouts/r1", json={"status": {"state": "failed"}})
    assert same_objects(before) == []
    assert [d.decision_id for d in first.all.decisions] == ["d-0", "d-1"]
    assert [d.decision_id for d in second.all.decisions] == ["d-2", "d-3"]
    assert [t.status for t in second.all.rollouts] == ["failed"]
    # An event's position (its id) continues from what the attempt already held, by type:
    # the first tap saw tool_call 0, the second tool_calls 1 and 2.
    assert [e.event_id for e in first.all.events] == ["r1:0:tool_call:0"]
    assert [e.event_id for e in second.all.events] == ["r1:0:tool_call:1", "r1:0:tool_call:2"]
    assert [e.event_type for e in _events["r1"]["0"]] == [
        "tractatus.decision", "tractatus.decision", "tool_call", "reward",
        "tractatus.decision", "tool_call", "tractatus.decision", "tool_call"]
