"""Hooks tap driven by Agent Lightning's own trainer-side AglRolloutManager: three training steps
with succeeded and failed rollouts; every decision and reward reaches the store with its step as
round, through the spool. A user's own hooks file keeps working inside ours."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from agentlightning.hooks import load_hooks
from agentlightning.verl.agl_rollout_manager import AglRolloutManager
from tractatus_watch.governance import hooks_path
from tractatus_watch.collectors.sink import writer_sink
from tractatus_watch.collectors.spool_reader import SpoolReader

USER_HOOKS = '''
import json, os
from agentlightning.hooks import RolloutHooks

class MyHooks(RolloutHooks):
    def _log(self, what):
        with open(os.environ["USER_HOOKS_LOG"], "a") as fh:
            fh.write(what + "\\n")

    def on_startup(self, store=None):
        self._log("startup")

    def on_enqueue(self, request):
        meta = dict(request.metadata or {})
        meta["mine"] = "kept"
        return request.model_copy(update={"metadata": meta})

    def on_succeeded(self, rollout, events, store):
        self._log("succeeded " + rollout.rollout_id)

    def on_failed(self, rollout, store):
        self._log("failed " + rollout.rollout_id)
        raise RuntimeError("user hook failure reaches the manager as before")
'''


class Agents:
    """Agent pods: run each queued rollout, post decisions (the agent does not know the
    training step: it says round 0), a large model_request and a reward, then end it."""

    def __init__(self, url: str, key: str, decisions: int = 3) -> None:
        self.url, self.key, self.decisions = url, key, decisions
        self.posted: dict[str, dict[str, object]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.n = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"},
                          timeout=10) as c:
            while not self.stop.is_set():
                queued = c.get("/api/rollouts", params={"state_in": "queuing"}).json()
                for r in queued:
                    self.play(c, r)
                time.sleep(0.02)

    def play(self, c: httpx.Client, rollout: dict[str, object]) -> None:
        rid = str(rollout["rollout_id"])
        self.n += 1
        fail = self.n % 4 == 0
        c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "running",
                                                           "last_attempt_id": "a0"}})
        ids = [f"{rid}-{k}" for k in range(self.decisions)]
        for d in ids:
            c.post(f"/api/rollouts/{rid}/attempt/a0/events", json={
                "event_type": "tractatus.decision", "data": {
                    "schema": "tractatus.decision/1", "decision_id": d, "agent_id": "agent-7",
                    "round": 0, "arm": "governed", "mode": "enforce",
                    "action": {"kind": "publish"}, "executed": True, "ts": time.time(),
                    "checks": [{"service": "BoundaryEnforcer", "rule_id": "inst_017",
                                "verdict": "allow"}]}})
        c.post(f"/api/rollouts/{rid}/attempt/a0/events", json={
            "event_type": "model_request", "data": {
                "model": "qwen", "latency_ms": 40.0, "usage": {"total_tokens": 900},
                "status": "ok", "request": {"messages": ["x" * 100_000]},
                "response": {"choices": [{"token_ids": [1, 2]}], "prompt_token_ids": [3]}}})
        c.post(f"/api/rollouts/{rid}/attempt/a0/events",
               json={"event_type": "reward", "data": {"value": 0.0 if fail else 1.0}})
        self.posted[rid] = {"decisions": ids, "failed": fail,
                            "meta": rollout.get("metadata")}
        c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "failed" if fail
                                                           else "succeeded"}})


def test_trainer_manager_three_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     agl_server, agl_key, store, writer, q) -> None:
    spool = tmp_path / "spool"
    user_file = tmp_path / "my_hooks.py"
    user_file.write_text(USER_HOOKS)
    user_log = tmp_path / "user.log"
    monkeypatch.setenv("TRACTATUS_WATCH_SPOOL", str(spool))
    monkeypatch.setenv("TRACTATUS_WATCH_RUN_ID", "trainer-run")
    monkeypatch.setenv("TRACTATUS_WATCH_USER_HOOKS", str(user_file))
    monkeypatch.setenv("USER_HOOKS_LOG", str(user_log))

    hooks = load_hooks(str(hooks_path()))  # exactly what the trainer does
    hooks.on_startup()
    agents = Agents(agl_server.url, agl_key)
    agents.thread.start()
    steps, samples, n = (1, 2, 3), 3, 2
    try:
        for step in steps:
            manager = AglRolloutManager(agl_base_url=agl_server.url, agl_key=agl_key,
                                        model="qwen", step=step, train_rollout_n=n,
                                        poll_interval_seconds=0.1, hooks=hooks)
            done = manager.enqueue_and_wait_until_completed(
                {"prompt": [f"p{step}-{i}" for i in range(samples)]}, is_train=True)
            assert len(done) == samples * n
    finally:
        agents.stop.set()
        agents.thread.join(10)
    hooks.close()  # the trainer's exit does this through atexit

    per_step = samples * n
    total = per_step * len(steps)
    assert len(agents.posted) == total
    assert sum(1 for p in agents.posted.values() if p["failed"]) == total // 4
    # on_enqueue stamped run, step and group (and the user's hook still ran first).
    metas = [p["meta"] for p in agents.posted.values()]
    assert all(m["mine"] == "kept" and m["tractatus_watch"]["run_id"] == "trainer-run"
               for m in metas)
    assert sorted(m["tractatus_watch"]["round"] for m in metas) == sorted(
        s for s in steps for _ in range(per_step))
    groups = {m["tractatus_watch"]["group"] for m in metas}
    assert len(groups) == samples * len(steps)  # n rollouts of a sample share a group

    reader = SpoolReader(spool, settle_s=0)
    reader.poll_once(writer_sink(writer, "default"))
    writer.flush()
    decisions = total * agents.decisions
    assert q("SELECT count(*), count(DISTINCT decision_id) FROM decisions "
             "WHERE run_id = 'trainer-run'")[0] == (decisions, decisions)
    # Each decision carries its training step as round, failed rollouts included.
    expected_round = {rid: m["meta"]["tractatus_watch"]["round"]
                      for rid, m in agents.posted.items()}
    got = q("SELECT rollout_id, round, count(*) FROM decisions GROUP BY ALL")
    assert {(r, rnd) for r, rnd, _ in got} == set(expected_round.items())
    assert all(c == agents.decisions for _, _, c in got)
    assert q("SELECT round, count(*), sum(value) FROM rewards GROUP BY 1 ORDER BY 1") == [
        (s, per_step, float(sum(1 for r, p in agents.posted.items() if not p["failed"]
                                and expected_round[r] == s))) for s in steps]
    assert q("SELECT count(*) FROM rewards WHERE agent_id = 'agent-7' AND arm = 'governed'"
             )[0][0] == total
    assert q("SELECT status, count(*) FROM rollouts GROUP BY 1 ORDER BY 1") == [
        ("failed", total // 4), ("queuing", total), ("succeeded", total - total // 4)]
    payloads = [json.loads(p[0]) for p in q("SELECT payload FROM events "
                                             "WHERE event_type = 'model_request'")]
    assert len(payloads) == total
    assert all(p == {"model": "qwen", "latency_ms": 40.0, "usage": {"total_tokens": 900},
                     "status": "ok"} for p in payloads)
    assert q("SELECT count(*) FROM quarantine")[0][0] == 0
    log = user_log.read_text().splitlines()
    assert log[0] == "startup"
    assert sum(1 for line in log if line.startswith("succeeded")) == total - total // 4
    assert sum(1 for line in log if line.startswith("failed")) == total // 4
    assert hooks.counts["errors"] == 0


def test_never_raises_into_the_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACTATUS_WATCH_SPOOL", str(tmp_path / "spool"))
    monkeypatch.delenv("TRACTATUS_WATCH_USER_HOOKS", raising=False)
    for name in ("TRACTATUS_WATCH_AGL_URL", "AGL_BASE_URL", "AGL_SERVER_URL"):
        monkeypatch.delenv(name, raising=False)
    hooks = load_hooks(str(hooks_path()))
    hooks.on_succeeded(object(), {"0": [object()]}, None)  # nonsense in: no exception out
    hooks.on_failed(object(), None)  # no manager, no URL: cannot fetch, must not raise
    assert hooks.counts["errors"] == 2
    hooks.close()
