"""The gateway contract: the REST behaviour trainers, controllers and agents rely on, run
against `agl-server` and `tractatus-watch gateway` (both subprocesses, both started with the same
Hydra overrides, among them a non-default `default_proxy.model_name`, and a key from the
environment), which must answer identically. The LLM proxy forwards to a local
OpenAI-compatible stub model server registered with `POST /api/models`.

Each step is recorded as (step, status, body, headers that matter) with generated ids and clock
values masked; besides the comparison, the answers are checked against what Agent Lightning
1.0.2 documents, so two gateways broken the same way fail too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tractatus_watch.storage.store import Store

from support import clients
from support.model_stub import CONTEXT_ERROR, OVERFLOW, StubModelServer

from .conftest import AGL_SERVER, free_port, wait_healthy

MODEL = "contract-org/contract-model-7b"  # packaged default: Qwen/Qwen2.5-7B-Instruct
TRAIN_TEMPERATURE = 0.6  # packaged: 1
# The same Hydra overrides for both gateways (besides host and port).
OVERRIDES = (f"default_proxy.model_name={MODEL}",
             f"default_proxy.train.temperature={TRAIN_TEMPERATURE}")
KEY = "contract-" + os.urandom(12).hex()
HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")
CLOCK_FIELDS = frozenset({"timestamp", "created_at", "updated_at", "latency_ms"})
HEADERS_KEPT = ("retry-after", "x-agl-paused")


# --- the gateways -------------------------------------------------------------------------------

@dataclass
class Gateway:
    name: str
    argv: list[str]
    workdir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_WATCH")}
        env["AGL_KEY"] = KEY  # the key never appears on a command line
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.argv, env=env, stdout=log, stderr=log,
                                         cwd=self.workdir)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None


@pytest.fixture(scope="module")
def stub() -> Iterator[StubModelServer]:
    with StubModelServer() as server:
        yield server


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Gateway]]:
    """Both gateways, started side by side (the slow part is importing Agent Lightning)."""
    root = tmp_path_factory.mktemp("contract")
    (root / "agl").mkdir()
    (root / "tw").mkdir()
    agl_port, tw_port = free_port(), free_port()
    common = ["host=127.0.0.1", *OVERRIDES]
    made = {
        # agl-server takes its key only as `key=`: an interpolation keeps it in the environment.
        "agl-server": Gateway("agl-server", [
            str(AGL_SERVER), *common, f"port={agl_port}", "key=${oc.env:AGL_KEY}"],
            root / "agl", agl_port),
        "tractatus-watch": Gateway("tractatus-watch", [
            sys.executable, "-m", "tractatus_watch", "gateway", *common, f"port={tw_port}",
            "--store", str(root / "tw" / "gw.duckdb"), "--run", "contract"],
            root / "tw", tw_port),
    }
    try:
        for gw in made.values():
            gw.spawn()
        for gw in made.values():
            assert gw.proc is not None
            wait_healthy(gw.url, gw.proc, gw.log, 60)
        yield made
    finally:
        for gw in made.values():
            gw.stop()


# --- one flow, recorded -------------------------------------------------------------------------

def _mask(value: Any, ids: dict[str, str]) -> Any:
    """Generated ids become <id0>, <id1>... in order of appearance; clock values <t>."""
    if isinstance(value, dict):
        return {k: "<t>" if k in CLOCK_FIELDS and isinstance(v, (int, float)) else _mask(v, ids)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, ids) for v in value]
    if isinstance(value, str):
        return HEX_ID.sub(lambda m: ids.setdefault(m.group(0), f"<id{len(ids)}>"), value)
    return value


class Recorder:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.steps: dict[str, tuple[int, Any, dict[str, str]]] = {}
        self._ids: dict[str, str] = {}

    def __call__(self, step: str, method: str, path: str, **kw: Any) -> Any:
        assert step not in self.steps, step
        resp = self.client.request(method, path, **kw)
        body = resp.json() if resp.content else None
        headers = {h: resp.headers[h] for h in HEADERS_KEPT if h in resp.headers}
        self.steps[step] = (resp.status_code, _mask(body, self._ids), headers)
        return body

    def status(self, step: str) -> int:
        return self.steps[step][0]

    def body(self, step: str) -> Any:
        return self.steps[step][1]


def chat(content: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}]}


def contract_flow(url: str, model_endpoint: str) -> Recorder:
    """What a trainer (rollouts, models, terminal log, deletes), a controller (state
    transitions, proxy pause) and agents (events, LLM calls through the proxy) do."""
    bearer = {"Authorization": f"Bearer {KEY}"}
    with clients.client(base_url=url, timeout=15) as c:
        rec = Recorder(c)
        proxy = "/proxy/rollout/{rid}/attempt/0/mode/{mode}/openai/v1/{path}"

        # Auth: /healthz is open; everything else wants the key, as Bearer or x-api-key.
        rec("healthz", "GET", "/healthz")
        listing = {"params": {"state_in": "queuing"}}
        rec("auth none", "GET", "/api/rollouts", **listing)
        rec("auth wrong bearer", "GET", "/api/rollouts", headers={
            "Authorization": "Bearer not-the-key"}, **listing)
        rec("auth wrong x-api-key", "GET", "/api/rollouts", headers={"x-api-key": "nope"},
            **listing)
        rec("auth bearer", "GET", "/api/rollouts", headers=bearer, **listing)
        rec("auth x-api-key", "GET", "/api/rollouts", headers={"x-api-key": KEY}, **listing)
        rec("auth proxy none", "POST", proxy.format(rid="x", mode="train",
                                                    path="chat/completions"), json=chat("hi"))
        c.headers.update(bearer)

        # Rollouts: create (a pre-assigned id is idempotent), list and filter by state.
        created = rec("create", "POST", "/api/rollouts", json=[
            {"input": {"data_id": "a", "q": "one"}, "metadata": {"batch_idx": 0}},
            {"input": {"q": "two"}, "rollout_id": "contract-fixed", "is_train": False},
            {"input": {"q": "three"}}])
        a, b, c3 = (r["rollout_id"] for r in created)
        rec("create again", "POST", "/api/rollouts", json=[
            {"input": {"q": "DIFFERENT"}, "rollout_id": "contract-fixed"}])
        rec("list queuing", "GET", "/api/rollouts", params={"state_in": "queuing"})
        rec("list limit", "GET", "/api/rollouts", params={"state_in": "queuing", "limit": 2})
        rec("list no state", "GET", "/api/rollouts")
        rec("list bad state", "GET", "/api/rollouts", params={"state_in": "sleeping"})

        # Status transitions and their refusals.
        rec("running", "PATCH", f"/api/rollouts/{a}", json={"status": {
            "state": "running", "last_attempt_id": "0", "k8s_job_name": "job-1"}})
        rec("running -> queuing", "PATCH", f"/api/rollouts/{a}",
            json={"status": {"state": "queuing"}})
        rec("cancelled", "PATCH", f"/api/rollouts/{a}", json={"status": {"state": "cancelled"}})
        rec("empty patch", "PATCH", f"/api/rollouts/{a}", json={})
        rec("patch missing", "PATCH", "/api/rollouts/missing",
            json={"status": {"state": "running"}})
        rec("list running", "GET", "/api/rollouts", params={"state_in": "running"})
        rec("list two states", "GET", "/api/rollouts",
            params=[("state_in", "queuing"), ("state_in", "running")])
        rec("get", "GET", f"/api/rollouts/{a}")
        rec("get missing", "GET", "/api/rollouts/missing")

        # Events: post, read back (all, by type, as triplets).
        events = f"/api/rollouts/{a}/attempt/0/events"
        for i in range(2):
            rec(f"post decision {i}", "POST", events, json={
                "event_type": "tractatus.decision", "data": {
                    "schema": "tractatus.decision/1", "decision_id": f"contract-d{i}",
                    "agent_id": "agent-1", "round": 3, "arm": "governed", "mode": "enforce",
                    "action": {"kind": "publish", "summary": f"post {i}"},
                    "checks": [{"service": "BoundaryEnforcer", "rule_id": "inst_016",
                                "verdict": "allow", "enforced": True, "latency_us": 200}],
                    "verdict": "allow", "executed": True, "latency_us": 250,
                    "ts": 1_790_000_000.0 + i}})
        rec("post reward", "POST", events, json={"event_type": "reward",
                                                 "data": {"value": 0.7, "extra": "kept"}})
        rec("post tool_call", "POST", events, json={"event_type": "tool_call",
                                                    "data": {"tool": "search"}})
        rec("post no type", "POST", events, json={"data": {}})
        rec("post missing rollout", "POST", "/api/rollouts/missing/attempt/0/events",
            json={"event_type": "reward", "data": {"value": 1}})
        rec("events", "GET", f"/api/rollouts/{a}/events")
        rec("events decisions", "GET", f"/api/rollouts/{a}/events",
            params={"event_type": "tractatus.decision"})
        rec("events reward triplet", "GET", f"/api/rollouts/{a}/events",
            params={"event_type": "reward", "format": "triplet"})
        rec("events missing", "GET", "/api/rollouts/missing/events")
        rec("get with attempt", "GET", f"/api/rollouts/{a}")

        # The LLM proxy: no server for the configured model (503 naming it), then one
        # registered under that name: completions through it, errors passed through.
        rec("proxy unregistered", "POST", proxy.format(rid=a, mode="train",
                                                       path="chat/completions"), json=chat("hi"))
        rec("register model", "POST", "/api/models",
            json=[{"model": MODEL, "endpoint": model_endpoint, "version": 2}])
        rec("proxy train", "POST", proxy.format(rid=a, mode="train", path="chat/completions"),
            json=chat("hello"))
        rec("proxy val", "POST", proxy.format(rid=a, mode="val", path="chat/completions"),
            json=chat("hello again"))
        rec("proxy upstream 400", "POST", proxy.format(rid=a, mode="train",
                                                       path="chat/completions"),
            json=chat(OVERFLOW))
        rec("proxy bad mode", "POST", proxy.format(rid=a, mode="eval", path="chat/completions"),
            json=chat("x"))
        rec("proxy bad path", "POST", proxy.format(rid=a, mode="train", path="embeddings"),
            json=chat("x"))
        rec("proxy stream", "POST", proxy.format(rid=a, mode="train", path="chat/completions"),
            json={**chat("x"), "stream": True})
        rec("proxy missing rollout", "POST", proxy.format(rid="missing", mode="train",
                                                          path="chat/completions"),
            json=chat("x"))
        rec("pause", "POST", "/proxy/pause", json={"retry_after_seconds": 3,
                                                  "reason": "scale-down"})
        rec("proxy paused", "POST", proxy.format(rid=a, mode="train", path="chat/completions"),
            json=chat("x"))
        rec("proxy state paused", "GET", "/proxy/state")
        rec("resume", "POST", "/proxy/resume")
        rec("model requests", "GET", f"/api/rollouts/{a}/events",
            params={"event_type": "model_request"})
        rec("model requests triplet", "GET", f"/api/rollouts/{a}/events",
            params={"event_type": "model_request", "format": "triplet"})

        # Terminal states, the completion log, deletes.
        rec("succeeded", "PATCH", f"/api/rollouts/{a}", json={"status": {"state": "succeeded"}})
        rec("succeeded -> running", "PATCH", f"/api/rollouts/{a}",
            json={"status": {"state": "running"}})
        rec("b running", "PATCH", f"/api/rollouts/{b}", json={"status": {"state": "running"}})
        rec("b failed", "PATCH", f"/api/rollouts/{b}", json={"status": {
            "state": "failed", "error_message": "boom"}})
        rec("terminal page 1", "GET", "/api/rollouts/terminal", params={"after": 0, "limit": 1})
        rec("terminal page 2", "GET", "/api/rollouts/terminal", params={"after": 1})
        rec("list terminal states", "GET", "/api/rollouts",
            params=[("state_in", "succeeded"), ("state_in", "failed")])
        rec("delete", "DELETE", f"/api/rollouts/{a}")
        rec("get deleted", "GET", f"/api/rollouts/{a}")
        rec("events deleted", "GET", f"/api/rollouts/{a}/events")
        rec("delete again", "DELETE", f"/api/rollouts/{a}")
        rec("terminal after delete", "GET", "/api/rollouts/terminal")
        rec("delete models", "DELETE", "/api/models")
        rec("proxy after delete models", "POST", proxy.format(
            rid=c3, mode="train", path="chat/completions"), json=chat("x"))
        rec("proxy state", "GET", "/proxy/state")
    return rec


@pytest.fixture(scope="module")
def flows(gateways: dict[str, Gateway], stub: StubModelServer) -> dict[str, Any]:
    """The flow against each gateway in turn, and what the model server received from it."""
    out: dict[str, Any] = {}
    for name, gw in gateways.items():
        before = len(stub.received())
        rec = contract_flow(gw.url, stub.base_url)
        out[name] = (rec, stub.received()[before:])
    return out


# --- the contract -------------------------------------------------------------------------------

def test_both_gateways_answer_every_step_identically(flows: dict[str, Any]) -> None:
    agl, tw = flows["agl-server"][0], flows["tractatus-watch"][0]
    assert list(tw.steps) == list(agl.steps)
    different = [step for step in agl.steps if tw.steps[step] != agl.steps[step]]
    assert not different, {step: {"agl-server": agl.steps[step],
                                  "tractatus-watch": tw.steps[step]} for step in different}


@pytest.mark.parametrize("name", ["agl-server", "tractatus-watch"])
def test_auth_rollouts_and_transitions(flows: dict[str, Any], name: str) -> None:
    rec = flows[name][0]
    assert [rec.status(s) for s in ("healthz", "auth none", "auth wrong bearer",
                                    "auth wrong x-api-key", "auth bearer", "auth x-api-key",
                                    "auth proxy none")] == [200, 401, 401, 401, 200, 200, 401]
    assert rec.body("auth none") == {"detail": "Invalid or missing API key"}
    assert rec.status("create") == 201 and len(rec.body("create")) == 3
    assert rec.body("create again")[0]["input"] == {"q": "two"}  # the original, unchanged
    assert len(rec.body("list queuing")) == 3 and len(rec.body("list limit")) == 2
    assert rec.status("list no state") == rec.status("list bad state") == 422
    assert [rec.status(s) for s in ("running", "running -> queuing", "cancelled",
                                    "empty patch", "patch missing")] == [200, 409, 422, 200, 404]
    assert rec.body("running")["status"]["k8s_job_name"] == "job-1"
    assert [r["rollout_id"] for r in rec.body("list running")] == ["<id0>"]
    assert len(rec.body("list two states")) == 3
    assert rec.body("get")["attempts"] == [] and rec.body("get with attempt")["attempts"] == ["0"]
    assert rec.status("get missing") == 404
    assert [rec.status(s) for s in ("succeeded", "succeeded -> running", "b running",
                                    "b failed")] == [200, 409, 200, 200]


@pytest.mark.parametrize("name", ["agl-server", "tractatus-watch"])
def test_events_terminal_log_and_deletes(flows: dict[str, Any], name: str) -> None:
    rec = flows[name][0]
    assert [rec.status(f"post decision {i}") for i in range(2)] == [200, 200]
    assert rec.status("post no type") == 422 and rec.status("post missing rollout") == 404
    assert [e["event_type"] for e in rec.body("events")] == [
        "tractatus.decision", "tractatus.decision", "reward", "tool_call"]
    assert [e["data"]["decision_id"] for e in rec.body("events decisions")] == [
        "contract-d0", "contract-d1"]
    assert [e["data"] for e in rec.body("events reward triplet")] == [{"value": 0.7}]
    assert rec.status("events missing") == 404
    assert rec.body("terminal page 1") == {"items": [{
        "rollout_id": "<id0>", "state": "succeeded", "data_id": "a", "is_train": True}],
        "next_after": 1, "total_terminal": 2}
    assert rec.body("terminal page 2")["items"] == [{
        "rollout_id": "contract-fixed", "state": "failed", "data_id": "", "is_train": False}]
    assert [rec.status(s) for s in ("delete", "get deleted", "events deleted",
                                    "delete again")] == [204, 404, 404, 204]
    # A deleted rollout leaves the log's items; the cursor and the total stay.
    after = rec.body("terminal after delete")
    assert [i["rollout_id"] for i in after["items"]] == ["contract-fixed"]
    assert (after["next_after"], after["total_terminal"]) == (2, 2)


@pytest.mark.parametrize("name", ["agl-server", "tractatus-watch"])
def test_proxy_uses_the_configured_model_and_passes_errors_through(
        flows: dict[str, Any], name: str, stub: StubModelServer) -> None:
    rec, received = flows[name]
    assert rec.steps["proxy unregistered"][:2] == (
        503, {"detail": f"No servers available for model '{MODEL}'"})
    assert rec.status("register model") == 201
    train = rec.body("proxy train")
    assert rec.status("proxy train") == 200, rec.steps["proxy train"]
    assert train["choices"][0]["message"]["content"] == "echo: hello"
    assert train["forwarded"] == {"model": MODEL, "temperature": TRAIN_TEMPERATURE,
                                  "logprobs": True, "return_token_ids": True}
    assert rec.status("proxy val") == 200
    assert rec.body("proxy val")["forwarded"] == {
        "model": MODEL, "temperature": 0.7, "logprobs": None, "return_token_ids": True}
    assert rec.steps["proxy upstream 400"][:2] == (400, CONTEXT_ERROR)
    assert [rec.status(s) for s in ("proxy bad mode", "proxy bad path", "proxy stream",
                                    "proxy missing rollout")] == [404, 404, 400, 404]
    assert rec.steps["proxy paused"] == (429, {"error": "gateway paused", "reason": "scale-down"},
                                         {"retry-after": "3", "x-agl-paused": "true"})
    assert rec.body("proxy state paused")["paused"] is True
    assert rec.body("proxy state")["paused"] is False
    assert rec.status("proxy after delete models") == 503
    # What reached the model server: the three forwarded calls, under the configured name.
    assert [(path, body["model"], body["messages"][-1]["content"]) for path, body in received] \
        == [("/v1/chat/completions", MODEL, "hello"), ("/v1/chat/completions", MODEL,
                                                       "hello again"),
            ("/v1/chat/completions", MODEL, OVERFLOW)]
    # The proxy recorded each call as a model_request event, the refused one with its status.
    recorded = rec.body("model requests")
    assert [(e["data"]["http_status"], e["data"]["status"]) for e in recorded] == [
        (200, "ok"), (200, "ok"), (400, "error")]
    assert {e["data"]["model"] for e in recorded} == {MODEL}
    triplets = rec.body("model requests triplet")
    assert triplets[0]["data"]["prompt_token_ids"] == [1, 2, 3]
    assert triplets[0]["data"]["response_token_ids"] == [7, 8]
    assert triplets[0]["data"]["response_log_probs"] == [-0.25, -0.5]
    assert triplets[-1]["data"]["error"] == CONTEXT_ERROR["error"]


def test_tractatus_watch_stored_what_it_served(gateways: dict[str, Gateway],
                                               flows: dict[str, Any]) -> None:
    """The same flow through our gateway was captured: stopped with SIGTERM, it exits 0 and
    its store holds the two decisions, the reward and the proxy's three model requests."""
    gw = gateways["tractatus-watch"]
    assert gw.stop() == 0, gw.log.read_text()[-2000:]
    assert "key=" not in gw.log.read_text() and KEY not in gw.log.read_text()
    with Store.open(gw.workdir / "gw.duckdb", read_only=True) as store:
        cur = store.cursor()
        try:
            decisions = cur.execute("SELECT decision_id, round FROM decisions ORDER BY 1"
                                    ).fetchall()
            rewards = cur.execute("SELECT value FROM rewards").fetchall()
            kinds = cur.execute("SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 1"
                                ).fetchall()
        finally:
            cur.close()
    assert decisions == [("contract-d0", 3), ("contract-d1", 3)]
    assert rewards == [(0.7,)]
    assert ("model_request", 3) in kinds

