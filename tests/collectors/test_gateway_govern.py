"""The governed proxy in-process: the tap swaps Agent Lightning's `forward_request` for the
governed one and puts the very same object back on stop; decisions reach the tee (with the
rollout's stamp) after the model_request they govern; a call without a function name is
removed in enforce mode and left in shadow mode."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tractatus_watch.collectors.gateway_govern import GatewayGovernance, action_of
from tractatus_watch.collectors.gateway_tap import GatewayTap
from tractatus_watch.collectors.sink import ListSink
from tractatus_watch.records.witness import call_digest

from support.model_stub import StubModelServer

CLICKBAIT = {"headline": "You won't believe what housing experts found! SHOCKING!!!",
             "text": "Doctors hate this one weird trick."}
CLEAN = {"headline": "What the new housing figures mean for readers",
         "text": "What changed and what the evidence says.", "sources": ["https://example.org"]}


def respond(body: dict[str, Any]) -> dict[str, Any]:
    calls = [{"id": "c0", "type": "function",
              "function": {"name": "publish", "arguments": json.dumps(CLEAN)}},
             {"id": "c1", "type": "function",
              "function": {"name": "publish", "arguments": json.dumps(CLICKBAIT)}},
             {"id": "c2", "type": "function", "function": {"arguments": "{}"}}]  # no name
    return {"id": "x", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "finish_reason": "tool_calls",
         "message": {"role": "assistant", "content": None, "tool_calls": calls}}]}


def test_action_of_reads_every_string_and_never_self_approval() -> None:
    a = action_of("send", json.dumps({"to": "x", "body": {"parts": ["one", "two"]},
                                      "headline": "H", "pre_approved": True, "sources": "s"}))
    assert (a.kind, a.text, a.headline, a.sources, a.pre_approved) == \
        ("send", "x\none\ntwo", "H", ["s"], False)
    assert action_of("run", "rm -rf /").text == "rm -rf /"  # not JSON: governed as text


@pytest.mark.parametrize("mode", ["enforce", "shadow"])
def test_the_governed_forward_is_installed_and_taken_back(
        mode: str, agl_key: str, fresh_agl_store: None) -> None:
    from agentlightning.server import proxy
    from agentlightning.server.routes import proxy as proxy_route

    original = proxy_route.forward_request
    sink = ListSink()
    with StubModelServer(respond=respond) as stub, GatewayTap(
            sink, port=0, key=agl_key, govern=GatewayGovernance(mode=mode)) as tap:
        assert proxy_route.forward_request is not original
        assert proxy_route.forward_request.__wrapped__ is original  # type: ignore[attr-defined]
        with httpx.Client(base_url=tap.url, headers={"x-api-key": agl_key}, timeout=10) as c:
            c.post("/api/models", json=[{"model": tap._config["default_proxy"]["model_name"],
                                         "endpoint": stub.base_url}]).raise_for_status()
            c.post("/api/rollouts", json=[{"input": {}, "rollout_id": "r", "metadata": {
                "tractatus_watch": {"agent_id": "a-3", "round": 2}}}]).raise_for_status()
            r = c.post("/proxy/rollout/r/attempt/0/mode/train/openai/v1/chat/completions",
                       json={"messages": [{"role": "user", "content": "go"}]})
    assert proxy_route.forward_request is original and proxy.forward_request is original
    message = r.json()["choices"][0]["message"]
    if mode == "enforce":
        assert [c["id"] for c in message["tool_calls"]] == ["c0"]
        assert message["refusal"].splitlines() == [
            "tool call c1 refused at the gateway: action 'publish' stopped (block): "
            "BoundaryEnforcer CONTENT-CLICKBAIT: clickbait phrase 'you won't believe'",
            "tool call c2 refused at the gateway: it names no function"]
    else:
        assert r.json() == respond({})
    decisions = sink.all.decisions
    assert [(d.agent_id, d.round, d.arm, d.executed, d.extra["enforced_at"]) for d in decisions] \
        == [("a-3", 2, "governed" if mode == "enforce" else "ungoverned", True, "gateway"),
            ("a-3", 2, "governed" if mode == "enforce" else "ungoverned", mode == "shadow",
             "gateway")]
    assert [d.action.extra["call_digest"] for d in decisions] == \
        [call_digest(json.dumps(CLEAN)), call_digest(json.dumps(CLICKBAIT))]
    # In the rollout's list: the witness first, the decisions it led to after it.
    from agentlightning.server.store import _events

    assert [e.event_type for e in _events["r"]["0"]] == \
        ["model_request", "tractatus.decision", "tractatus.decision"]
