"""`tractatus-watch gateway --govern [RULES]`: an agent with no SDK at all (plain OpenAI-format
requests over httpx) behind the real program, a stub model that proposes violating and clean
tool calls, a real DuckDB store. The agent executes exactly the tool calls it gets back."""

from __future__ import annotations

import json
import secrets
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from tractatus_watch.collectors.gateway_govern import STREAM_REFUSED
from tractatus_watch.demo.environment import STYLES, Style, item_for
from tractatus_watch.governance.governor import Governor
from tractatus_watch.records.witness import call_digest, witnessed_actions

from support import clients
from support.model_stub import StubModelServer

from .collectors.conftest import free_port, wait_healthy
from .test_cli_gateway import tw_gateway

MODEL = "stub/policy"
STYLE = {s.name: s for s in STYLES}
# Our own rule on top of the default services: RULES is loaded.
HOUSE_RULES = """\
schema = "tractatus-watch.rules/1"
[[rules]]
id = "HOUSE-NO-LOTTERY"
service = "BoundaryEnforcer"
text = "Never promote lotteries."
detector = "phrases"
phrases = ["lottery jackpot"]
verdict = "BLOCK"
"""
LOTTERY = "lottery"  # a clean style, plus the house rule's phrase
RULE_OF = {"clickbait": "CONTENT-CLICKBAIT", "unsourced_statistic": "inst_016",
           "absolute_guarantee": "inst_017", "personal_data": "CONTENT-PERSONAL-DATA",
           LOTTERY: "HOUSE-NO-LOTTERY"}
# What the model proposes for each request (its last message names the plan), and any text.
PLANS: dict[str, tuple[list[str], str | None]] = {
    "mixed": (["informative", "clickbait", "balanced", "unsourced_statistic"], None),
    "all-bad": (["absolute_guarantee", "personal_data", LOTTERY], None),
    "clean": (["sensational", "informative"], None),
    "talkative": (["clickbait"], "Here is the plan for today."),
}
TOOLS = [{"type": "function", "function": {
    "name": "publish", "description": "Publish one item to the feed.",
    "parameters": {"type": "object", "required": ["style", "headline", "text"], "properties": {
        "style": {"type": "string"}, "headline": {"type": "string"},
        "text": {"type": "string"}, "sources": {"type": "array", "items": {"type": "string"}}}}}}]
STAMPED = {"agent_id": "agent-1", "arm": "governed", "round": 4}
PROXY = "/proxy/rollout/{rid}/attempt/0/mode/train/openai/v1/chat/completions"


def arguments(style: str) -> dict[str, Any]:
    base: Style = STYLE["informative" if style == LOTTERY else style]
    item = item_for(base, "housing")
    text = item["text"] + (" Win the lottery jackpot today." if style == LOTTERY else "")
    return {"style": style, "headline": item["params"]["headline"], "text": text,
            "sources": item["sources"]}


def respond(body: dict[str, Any]) -> dict[str, Any]:
    """The stub model: the plan's tool calls (ids name plan and index), logprobs as vLLM."""
    plan = str(body["messages"][-1]["content"])
    styles, content = PLANS[plan]
    calls = [{"id": f"call_{plan}_{i}", "type": "function",
              "function": {"name": "publish", "arguments": json.dumps(arguments(s))}}
             for i, s in enumerate(styles)]
    return {"id": f"chatcmpl-{plan}", "object": "chat.completion", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": content,
                                     "tool_calls": calls},
                         "logprobs": {"content": [{"token": "x", "logprob": -0.5}]}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 40, "total_tokens": 49}}


def proposed(plan: str) -> list[tuple[str, str]]:
    """(call id, style) the model proposes for a plan."""
    return [(f"call_{plan}_{i}", s) for i, s in enumerate(PLANS[plan][0])]


def violates(style: str) -> bool:
    return style in RULE_OF


class Gateway:
    def __init__(self, tmp: Path, name: str, *args: str) -> None:
        self.key = secrets.token_hex(12)
        self.port = free_port()
        self.db = tmp / f"{name}.duckdb"
        self.log = tmp / f"{name}.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = tw_gateway("--store", str(self.db), *args, f"port={self.port}",
                               f"default_proxy.model_name={MODEL}", log=self.log,
                               AGL_KEY=self.key)

    def client(self) -> httpx.Client:
        return clients.client(base_url=self.url, timeout=30,
                              headers={"Authorization": f"Bearer {self.key}"})

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        err = self.log.read_text()
        assert self.proc.returncode == 0, err
        return err

    def decisions(self) -> list[dict[str, Any]]:
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            cur = con.execute("SELECT rollout_id, agent_id, round, arm, mode, action_kind, "
                              "verdict, executed, attempted, extra FROM decisions")
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, row)) for row in cur.fetchall()]
        finally:
            con.close()
        for row in rows:
            row["extra"] = json.loads(row["extra"] or "{}")
        return rows


def setup(gw: Gateway, stub: StubModelServer) -> None:
    wait_healthy(gw.url, gw.proc, gw.log, 60)  # type: ignore[arg-type]
    with gw.client() as c:
        c.post("/api/models", json=[{"model": MODEL, "endpoint": stub.base_url}]
               ).raise_for_status()
        c.post("/api/rollouts", json=[
            {"input": {}, "rollout_id": "r-stamped", "metadata": {"tractatus_watch": STAMPED}},
            {"input": {}, "rollout_id": "r-plain"}]).raise_for_status()


def ask(c: httpx.Client, rid: str, plan: str, **extra: Any) -> httpx.Response:
    """The agent: an OpenAI chat completion request, no SDK."""
    body = {"model": "whatever", "messages": [{"role": "user", "content": plan}],
            "tools": TOOLS, **extra}
    return c.post(PROXY.format(rid=rid), json=body)


TURNS = [("r-stamped", "mixed", {}), ("r-stamped", "all-bad", {}), ("r-stamped", "talkative", {}),
         ("r-plain", "clean", {"user": "agent-7"}), ("r-plain", "mixed", {"user": "agent-7"})]


@pytest.fixture
def stub() -> Iterator[StubModelServer]:
    with StubModelServer(respond=respond) as server:
        yield server


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gw in started:
        if gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait(10)


def test_an_agent_without_sdk_is_governed_by_the_gateway(
        tmp_path: Path, stub: StubModelServer, gateways: list[Gateway]) -> None:
    rules = tmp_path / "house.toml"
    rules.write_text(HOUSE_RULES)
    enforce = Gateway(tmp_path, "enforce", "--govern", str(rules))
    shadow = Gateway(tmp_path, "shadow", "--govern", "--govern-mode", "shadow")
    gateways += [enforce, shadow]
    for gw in gateways:
        setup(gw, stub)

    # --- enforce: the agent executes exactly what it gets back -----------------------------
    executed: list[dict[str, Any]] = []
    answers: dict[tuple[str, str], dict[str, Any]] = {}
    with enforce.client() as c:
        for rid, plan, extra in TURNS:
            r = ask(c, rid, plan, **extra)
            assert r.status_code == 200, r.text
            answers[(rid, plan)] = r.json()
            executed += r.json()["choices"][0]["message"].get("tool_calls", [])
        before = len(stub.received())
        streamed = ask(c, "r-stamped", "mixed", stream=True)
        assert len(stub.received()) == before  # refused before forwarding
    assert streamed.status_code == 400
    assert streamed.json()["error"]["message"] == STREAM_REFUSED
    assert "tool calls must be complete before they can be governed" in STREAM_REFUSED

    all_proposed = [(rid, cid, style) for rid, plan, _ in TURNS for cid, style in proposed(plan)]
    clean = [cid for _, cid, style in all_proposed if not violates(style)]
    blocked = [(rid, cid, style) for rid, cid, style in all_proposed if violates(style)]
    # 0 escaped violations: the agent ran the clean calls, all of them, and nothing else...
    assert [call["id"] for call in executed] == clean
    assert not [c for c in executed if violates(json.loads(c["function"]["arguments"])["style"])]
    # ...and an independent Governor with the same rules allows every one of them.
    from tractatus_watch.governance.services import default_services, load_rules

    judge = Governor(default_services(load_rules(rules)))
    from tractatus_watch.collectors.gateway_govern import action_of

    assert all(judge.check(action_of("publish", c["function"]["arguments"]), round=0).executed
               for c in executed)

    # The blocked calls were replaced by a refusal naming the call, the tool and the rule.
    for (_, plan), answer in answers.items():
        choice = answer["choices"][0]
        message = choice["message"]
        mine = [(cid, s) for cid, s in proposed(plan) if violates(s)]
        kept = [cid for cid, s in proposed(plan) if not violates(s)]
        lines = message.get("refusal", "").splitlines() if mine else []
        assert len(lines) == len(mine), message
        for line, (cid, style) in zip(lines, mine):
            assert line.startswith(f"tool call {cid} refused at the gateway: action 'publish' "
                                   "stopped (block): BoundaryEnforcer " + RULE_OF[style] + ": ")
        if not mine:
            assert answer == respond({"messages": [{"content": plan}]})
            continue
        if kept:
            assert [c["id"] for c in message["tool_calls"]] == kept
            assert choice["finish_reason"] == "tool_calls"
        else:
            assert "tool_calls" not in message and choice["finish_reason"] == "stop"
        given = PLANS[plan][1]  # the model's own text stays; without one, the refusal is it
        assert message["content"] == (given if given is not None else message["refusal"])
    assert answers[("r-stamped", "talkative")]["choices"][0]["message"]["content"] \
        == "Here is the plan for today."

    # --- shadow: the upstream's own response, every decision recorded as executed ----------
    with shadow.client() as c:
        for rid, plan, extra in TURNS:
            r = ask(c, rid, plan, **extra)
            assert r.status_code == 200, r.text
            upstream = respond({"messages": [{"content": plan}]})
            assert r.json() == upstream
            assert r.content == json.dumps(upstream, ensure_ascii=False,
                                           separators=(",", ":")).encode()
        assert ask(c, "r-plain", "clean", stream=True).json()["error"]["message"] \
            == STREAM_REFUSED

    # The witness (the model_request events: the model's own responses) saw every proposed
    # call, the refused ones too, and its digests are the decisions' (checked below).
    witnessed: Counter[tuple[str, str]] = Counter()
    with enforce.client() as c:
        for rid in ("r-stamped", "r-plain"):
            events = c.get(f"/api/rollouts/{rid}/events",
                           params={"event_type": "model_request"}).json()
            for position, event in enumerate(events):
                witnessed.update((rid, w.digest) for w in witnessed_actions(
                    event["data"], event_id=f"{rid}:{position}", rollout_id=rid,
                    position=position, ts=0.0))
    enforce.stop()
    shadow.stop()

    # --- the store: every decision, with enforced_at gateway and the witness's digest -------
    def digests(rows: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
        return Counter((r["rollout_id"], r["extra"]["action"]["call_digest"]) for r in rows)

    expected = Counter((rid, call_digest(json.dumps(arguments(style))))
                       for rid, _, style in all_proposed)
    rows = enforce.decisions()
    assert len(rows) == len(all_proposed)
    assert digests(rows) == witnessed
    assert {r["extra"]["enforced_at"] for r in rows} == {"gateway"}
    assert {(r["mode"], r["action_kind"]) for r in rows} == {("enforce", "publish")}
    assert digests(rows) == expected
    stopped = [r for r in rows if not r["executed"]]
    assert len(stopped) == len(blocked) and all(r["verdict"] == "block" for r in stopped)
    assert digests(stopped) == Counter((rid, call_digest(json.dumps(arguments(s))))
                                       for rid, _, s in blocked)
    who = {(r["rollout_id"], r["agent_id"], r["arm"], r["round"]) for r in rows}
    assert who == {("r-stamped", "agent-1", "governed", 4), ("r-plain", "agent-7", "governed", 0)}

    rows = shadow.decisions()
    assert len(rows) == len(all_proposed) and digests(rows) == expected
    assert {(r["mode"], r["executed"], r["extra"]["enforced_at"]) for r in rows} \
        == {("shadow", True, "gateway")}
    # The house rule is not loaded here: the lottery call is clean in this gateway.
    assert sum(r["attempted"] for r in rows) == len(blocked) - sum(
        1 for _, _, s in blocked if s == LOTTERY)
    assert {(r["rollout_id"], r["arm"]) for r in rows} \
        == {("r-stamped", "governed"), ("r-plain", "ungoverned")}


BAD = [
    (["--govern", "{tmp}/missing.toml"],
     "--govern: {tmp}/missing.toml: cannot read: No such file or directory"),
    (["--govern", "{tmp}/bad.toml"], "--govern: {tmp}/bad.toml: rules[0].text: missing"),
    (["--govern", "--govern-mode", "off"],
     "--govern-mode: expected one of enforce, shadow, got 'off'"),
    (["--govern-mode", "shadow"], "--govern-mode and --govern-arm go with --govern"),
    (["--govern", "--govern-arm", " "], "--govern-arm: expected an arm name such as governed"),
]


def test_bad_govern_arguments_exit_2_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[[rules]]\nid = "X"\nservice = "BoundaryEnforcer"\n')
    store = tmp_path / "never.duckdb"
    procs = [tw_gateway("--store", str(store), *[a.format(tmp=tmp_path) for a in args])
             for args, _ in BAD]
    for proc, (args, message) in zip(procs, BAD):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (args, err)
        assert err.splitlines() == [f"error: {message.format(tmp=tmp_path)}"] and out == ""
    assert not store.exists()
