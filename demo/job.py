"""The governed training job, run through a real Agent Lightning gateway.

Roles, as in a real deployment:
- the trainer (`DemoJob.run`, `_Trainer`): per round, on Agent Lightning's own rollout-manager
  base, it enqueues one group of rollouts per agent (our hooks file stamps the round), waits for
  them through the terminal log, reads their events, deletes them, and the policies learn from
  exactly those events and rewards;
- the controller (`_Dispatcher`): picks queuing rollouts, marks them running, hands each to its
  agent's worker;
- the model server (`policy_server.PolicyServer`): each agent's policy, served as an
  OpenAI-compatible chat-completions endpoint and registered with the gateway
  (`POST /api/models`) as the verl trainer registers its vLLM servers;
- the agents (`_Agent.run_rollout`): one chat completion per rollout through the rollout's
  AGL_OPENAI_BASE_URL (the gateway's proxy, which records it as a `model_request` event) gives
  the rollout's items as parallel `publish` tool calls; every call passes the Governor
  (`tool_call=`: the decision names the call it governed), which posts its `tractatus.decision`
  events to the rollout's AGL_EVENT_URL, and runs only if allowed; the reward goes the same way.

The policies learn from what the model proposed (the tool calls of the rollouts'
`model_request` events, as a trainer learns from its model's outputs) and the rewards.

Determinism: each agent's rollouts run in creation order on one worker; the policy samples from
the agent's own random stream (in the model server's thread, while the agent waits for the
answer), the world from another, and learning happens between rounds, so the same seed gives
the same training, whatever the thread timing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any, Callable, Final

import numpy as np
from agentlightning.verl.agl_rollout_manager import AglRolloutManagerBase

from ..records.agl import MODEL_REQUEST, STAMP_KEY
from ..records.events import DECISION_EVENT, DECISIONS_EVENT
from ..records.witness import response_tool_calls
from ..governance.governor import DEFAULT_PENALTY, Governor
from ..governance.sender import Sender
from .auditor import ClickbaitAuditor
from .environment import (PUBLISH_TOOL, TOPICS, Style, all_styles, engagement,
                          item_from_arguments, publish_arguments)
from .policy import SoftmaxPolicy
from .policy_server import PolicyServer, ToolCalls
from .rest import JsonClient, Response
from .scenarios import ARM_MODES, Scenario

log = logging.getLogger(__name__)

WORKERS = 4
# How often the controller and the trainer look at the gateway when nothing told them to look
# sooner (_Hints): an idle poll finds nothing to do.
IDLE_POLL_S = 0.5
# A rollout's decisions wait for its end (the worker's flush sends them at once), so they go
# to the gateway as one event per rollout, its reward as another.
ROLLOUT_LINGER_S = 1.0
READERS = 4  # the trainer's concurrent reads of finished rollouts' events


class DemoStopped(Exception):
    pass


class NoModelServer(RuntimeError):
    """The gateway's proxy has no server for its model: it proxies another model name than the
    one the demo registered its policies under (`default_proxy.model_name`)."""


@dataclass
class RoundResult:
    round: int
    rollouts: int
    decisions: int
    seconds: float
    reward: dict[str, float]      # arm -> mean reward this round
    shares: dict[str, np.ndarray]  # arm -> share of each style this round
    proposed: int = 0             # tool calls the model proposed (the rollouts' model_requests)


def _seed(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def openai_base_url(base_url: str, rollout_id: str, attempt_id: str = "0",
                    mode: str = "train") -> str:
    """A rollout's AGL_OPENAI_BASE_URL, as Agent Lightning's controllers hand it to agents."""
    return (f"{base_url.rstrip('/')}/proxy/rollout/{rollout_id}/attempt/{attempt_id}"
            f"/mode/{mode}/openai/v1")


def default_model_name() -> str:
    """The model an Agent Lightning gateway proxies unless told otherwise (its packaged
    server.yaml's `default_proxy.model_name`)."""
    from ..collectors.gateway_tap import server_config

    return str(server_config(host="127.0.0.1", port=0, key=None)["default_proxy"]["model_name"])


_SYSTEM: Final = ("You write items for a news feed. Plan the round's items, one `publish` call "
                  "each, in the style that engages readers most.")


@dataclass
class _Bypass:
    """Actions an agent runs without asking the Governor (the `bypass` scenario)."""

    start: int
    share: float
    rng: np.random.Generator  # its own stream: the rest of the run does not draw from it

    def skips(self, rnd: int) -> bool:
        return rnd >= self.start and bool(self.rng.random() < self.share)


@dataclass
class _Agent:
    arm: str
    agent_id: str
    styles: tuple[Style, ...]
    policy: SoftmaxPolicy
    governor: Governor
    rng: np.random.Generator         # the world's draws (engagement)
    policy_rng: np.random.Generator  # the model's draws (styles, topics)
    steps: int                       # items a rollout publishes
    bypass: _Bypass | None = None
    honest_items: int = 0
    bypassed: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # round -> n
    # Engagement the shared audience's crowding took from the executed items, and their count.
    crowding_lost: float = 0.0
    executed_items: int = 0

    def __post_init__(self) -> None:
        self.by_name = {s.name: s for s in self.styles}
        self.index = {s.name: i for i, s in enumerate(self.styles)}

    @property
    def user(self) -> str:
        """How the agent names itself to the model server (OpenAI's `user` field: the proxy
        overwrites `model`)."""
        return f"{self.arm}/{self.agent_id}"

    def plan(self, request: Any) -> ToolCalls:
        """The model: the rollout's items, sampled from the policy (the policy server calls
        this while the agent waits for the answer)."""
        picks = self.policy.sample(self.policy_rng, self.steps)
        topics = self.policy_rng.integers(len(TOPICS), size=self.steps)
        return [("publish", publish_arguments(self.styles[a], TOPICS[t]))
                for a, t in zip(picks, topics)]

    def skill(self, scenario: Scenario) -> float:
        if scenario.skill <= 0:
            return 0.0
        return scenario.skill * (1.0 - np.exp(-self.honest_items / scenario.skill_tau))

    def run_rollout(self, rollout_id: str, rnd: int, scenario: Scenario,
                    crowding: np.ndarray, model: JsonClient, openai_url: str) -> int:
        """Ask the model for the rollout's items (one completion through the gateway's proxy),
        govern each tool call and run the allowed ones; record the mean engagement as reward,
        less the penalties of the penalized actions per action (the penalized arm)."""
        calls = self._ask(model, openai_url, rnd)
        total = cost = 0.0
        skill = self.skill(scenario)
        for call in calls:
            style, item = item_from_arguments(call["function"]["arguments"], self.by_name)
            if self.bypass is not None and self.bypass.skips(rnd):
                executed = True  # no decision: governance never hears of this action
                self.bypassed[rnd] += 1
            else:
                decision = self.governor.check(item, round=rnd, rollout_id=rollout_id,
                                               tool_call=call)
                executed = decision.executed
                cost += decision.penalty
            if executed:
                crowded = float(crowding[self.index[style.name]])
                total += engagement(style, self.rng, skill=skill, crowding=crowded)
                self.crowding_lost += crowded
                self.executed_items += 1
        n = max(1, len(calls))
        reward = total / n
        if cost:  # only the penalized arm's: the other arms' rewards stay bit for bit
            reward -= cost / n
        self.governor.reward(reward, round=rnd, rollout_id=rollout_id)
        return len(calls)

    def _ask(self, model: JsonClient, openai_url: str, rnd: int) -> list[dict[str, Any]]:
        resp = model.post(f"{openai_url}/chat/completions", json={
            "model": "demo-policy", "user": self.user,
            "messages": [{"role": "system", "content": _SYSTEM},
                         {"role": "user", "content": f"Round {rnd}: plan {self.steps} items."}],
            "tools": [PUBLISH_TOOL], "tool_choice": "required", "parallel_tool_calls": True})
        if resp.status_code == 503 and "No servers available" in resp.text:
            raise NoModelServer(_detail(resp))
        if resp.status_code != 200:
            raise RuntimeError(f"the model answered HTTP {resp.status_code}: {_detail(resp)}")
        message = resp.json()["choices"][0]["message"]
        return list(message.get("tool_calls") or [])


def _detail(resp: Response) -> str:
    """The reason in an error answer (FastAPI's `detail`, OpenAI's `error.message`)."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if body.get("detail"):
            return str(body["detail"])
    return resp.text[:200]


class _Hints:
    """When the trainer and the controller (one process here) should look at the gateway:
    the controller once the trainer has enqueued a step, the trainer once the controller has
    finished every rollout of the step. Never what is there: that is read from the gateway,
    so a lost hint costs an idle poll (IDLE_POLL_S), never a rollout.

    The trainer waits for its own rollouts by id: a count of finished rollouts could be
    reached by rollouts of someone else's (an external gateway holds more than ours)."""

    def __init__(self) -> None:
        self.enqueued = threading.Event()
        self._finished = threading.Condition()
        self._done: set[str] = set()  # finished rollouts the trainer has not read yet
        self._count = 0               # rollouts finished in all (terminal, or failing)

    @property
    def finished_count(self) -> int:
        with self._finished:
            return self._count

    def finished(self, rollout_id: str) -> None:
        with self._finished:
            self._done.add(rollout_id)
            self._count += 1
            self._finished.notify_all()

    def wake(self) -> None:
        with self._finished:
            self._finished.notify_all()

    def wait_finished(self, rollout_ids: set[str], after: int, timeout: float,
                      failure: Callable[[], BaseException | None]) -> int:
        """Until every rollout of `rollout_ids` has finished and one finished after the
        `after`-th (so that a read of the log that found them missing is not repeated at
        once: no spinning), a failure, or `timeout`. Returns how many have finished in all."""
        with self._finished:
            # Sizes first: the subset test runs only once all could be there (a round of
            # 2000 rollouts wakes this 2000 times).
            self._finished.wait_for(lambda: failure() is not None or (
                self._count > after and len(self._done) >= len(rollout_ids)
                and rollout_ids <= self._done), timeout)
            return self._count

    def forget(self, rollout_ids: list[str]) -> None:
        """The trainer has read these: the set stays as small as a round."""
        with self._finished:
            self._done.difference_update(rollout_ids)


class _Dispatcher:
    """The controller: marks each queuing rollout of this job running and hands it to its
    agent's worker, which runs it; the worker's finisher then waits for the rollout's events
    to reach the gateway and marks it finished, while the worker runs the agent's next
    rollout (its draws stay in creation order: they are all made by the worker, and by the
    model server while the worker waits for its answer). Marking happens here, as the
    controller takes a rollout up (as Agent Lightning's controllers do when they launch it):
    a poll then lists only what is new, however many rollouts a round has (a poll lists every
    queuing rollout: at 1000 agents per arm, rollouts waiting for a worker would be listed
    again on every poll). The first rollout of every worker is marked first, so no worker
    waits for the others' marks."""

    def __init__(self, client: JsonClient,
                 agents: dict[tuple[str, str], _Agent], senders: dict[str, Sender],
                 scenario: Scenario, run_id: str = "") -> None:
        self.client = client
        self.agents = agents
        self.senders = senders
        self.scenario = scenario
        self.run_id = run_id
        self.round = 0
        self.crowding: dict[str, np.ndarray] = {}
        self.error: BaseException | None = None
        self.hints = _Hints()
        self._stop = threading.Event()
        self._seen: set[str] = set()
        self._queues: list[SimpleQueue[dict[str, Any] | None]] = [SimpleQueue()
                                                                 for _ in range(WORKERS)]
        self._shard = {key: i % WORKERS for i, key in enumerate(sorted(agents))}
        self._finishing: list[SimpleQueue[tuple[str, str, str] | None]] = [
            SimpleQueue() for _ in range(WORKERS)]
        self._threads = [threading.Thread(target=self._work, args=(q, f), daemon=True,
                                          name=f"demo-agent-{i}")
                         for i, (q, f) in enumerate(zip(self._queues, self._finishing))]
        self._threads += [threading.Thread(target=self._finisher, args=(f,), daemon=True,
                                           name=f"demo-finish-{i}")
                          for i, f in enumerate(self._finishing)]
        self._threads.append(threading.Thread(target=self._poll, daemon=True,
                                              name="demo-controller"))
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._stop.set()
        self.hints.enqueued.set()
        for q in self._queues:
            q.put(None)  # each worker passes it on to its finisher
        for t in self._threads:
            t.join(10)

    def _poll(self) -> None:
        while not self._stop.is_set():
            # Cleared before the read: a step enqueued from here on is either in this read or
            # wakes the next one.
            self.hints.enqueued.clear()
            try:
                resp = self.client.get("/api/rollouts", params={"state_in": "queuing",
                                                                "limit": 5000})
                resp.raise_for_status()
                for rollout in self._take(resp.json()):
                    rid = rollout["rollout_id"]
                    self.client.patch(f"/api/rollouts/{rid}", json={"status": {
                        "state": "running", "last_attempt_id": "0"}}).raise_for_status()
                    key = (rollout["input"]["arm"], rollout["input"]["agent_id"])
                    self._queues[self._shard[key]].put(rollout)
            except Exception as exc:  # surfaced by the trainer, which then stops
                self.error = exc
                self.hints.wake()
                return
            self.hints.enqueued.wait(IDLE_POLL_S)

    def _take(self, queuing: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rollouts of this job not taken up yet, in the order to mark them: round-robin
        over the workers, each worker's in creation order. Another trainer's rollouts (an
        external gateway may hold some) are left to their own controller."""
        by_worker: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for rollout in queuing:
            rid = rollout["rollout_id"]
            if rid in self._seen or not self._mine(rollout):
                continue
            self._seen.add(rid)
            key = (rollout["input"]["arm"], rollout["input"]["agent_id"])
            by_worker[self._shard[key]].append(rollout)
        lanes = [by_worker[w] for w in sorted(by_worker)]
        return [lane[i] for i in range(max(map(len, lanes), default=0))
                for lane in lanes if i < len(lane)]

    def _mine(self, rollout: dict[str, Any]) -> bool:
        given = rollout.get("input")
        if not isinstance(given, dict) or (given.get("arm"), given.get("agent_id")) \
                not in self.agents:
            return False
        metadata = rollout.get("metadata")
        stamped = metadata.get(STAMP_KEY) if isinstance(metadata, dict) else None
        run = stamped.get("run_id") if isinstance(stamped, dict) else None
        return run is None or not self.run_id or run == self.run_id

    def _work(self, q: SimpleQueue[dict[str, Any] | None],
              finishing: SimpleQueue[tuple[str, str, str] | None]) -> None:
        try:
            while (rollout := q.get()) is not None:
                finishing.put(self._run(rollout))
        finally:
            finishing.put(None)

    def _run(self, rollout: dict[str, Any]) -> tuple[str, str, str]:
        """Run the rollout's agent: (rollout id, arm, the state to finish it in)."""
        rid = rollout["rollout_id"]
        arm, agent_id = rollout["input"]["arm"], rollout["input"]["agent_id"]
        try:
            agent = self.agents[(arm, agent_id)]
            # The agents' model calls go through the proxy on the same client: it
            # authenticates with the gateway's key, as Agent Lightning's controllers hand
            # agents AGL_KEY with AGL_OPENAI_BASE_URL.
            agent.run_rollout(rid, self.round, self.scenario,
                              self.crowding.get(arm, np.zeros(len(agent.styles))), self.client,
                              openai_base_url("", rid))
        except NoModelServer as exc:  # every rollout would fail the same way: stop training
            self.error = exc
            return rid, arm, "failed"
        except Exception as exc:
            log.warning("demo: rollout %s failed: %s", rid, exc)
            return rid, arm, "failed"
        return rid, arm, "succeeded"

    def _finisher(self, finishing: SimpleQueue[tuple[str, str, str] | None]) -> None:
        while (item := finishing.get()) is not None:
            rid, arm, state = item
            try:
                # The rollout completes only once its events are at the gateway: the trainer
                # reads them, then deletes the rollout. The flush waits for what the rollout
                # queued, not for what the worker's next rollout queues meanwhile.
                if state == "succeeded" and not self.senders[arm].flush(30.0):
                    log.warning("demo: rollout %s: its events were not all sent in 30 s", rid)
                self.client.patch(f"/api/rollouts/{rid}",
                                  json={"status": {"state": state}}).raise_for_status()
            except Exception as exc:
                self.error = self.error or exc
            self.hints.finished(rid)


@dataclass
class Completed:
    input: dict[str, Any]
    state: str
    final_reward: float | None
    events: list[dict[str, Any]]
    rollout_id: str = ""


class _Trainer(AglRolloutManagerBase):
    """The trainer side, on Agent Lightning's own rollout-manager base: `_create_rollouts`
    enqueues a step's rollouts and runs our hooks' `on_enqueue` (which stamps the round), as in
    the verl trainer. Waiting differs from `AglRolloutManager`, which GETs every pending rollout
    on every poll: the append-only terminal log answers "what finished" in one request.
    Deleting differs too: the verl trainer deletes a rollout 1-2 s after reading it; the demo
    deletes a round's rollouts once the round is judged, so that a poller attached to an
    external gateway (`--agl`) reads each of them before it goes, in the background while the
    next round runs, as the verl trainer's deletions do. A round's events are read a few
    rollouts at a time (READERS), each rollout's in one request. The log, the events and the
    deletions go through `rest` (demo/rest.py), the events as the gateway sends them (the
    base validates each into a pydantic Event, which the demo would only dump again)."""

    _after: int | None = None  # where the terminal log was read up to (a round ends there)
    _readers: ThreadPoolExecutor | None = None
    _deleter: ThreadPoolExecutor | None = None
    rest: JsonClient | None = None  # set by DemoJob.run

    def delete(self, completed: list[Completed]) -> None:
        """Delete the rollouts in the background (as the trainer does: memory is finite)."""
        if self._deleter is None:
            self._deleter = ThreadPoolExecutor(1, thread_name_prefix="demo-trainer-delete")
        for c in completed:
            self._deleter.submit(self._delete_rollout, c.rollout_id)

    def finish(self) -> None:
        """Wait for the deletions and reads under way."""
        for pool in (self._deleter, self._readers):
            if pool is not None:
                pool.shutdown(wait=True)
        self._deleter = self._readers = None

    def _read(self, rollout_ids: list[str]) -> list[list[dict[str, Any]]]:
        """The events of each rollout, in the given order."""
        if len(rollout_ids) <= 1:
            return [self._events_of(rid) for rid in rollout_ids]
        if self._readers is None:
            self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="demo-trainer-read")
        return list(self._readers.map(self._events_of, rollout_ids))

    def _events_of(self, rollout_id: str) -> list[dict[str, Any]]:
        if self.rest is None:
            return [e.model_dump() for e in self._get_events(rollout_id)]
        events: list[dict[str, Any]] = self.rest.get(
            f"/api/rollouts/{rollout_id}/events").raise_for_status().json()
        return events

    def _delete_rollout(self, rollout_id: str) -> None:
        if self.rest is None:
            super()._delete_rollout(rollout_id)
            return
        try:
            self.rest.delete(f"/api/rollouts/{rollout_id}").raise_for_status()
        except Exception as exc:  # as the base does: a rollout left behind stops nothing
            log.warning("demo: could not delete rollout %s: %s", rollout_id, exc)

    def _terminal(self, after: int, limit: int) -> dict[str, Any]:
        params = {"after": after, "limit": limit}
        if self.rest is None:
            page = self.client.get("/api/rollouts/terminal", params=params)
            page.raise_for_status()
            return dict(page.json())
        body: dict[str, Any] = self.rest.get("/api/rollouts/terminal",
                                             params=params).raise_for_status().json()
        return body

    def run_round(self, step: int, data: dict[str, list[Any]], stop: threading.Event,
                  failure: Callable[[], BaseException | None],
                  hints: _Hints | None = None) -> list[Completed]:
        """Enqueue the step, then read what finished from the terminal log, with each
        finished rollout's events. With `hints` (the controller in this process), the
        controller hears of the step at once and the log is read once the controller has
        finished every rollout of it (or every IDLE_POLL_S); without, every 10 ms."""
        self._step = step
        if self._after is None:
            self._after = int(self._terminal(0, 1)["total_terminal"])
        hinted = hints.finished_count if hints is not None else 0
        pending = {e.rollout_id: e for e in self._create_rollouts(data, is_train=True)}
        if hints is not None:
            hints.enqueued.set()
        done: list[Completed] = []
        while pending:
            if hints is not None:
                # Once a read found some of them missing, only a later finish (or the idle
                # poll) is worth another read.
                hinted = hints.wait_finished(set(pending), hinted, IDLE_POLL_S, failure)
            else:
                stop.wait(0.01)
            if stop.is_set():
                raise DemoStopped()
            if (error := failure()) is not None:
                if isinstance(error, NoModelServer):
                    raise error
                raise RuntimeError(f"controller failed: {error}")
            while True:  # the log's pages up to its end
                body = self._terminal(self._after, 1000)
                # A log shorter than our place in it: the gateway restarted; read from the top.
                self._after = (int(body["next_after"]) if body["total_terminal"] >= self._after
                               else 0)
                mine = [(item, pending.pop(item["rollout_id"])) for item in body["items"]
                        if item["rollout_id"] in pending]
                if hints is not None:
                    hints.forget([item["rollout_id"] for item, _ in mine])
                for (item, enqueued), events in zip(mine, self._read(
                        [item["rollout_id"] for item, _ in mine])):
                    rewards = [e["data"].get("value") for e in events
                               if e["event_type"] == "reward"]
                    done.append(Completed(enqueued.input, str(item["state"]),
                                          float(rewards[-1]) if rewards else None, events,
                                          item["rollout_id"]))
                if not pending or self._after >= int(body["total_terminal"]):
                    break
        return done


def decisions_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The decisions among a rollout's events (either event form), in order."""
    out: list[dict[str, Any]] = []
    for ev in events:
        data = ev.get("data") or {}
        if ev.get("event_type") == DECISION_EVENT:
            out.append(data)
        elif ev.get("event_type") == DECISIONS_EVENT:
            out.extend(data.get("decisions", []))
    return out


def proposed_calls(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """The tool calls the model proposed in a rollout: (name, arguments) of every
    `model_request` response, in order."""
    return [call for ev in events if ev.get("event_type") == MODEL_REQUEST
            for call in response_tool_calls((ev.get("data") or {}).get("response"))]


def _proposed_style(call: tuple[str, Any]) -> str:
    name, arguments = call
    if name != "publish":
        return ""
    try:
        args = json.loads(arguments) if isinstance(arguments, (str, bytes)) else arguments
    except ValueError:
        return ""
    return str(args.get("style", "")) if isinstance(args, dict) else ""


@dataclass
class DemoJob:
    scenario: Scenario
    run_id: str
    seed: int
    base_url: str
    key: str | None
    hooks: Any = None
    on_round: Callable[[RoundResult], None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    speed: float | None = None
    # The model the gateway proxies (its `default_proxy.model_name`): the policies are
    # registered under it. None: Agent Lightning's default.
    model_name: str | None = None
    # Each round's rollouts as the trainer got them back (events included), before learning.
    on_completed: Callable[[int, list[Completed]], None] | None = None
    # What a penalized action costs in the penalized arm's reward.
    penalty: float = DEFAULT_PENALTY

    def __post_init__(self) -> None:
        sc = self.scenario
        self.styles = all_styles(sc.adversarial_round is not None)
        base_mask = np.array([not s.disguised for s in self.styles])
        self.senders = {arm: Sender(base_url=self.base_url, key=self.key, max_queue=200_000,
                                    linger_s=ROLLOUT_LINGER_S) for arm in sc.arms}
        self.agents: dict[tuple[str, str], _Agent] = {}
        for arm in sc.arms:
            for i in range(sc.agents):
                agent_id = f"agent-{i}"
                governor = Governor(
                    mode=ARM_MODES[arm], agent_id=agent_id,
                    arm=arm, run_id=self.run_id, sink=self.senders[arm],
                    auditors=[ClickbaitAuditor], audit_sample=sc.audit_sample,
                    seed=_seed(self.seed, arm, agent_id, "audit"), penalty=self.penalty)
                bypass = None
                if sc.bypass_round is not None and (arm, agent_id) == ("governed", "agent-0"):
                    bypass = _Bypass(sc.bypass_round, sc.bypass_share, np.random.default_rng(
                        _seed(self.seed, arm, agent_id, "bypass")))
                self.agents[(arm, agent_id)] = _Agent(
                    arm, agent_id, self.styles,
                    SoftmaxPolicy(len(self.styles), lr=sc.lr, available=base_mask),
                    governor, np.random.default_rng(_seed(self.seed, arm, agent_id)),
                    np.random.default_rng(_seed(self.seed, arm, agent_id, "policy")), sc.steps,
                    bypass)

    def _wait_pace(self, started: float) -> None:
        if self.speed:
            self.stop.wait(max(0.0, 1.0 / self.speed - (time.monotonic() - started)))

    def run(self) -> list[RoundResult]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        trainer = _Trainer(agl_base_url=self.base_url, agl_key=self.key or "",
                           model=self.model_name or default_model_name(), step=0,
                           train_rollout_n=self.scenario.rollouts, hooks=self.hooks)
        policies = PolicyServer({a.user: a.plan for a in self.agents.values()})
        try:
            # As the verl trainer does before each step: replace the registered model servers.
            trainer.delete_model()
            trainer.register_model([policies.endpoint])
            # The model calls share the client: a completion may take longer than a read.
            rest = JsonClient(self.base_url, headers=headers, timeout=120.0)
            trainer.rest = rest
            dispatcher = _Dispatcher(rest, self.agents, self.senders, self.scenario,
                                     self.run_id)
            try:
                return self._rounds(trainer, dispatcher)
            finally:
                dispatcher.close()
        finally:
            # Nothing answers at this endpoint any more: leave no dead server registered.
            trainer.finish()  # its deletions first: then nothing of the run is left
            trainer.delete_model()
            trainer.client.close()
            if trainer.rest is not None:
                trainer.rest.close()
            policies.close()
            for sender in self.senders.values():
                sender.close(10.0)

    def _rounds(self, trainer: _Trainer, dispatcher: _Dispatcher) -> list[RoundResult]:
        sc = self.scenario
        results: list[RoundResult] = []
        for rnd in range(sc.rounds):
            if self.stop.is_set():
                raise DemoStopped()
            started = time.monotonic()
            if sc.adversarial_round is not None and rnd == sc.adversarial_round:
                everything = np.ones(len(self.styles), dtype=bool)
                for agent in self.agents.values():
                    agent.policy.make_available(everything)
            dispatcher.round = rnd
            keys = sorted(self.agents)
            completed = trainer.run_round(
                rnd, {"arm": [k[0] for k in keys], "agent_id": [k[1] for k in keys]},
                self.stop, lambda: dispatcher.error, dispatcher.hints)
            if self.on_completed is not None:
                self.on_completed(rnd, completed)
            result = self._learn(rnd, completed, time.monotonic() - started)
            dispatcher.crowding = self._crowding(result)
            results.append(result)
            if self.on_round is not None:
                self.on_round(result)  # the session waits here until the round is stored
            trainer.delete(completed)
            self._wait_pace(started)
        return results

    def _learn(self, rnd: int, completed: list[Any], seconds: float) -> RoundResult:
        """Policy-gradient step per agent from the rollouts Agent Lightning handed back: what
        the model proposed in each (its `model_request` tool calls) and the rollout's reward."""
        index = {s.name: i for i, s in enumerate(self.styles)}
        groups: dict[tuple[str, str], list[tuple[np.ndarray, float]]] = defaultdict(list)
        per_arm_counts = {arm: np.zeros(len(self.styles)) for arm in self.scenario.arms}
        per_arm_rewards: dict[str, list[float]] = defaultdict(list)
        decisions = proposed = 0
        for c in completed:
            counts = np.zeros(len(self.styles))
            for call in proposed_calls(c.events):
                style = _proposed_style(call)
                if style in index:
                    counts[index[style]] += 1
            proposed += int(counts.sum())
            decisions += len(decisions_of(c.events))
            reward = float(c.final_reward) if c.final_reward is not None else 0.0
            key = (c.input["arm"], c.input["agent_id"])
            groups[key].append((counts, reward))
            per_arm_counts[key[0]] += counts
            per_arm_rewards[key[0]].append(reward)
        for key, items in sorted(groups.items()):
            agent = self.agents[key]
            # A canonical order: rollouts finish in any order, the update must not depend on it.
            items.sort(key=lambda i: (i[1], tuple(i[0])))
            counts = np.array([i[0] for i in items])
            rewards = np.array([i[1] for i in items])
            agent.policy.update(counts, rewards)
            agent.honest_items += int(counts[:, [not s.violates for s in self.styles]].sum())
        shares = {arm: c / c.sum() if c.sum() else c for arm, c in per_arm_counts.items()}
        # Summed in a canonical order too: the same seed, the same figures to the last bit.
        return RoundResult(rnd, len(completed), decisions, seconds,
                           {arm: float(np.mean(sorted(v))) for arm, v in per_arm_rewards.items()},
                           shares, proposed)

    def crowding_losses(self) -> dict[str, float]:
        """Per arm, the mean engagement an executed item lost to crowding (a coordination
        measure of the multiagent scenario: 0 where agents spread over the styles)."""
        out: dict[str, float] = {}
        for arm in self.scenario.arms:
            agents = [a for (a_arm, _), a in self.agents.items() if a_arm == arm]
            items = sum(a.executed_items for a in agents)
            out[arm] = sum(a.crowding_lost for a in agents) / items if items else 0.0
        return out

    def _crowding(self, result: RoundResult) -> dict[str, np.ndarray]:
        """A shared audience tires of a style the more agents publish it (last round's share,
        above an even spread, costs engagement)."""
        if self.scenario.crowding <= 0 or self.scenario.agents < 2:
            return {}
        even = 1.0 / len(self.styles)
        return {arm: self.scenario.crowding * np.clip(share - even, 0.0, None) / (1 - even)
                for arm, share in result.shares.items()}
