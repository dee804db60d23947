"""The demo through the gateway's proxy, as a real deployment runs: the agents' policies are an
OpenAI-compatible model server (demo/policy_server.py) registered with the real Agent Lightning
gateway; each rollout asks it once, through the rollout's AGL_OPENAI_BASE_URL, and governs the
tool calls it gets back. What the job itself shows: one `model_request` per rollout, whose tool
calls are the rollout's decisions in order; the same seed, the same training; and in the
`bypass` scenario, exactly the bypassed actions missing from the decisions."""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from tractatus_watch.demo.environment import PUBLISH_TOOL
from tractatus_watch.demo.job import (Completed, DemoJob, RoundResult, decisions_of,
                                      proposed_calls)
from tractatus_watch.demo.policy_server import PolicyServer
from tractatus_watch.demo.scenarios import SCENARIOS, Scenario
from tractatus_watch.records.agl import MODEL_REQUEST
from tractatus_watch.records.witness import call_digest

from ..collectors.conftest import AGL_SERVER, AglServer
from ..test_cli_errors import assert_one_line_error, tw

SMALL = Scenario("small", "a short run", agents=2, rounds=2, rollouts=3, steps=5)
GATEWAY_MODEL = "test-model"  # tests/conftest.py's gateway proxies this one


def run_job(gateway: Any, scenario: Scenario, seed: int = 1
            ) -> tuple[DemoJob, list[RoundResult], dict[int, list[Completed]]]:
    """The demo's training job against the real gateway; every round's completed rollouts."""
    completed: dict[int, list[Completed]] = {}
    job = DemoJob(scenario, f"proxy-{uuid.uuid4().hex[:8]}", seed, gateway.url, gateway.key,
                  model_name=GATEWAY_MODEL,
                  on_completed=lambda rnd, done: completed.__setitem__(rnd, done))
    results = job.run()
    return job, results, completed


def model_requests(c: Completed) -> list[dict[str, Any]]:
    return [e for e in c.events if e["event_type"] == MODEL_REQUEST]


def test_one_model_request_per_rollout_and_its_calls_are_the_decisions(agl_gateway: Any) -> None:
    _, results, completed = run_job(agl_gateway, SMALL)
    assert [r.rollouts for r in results] == [2 * 2 * 3] * 2
    for rnd, done in completed.items():
        assert len(done) == 12 and {c.state for c in done} == {"succeeded"}
        for c in done:
            (request,) = model_requests(c)
            sent = request["data"]["request"]
            # The proxy overwrote the model and added its own fields; the agent named itself.
            assert sent["model"] == GATEWAY_MODEL and sent["logprobs"] is True
            assert sent["user"] == f"{c.input['arm']}/{c.input['agent_id']}"
            assert request["data"]["response"]["choices"][0]["finish_reason"] == "tool_calls"
            calls = proposed_calls(c.events)
            assert len(calls) == SMALL.steps and {n for n, _ in calls} == {"publish"}
            decisions = decisions_of(c.events)
            assert [d["action"]["call_digest"] for d in decisions] == \
                [call_digest(args) for _, args in calls]
            assert [d["action"]["tool"] for d in decisions] == ["publish"] * SMALL.steps
            assert [d["action"]["kind"] for d in decisions] == \
                [json.loads(args)["style"] for _, args in calls]
            assert {d["round"] for d in decisions} == {rnd}
        assert results[rnd].proposed == results[rnd].decisions == 12 * SMALL.steps


def test_the_same_seed_gives_the_same_training(agl_gateway: Any) -> None:
    def summary(results: list[RoundResult]) -> list[tuple[Any, ...]]:
        return [(r.round, r.rollouts, r.decisions, r.proposed, sorted(r.reward.items()),
                 sorted((arm, tuple(s)) for arm, s in r.shares.items())) for r in results]

    sc = replace(SMALL, rounds=3)
    first, again, other = (summary(run_job(agl_gateway, sc, seed)[1]) for seed in (7, 7, 8))
    assert first == again
    assert first != other  # the comparison can fail: another seed, another training


def test_bypass_skips_the_governor_on_agent_0_from_its_round(agl_gateway: Any) -> None:
    sc = SCENARIOS["bypass"]
    assert (sc.agents, sc.bypass_round, sc.bypass_share) == (2, 5, 0.5)
    short = replace(sc, rounds=7, rollouts=2)
    job, _, completed = run_job(agl_gateway, short)
    bypassed = job.agents[("governed", "agent-0")].bypassed
    for rnd, done in completed.items():
        calls: dict[tuple[str, str], int] = {}
        decided: dict[tuple[str, str], int] = {}
        for c in done:
            key = (c.input["arm"], c.input["agent_id"])
            digests = [call_digest(args) for _, args in proposed_calls(c.events)]
            governed = [d["action"]["call_digest"] for d in decisions_of(c.events)]
            # What was governed is what the model proposed, minus the skipped calls, in order.
            rest = iter(digests)
            assert all(d in rest for d in governed)
            calls[key] = calls.get(key, 0) + len(digests)
            decided[key] = decided.get(key, 0) + len(governed)
        for key in calls:
            skipped = bypassed.get(rnd, 0) if key == ("governed", "agent-0") else 0
            assert calls[key] - decided[key] == skipped, (rnd, key)
        if rnd < 5:
            assert bypassed.get(rnd, 0) == 0
        else:
            # Half of 16 actions, drawn from the bypass stream: never none, never all.
            assert 0 < bypassed[rnd] < calls[("governed", "agent-0")], (rnd, bypassed)
    assert sorted(bypassed) == [5, 6]


# --- the model server alone -------------------------------------------------------------------

def _planner(request: Any) -> list[tuple[str, dict[str, str]]]:
    return [("publish", {"style": "informative", "headline": "h", "text": "t"}),
            ("publish", {"style": "balanced", "headline": "h2", "text": "t2"})]


@pytest.fixture
def policies() -> Any:
    with PolicyServer({"governed/agent-0": _planner}) as server:
        yield server


def chat(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "plan"}], "tools": [PUBLISH_TOOL],
            "user": "governed/agent-0", **extra}


def test_the_policy_server_ignores_fields_it_does_not_know(policies: PolicyServer) -> None:
    body = chat(model="whatever/the-proxy-set", logprobs=True, return_token_ids=True,
                temperature=1.0, top_logprobs=3, something_new={"x": 1})
    resp = httpx.post(f"{policies.endpoint}/chat/completions", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["object"] == "chat.completion" and doc["model"] == "whatever/the-proxy-set"
    (choice,) = doc["choices"]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert [(c["type"], c["function"]["name"]) for c in calls] == [("function", "publish")] * 2
    assert [json.loads(c["function"]["arguments"]) for c in calls] == \
        [args for _, args in _planner(None)]
    assert len({c["id"] for c in calls}) == 2
    usage = doc["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


@pytest.mark.parametrize(("body", "param", "says"), [
    (b"{not json", None, "not JSON"),
    (b"[1, 2]", None, "JSON object"),
    (json.dumps({"user": "governed/agent-0", "tools": [PUBLISH_TOOL]}).encode(), "messages",
     "messages"),
    (json.dumps(chat(user="governed/agent-9")).encode(), "user", "no policy for"),
    (json.dumps(chat(tools=[])).encode(), "tools", "'publish'"),
    (json.dumps(chat(stream=True)).encode(), "stream", "does not stream"),
])
def test_a_bad_request_gets_an_openai_error(policies: PolicyServer, body: bytes,
                                            param: str | None, says: str) -> None:
    resp = httpx.post(f"{policies.endpoint}/chat/completions", content=body,
                      headers={"content-type": "application/json"}, timeout=10)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert says in error["message"]


def test_the_policy_server_keeps_connections_alive(policies: PolicyServer) -> None:
    host, port = policies.endpoint.removeprefix("http://").removesuffix("/v1").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        socks = []
        for body in (chat(), {"bad": True}, chat()):  # an error answer keeps it open too
            conn.request("POST", "/v1/chat/completions", json.dumps(body),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            socks.append(conn.sock)
            assert resp.status in (200, 400)
        assert socks[0] is not None and socks[0] is socks[1] is socks[2]
    finally:
        conn.close()


def _serving() -> list[threading.Thread]:
    """The policy server's threads: its loop, and one per open connection."""
    return [t for t in threading.enumerate() if t.name == "demo-policy-server"
            or t.name.endswith("(process_request_thread)")]


def test_close_ends_kept_alive_connections() -> None:
    server = PolicyServer({"governed/agent-0": _planner})
    with httpx.Client(timeout=10) as client:
        assert client.post(f"{server.endpoint}/chat/completions", json=chat()).status_code == 200
        assert len(_serving()) == 2  # the connection is still open, its thread waiting
        server.close()
        # The client still holds the connection: closing the server ended it all the same.
        deadline = time.monotonic() + 10
        while _serving() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _serving() == []


# --- an external gateway that proxies another model -------------------------------------------

@pytest.mark.skipif(not AGL_SERVER.exists(), reason="agl-server is not installed")
def test_an_external_gateway_needs_its_model_name(tmp_path: Path) -> None:
    key = "demo-proxy-" + uuid.uuid4().hex
    server = AglServer(tmp_path, key, command=[str(AGL_SERVER),
                                               "default_proxy.model_name=acme/policy-7b"])
    key_file = tmp_path / "agl.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    args = ("demo", "--agl", server.url, "--key-file", str(key_file), "--headless",
            "--format", "json", "--scenario", "demo2", "--rounds", "1")
    server.start()
    try:
        wrong = tw(*args, "--db", str(tmp_path / "wrong.duckdb"), timeout=180)
        right = tw(*args, "--model-name", "acme/policy-7b", "--db", str(tmp_path / "ok.duckdb"),
                   timeout=180)
    finally:
        server.stop()
    assert_one_line_error(wrong, f"Agent Lightning at {server.url} answered HTTP 503",
                          "No servers available for model 'acme/policy-7b'",
                          "'Qwen/Qwen2.5-7B-Instruct'", "--model-name")
    assert key not in wrong.stderr + right.stderr + right.stdout
    assert right.returncode == 0, right.stderr
    doc = json.loads(right.stdout)
    assert doc["arms"]["governed"]["actions"] == doc["arms"]["ungoverned"]["actions"] == 16 * 8


def test_model_name_is_for_an_external_gateway(tmp_path: Path) -> None:
    proc = tw("demo", "--model-name", "x", "--headless", "--db", str(tmp_path / "w.duckdb"))
    assert_one_line_error(proc, "--model-name is for --agl")


def test_bypass_through_the_cli_keeps_sdk_coverage_at_one(tmp_path: Path) -> None:
    """What the Governor sees of the bypass scenario: full coverage of fewer actions."""
    proc = tw("demo", "--scenario", "bypass", "--rounds", "6", "--headless", "--format", "json",
              "--db", str(tmp_path / "bypass.duckdb"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    arms = json.loads(proc.stdout)["arms"]
    proposed = 2 * 4 * 8 * 6  # agents x rollouts x items x rounds
    assert arms["ungoverned"]["actions"] == proposed
    assert arms["governed"]["coverage"] == 1.0
    # Agent-0 ran about half of its 32 actions of round 5 unchecked.
    assert proposed - 32 < arms["governed"]["actions"] < proposed


def test_bypass_round_moves_into_a_shorter_run() -> None:
    sc = SCENARIOS["bypass"]
    assert sc.with_overrides(rounds=12).bypass_round == 5
    assert sc.with_overrides(rounds=6).bypass_round == 5
    assert sc.with_overrides(rounds=4).bypass_round == 1
    assert SCENARIOS["demo2"].with_overrides(rounds=3).bypass_round is None
