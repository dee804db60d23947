"""Witnessed actions: the tool calls in recorded model responses, captured by the gateway tap and
the poller (the same ids, stored once), reconciled with the decisions by rollout, argument digest
and order."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from tractatus_watch.collectors.gateway_tap import GatewayTap
from tractatus_watch.collectors.poller import Poller, poll_until_idle
from tractatus_watch.collectors.sink import writer_sink
from tractatus_watch.governance.governor import Governor
from tractatus_watch.governance.sender import Sender
from tractatus_watch.records.agl import STAMP_KEY
from tractatus_watch.records.delivery import Records
from tractatus_watch.records.spool_format import parse_line
from tractatus_watch.governance.agl_hooks import records_to_lines
from tractatus_watch.records.witness import (
    WitnessedAction, call_digest, response_tool_calls, witnessed_actions,
)
from tractatus_watch.storage import witness_queries as W
from tractatus_watch.analysis.metrics import witness_figures

CLEAN = {"headline": "What the new housing figures mean", "text": "The figures, with sources."}
BAIT = {"headline": "You won't believe this SHOCKING trick!!!", "text": "Click to find out."}


def tool_call(i: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"call_{i}", "type": "function",
            "function": {"name": "publish", "arguments": json.dumps(args)}}


def model_request(calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": "m", "latency_ms": 4.0, "request": {"messages": [{"role": "user"}]},
            "response": {"id": "chatcmpl-1", "object": "chat.completion", "choices": [{
                "index": 0, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": calls},
                "logprobs": {"content": [{"token": "x", "logprob": -0.1}] * 50}}]}}


def test_digest_is_canonical_and_streams_assemble() -> None:
    assert call_digest('{"b": 1, "a": [1, 2]}') == call_digest({"a": [1, 2], "b": 1})
    assert call_digest('{"a": 1}') != call_digest('{"a": 2}')
    assert call_digest("not json") == call_digest(b"not json") != call_digest("not json ")
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c0", "function": {"name": "publish", "arguments": '{"head'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 1, "id": "c1", "function": {"name": "delete", "arguments": "{}"}},
            {"index": 0, "function": {"arguments": 'line": "x"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    assert response_tool_calls(chunks) == [("publish", '{"headline": "x"}'), ("delete", "{}")]
    # Only the first choice counts; a message without tool calls witnesses nothing.
    body = {"choices": [{"index": 1, "message": {"tool_calls": [tool_call(9, CLEAN)]}},
                        {"index": 0, "message": {"content": "hello"}}]}
    assert response_tool_calls(body) == []


def test_spool_lines_carry_witnessed_actions() -> None:
    (w,) = witnessed_actions(model_request([tool_call(0, CLEAN)]), event_id="r:0:model_request:3",
                             rollout_id="r", position=3, ts=1.5, run_id="run", agent_id="a",
                             arm="governed", round=2)
    assert (w.witness_id, w.position, w.idx, w.tool) == ("r:0:model_request:3#0", 3, 0, "publish")
    out = Records()
    for kind, data in records_to_lines(Records(witnessed=[w])):
        parse_line({"type": kind, "data": json.loads(json.dumps(data))}, out, "seg:1", "spool",
                   "{}")
    assert out.witnessed == [w] and not out.quarantined
    bad = Records()
    parse_line({"type": "witnessed", "data": {**w.to_payload(), "position": -1}}, bad, "seg:2",
               "spool", "{}")
    assert not bad.witnessed and "witnessed.position" in bad.quarantined[0].reason


def _wait(predicate: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_tap_and_poller_witness_once_and_reconcile(agl_key: str, store, writer, q,
                                                   fresh_agl_store) -> None:
    """Rollout A: three calls in one response (two identical), the agent governs one of the
    twins and the clean call, skips the other twin. Rollout B: governs a call it never got from
    the model (an unwitnessed decision) and one it did."""
    with GatewayTap(writer_sink(writer, "w-run"), port=0, key=agl_key) as tap:
        headers = {"x-api-key": agl_key}
        with httpx.Client(base_url=tap.url, headers=headers, timeout=10) as c:
            stamp = {STAMP_KEY: {"round": 4, "arm": "governed", "agent_id": "agent-7"}}
            a, b = [r["rollout_id"] for r in c.post("/api/rollouts", json=[
                {"input": {}, "metadata": stamp}, {"input": {}, "metadata": stamp}]).json()]
            calls_a = [tool_call(0, BAIT), tool_call(1, CLEAN), tool_call(2, BAIT)]
            calls_b = [tool_call(3, CLEAN)]
            for rid, calls in ((a, calls_a), (b, calls_b)):
                c.patch(f"/api/rollouts/{rid}",
                        json={"status": {"state": "running", "last_attempt_id": "0"}})
                c.post(f"/api/rollouts/{rid}/attempt/0/events",
                       json={"event_type": "model_request", "data": model_request(calls)})
            sender = Sender(base_url=tap.url, key=agl_key)
            gov = Governor(mode="enforce", agent_id="agent-7", arm="governed", run_id="w-run",
                           sink=sender)
            item = {"kind": "publish", "domain": "content"}
            gov.check({**item, "summary": BAIT["headline"], "text": BAIT["text"]}, round=4,
                      rollout_id=a, tool_call=calls_a[0])
            gov.check({**item, "summary": CLEAN["headline"]}, round=4, rollout_id=a,
                      tool_call=calls_a[1])
            gov.check({**item, "summary": "made up"}, round=4, rollout_id=b,
                      tool_call=tool_call(9, {"headline": "never proposed"}))
            gov.check({**item, "summary": CLEAN["headline"]}, round=4, rollout_id=b,
                      tool_call=calls_b[0])
            sender.flush(10.0)
            for rid in (a, b):
                c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "succeeded"}})
            # The poller reads the same gateway: the same witness ids, so nothing twice.
            poller = Poller(tap.url, key=agl_key, run_id="w-run")
            asyncio.run(poll_until_idle(poller, writer_sink(writer, "w-run")))
            assert poller.stats.captured == 2
        _wait(lambda: (writer.flush(), q("SELECT count(*) FROM decisions")[0][0] == 4)[1],
              "decisions not stored")
    writer.flush()
    assert q("SELECT count(*), count(DISTINCT witness_id) FROM witnessed")[0] == (4, 4)
    assert q("SELECT sum(witnessed), min(round), min(arm), min(agent_id) FROM rollup_witness "
             "WHERE run_id = 'w-run'")[0] == (4, 4, "governed", "agent-7")
    # The trimmed model_request rows stay in events, once.
    assert q("SELECT count(*) FROM events WHERE event_type = 'model_request'")[0][0] == 2
    con = store.cursor()
    counts = W.witness_counts(con, "w-run")
    (fig,) = witness_figures(counts.to_dicts()).values()
    assert (fig.arm, fig.witnessed, fig.governed, fig.ungoverned, fig.unwitnessed) == \
        ("governed", 4, 3, 1, 1)
    assert fig.witnessed_coverage == 0.75
    (row,) = W.ungoverned_actions(con, "w-run").to_dicts()
    # The second twin (call index 2) is the ungoverned one: order decides between equal calls.
    assert (row["rollout_id"], row["agent_id"], row["arm"], row["round"], row["tool"],
            row["position"], row["idx"]) == (a, "agent-7", "governed", 4, "publish", 0, 2)
    assert W.witness_counts(con, "no-such-run").height == 0
    con.close()


def test_witness_rows_are_exact_records() -> None:
    w = WitnessedAction("id#0", "r", 0, 0, "publish", call_digest("{}"), 1.0)
    assert WitnessedAction.from_payload(w.to_payload()) == w
