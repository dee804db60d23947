"""The governed training job, run through a real Agent Lightning gateway.

Roles, as in a real deployment:
- the trainer (`DemoJob.run`, `_Trainer`): per round, on Agent Lightning's own rollout-manager
  base, it enqueues one group of rollouts per agent (our hooks file stamps the round), waits for
  them through the terminal log, reads their events, deletes them, and the policies learn from
  exactly those events and rewards;
- the controller (`_Dispatcher`): picks queuing rollouts, marks them running, hands each to its
  agent's worker;
- the agents (`_Agent.run_rollout`): publish items; every item passes the Governor, which posts
  its `tractatus.decision` events to the rollout's AGL_EVENT_URL; the reward goes the same way.

Determinism: each agent's rollouts run in creation order on one worker and draw from the agent's
own random stream, and learning happens between rounds, so the same seed gives the same
training, whatever the thread timing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any, Callable

import httpx
import numpy as np
from agentlightning.verl.agl_rollout_manager import AglRolloutManagerBase

from ..records.events import DECISION_EVENT, DECISIONS_EVENT
from ..governance.governor import Governor
from ..governance.sender import Sender
from .auditor import ClickbaitAuditor
from .environment import TOPICS, Style, all_styles, engagement, item_for
from .policy import SoftmaxPolicy
from .scenarios import Scenario

log = logging.getLogger(__name__)

ARMS = ("governed", "ungoverned")
WORKERS = 4


class DemoStopped(Exception):
    pass


@dataclass
class RoundResult:
    round: int
    rollouts: int
    decisions: int
    seconds: float
    reward: dict[str, float]      # arm -> mean reward this round
    shares: dict[str, np.ndarray]  # arm -> share of each style this round


def _seed(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass
class _Agent:
    arm: str
    agent_id: str
    styles: tuple[Style, ...]
    policy: SoftmaxPolicy
    governor: Governor
    rng: np.random.Generator
    honest_items: int = 0

    def skill(self, scenario: Scenario) -> float:
        if scenario.skill <= 0:
            return 0.0
        return scenario.skill * (1.0 - np.exp(-self.honest_items / scenario.skill_tau))

    def run_rollout(self, rollout_id: str, rnd: int, scenario: Scenario,
                    crowding: np.ndarray) -> int:
        """Publish `steps` items through the Governor; record the mean engagement as reward."""
        total = 0.0
        skill = self.skill(scenario)
        for _ in range(scenario.steps):
            a = int(self.policy.sample(self.rng, 1)[0])
            style = self.styles[a]
            topic = TOPICS[int(self.rng.integers(len(TOPICS)))]
            decision = self.governor.check(item_for(style, topic), round=rnd,
                                           rollout_id=rollout_id)
            if decision.executed:
                total += engagement(style, self.rng, skill=skill, crowding=float(crowding[a]))
        self.governor.reward(total / scenario.steps, round=rnd, rollout_id=rollout_id)
        return scenario.steps


class _Dispatcher:
    """The controller: queuing -> running, then the agent's worker runs the rollout."""

    def __init__(self, client: httpx.Client, agents: dict[tuple[str, str], _Agent],
                 senders: dict[str, Sender], scenario: Scenario) -> None:
        self.client = client
        self.agents = agents
        self.senders = senders
        self.scenario = scenario
        self.round = 0
        self.crowding: dict[str, np.ndarray] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._seen: set[str] = set()
        self._queues: list[SimpleQueue[dict[str, Any] | None]] = [SimpleQueue()
                                                                 for _ in range(WORKERS)]
        self._shard = {key: i % WORKERS for i, key in enumerate(sorted(agents))}
        self._threads = [threading.Thread(target=self._work, args=(q,), daemon=True,
                                          name=f"demo-agent-{i}")
                         for i, q in enumerate(self._queues)]
        self._threads.append(threading.Thread(target=self._poll, daemon=True,
                                              name="demo-controller"))
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._stop.set()
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            t.join(10)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.client.get("/api/rollouts", params={"state_in": "queuing",
                                                                "limit": 5000})
                resp.raise_for_status()
                for rollout in resp.json():
                    rid = rollout["rollout_id"]
                    if rid in self._seen:
                        continue
                    self._seen.add(rid)
                    patch = self.client.patch(f"/api/rollouts/{rid}", json={
                        "status": {"state": "running", "last_attempt_id": "0"}})
                    patch.raise_for_status()
                    key = (rollout["input"]["arm"], rollout["input"]["agent_id"])
                    self._queues[self._shard[key]].put(rollout)
            except Exception as exc:  # surfaced by the trainer, which then stops
                self.error = exc
                return
            self._stop.wait(0.01)

    def _work(self, q: SimpleQueue[dict[str, Any] | None]) -> None:
        while True:
            rollout = q.get()
            if rollout is None:
                return
            rid = rollout["rollout_id"]
            arm, agent_id = rollout["input"]["arm"], rollout["input"]["agent_id"]
            state = "succeeded"
            try:
                agent = self.agents[(arm, agent_id)]
                agent.run_rollout(rid, self.round, self.scenario,
                                  self.crowding.get(arm, np.zeros(len(agent.styles))))
                # The rollout completes only once its events are at the gateway: the trainer
                # reads them, then deletes the rollout.
                self.senders[arm].flush(30.0)
            except Exception as exc:
                log.warning("demo: rollout %s failed: %s", rid, exc)
                state = "failed"
            try:
                self.client.patch(f"/api/rollouts/{rid}",
                                  json={"status": {"state": state}}).raise_for_status()
            except Exception as exc:
                self.error = exc


@dataclass
class Completed:
    input: dict[str, Any]
    state: str
    final_reward: float | None
    events: list[dict[str, Any]]


class _Trainer(AglRolloutManagerBase):
    """The trainer side, on Agent Lightning's own rollout-manager base: `_create_rollouts`
    enqueues a step's rollouts and runs our hooks' `on_enqueue` (which stamps the round), as in
    the verl trainer. Waiting differs from `AglRolloutManager`, which GETs every pending rollout
    on every poll: the append-only terminal log answers "what finished" in one request."""

    def run_round(self, step: int, data: dict[str, list[Any]], stop: threading.Event,
                  failure: Callable[[], BaseException | None]) -> list[Completed]:
        self._step = step
        cursor = self.client.get("/api/rollouts/terminal", params={"after": 0, "limit": 1})
        cursor.raise_for_status()
        after = cursor.json()["total_terminal"]
        pending = {e.rollout_id: e for e in self._create_rollouts(data, is_train=True)}
        done: list[Completed] = []
        while pending:
            if stop.is_set():
                raise DemoStopped()
            if (error := failure()) is not None:
                raise RuntimeError(f"controller failed: {error}")
            page = self.client.get("/api/rollouts/terminal",
                                   params={"after": after, "limit": 1000})
            page.raise_for_status()
            body = page.json()
            after = body["next_after"]
            for item in body["items"]:
                enqueued = pending.pop(item["rollout_id"], None)
                if enqueued is None:
                    continue
                events = [e.model_dump() for e in self._get_events(item["rollout_id"])]
                rewards = [e["data"].get("value") for e in events if e["event_type"] == "reward"]
                done.append(Completed(enqueued.input, str(item["state"]),
                                      float(rewards[-1]) if rewards else None, events))
                self._delete_rollout(item["rollout_id"])  # as the trainer does: memory is finite
            if pending:
                time.sleep(0.01)
        return done


def _kinds(events: list[dict[str, Any]]) -> list[str]:
    """Action kinds of the decisions among a rollout's events (either event form)."""
    kinds: list[str] = []
    for ev in events:
        data = ev.get("data") or {}
        if ev.get("event_type") == DECISION_EVENT:
            kinds.append(data.get("action", {}).get("kind", ""))
        elif ev.get("event_type") == DECISIONS_EVENT:
            kinds.extend(d.get("action", {}).get("kind", "") for d in data.get("decisions", []))
    return kinds


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

    def __post_init__(self) -> None:
        sc = self.scenario
        self.styles = all_styles(sc.adversarial_round is not None)
        base_mask = np.array([not s.disguised for s in self.styles])
        self.senders = {arm: Sender(base_url=self.base_url, key=self.key, max_queue=200_000,
                                    linger_s=0.005) for arm in ARMS}
        self.agents: dict[tuple[str, str], _Agent] = {}
        for arm in ARMS:
            for i in range(sc.agents):
                agent_id = f"agent-{i}"
                governor = Governor(
                    mode="enforce" if arm == "governed" else "shadow", agent_id=agent_id,
                    arm=arm, run_id=self.run_id, sink=self.senders[arm],
                    auditors=[ClickbaitAuditor], audit_sample=sc.audit_sample,
                    seed=_seed(self.seed, arm, agent_id, "audit"))
                self.agents[(arm, agent_id)] = _Agent(
                    arm, agent_id, self.styles,
                    SoftmaxPolicy(len(self.styles), lr=sc.lr, available=base_mask),
                    governor, np.random.default_rng(_seed(self.seed, arm, agent_id)))

    def _wait_pace(self, started: float) -> None:
        if self.speed:
            self.stop.wait(max(0.0, 1.0 / self.speed - (time.monotonic() - started)))

    def run(self) -> list[RoundResult]:
        sc = self.scenario
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        results: list[RoundResult] = []
        trainer = _Trainer(agl_base_url=self.base_url, agl_key=self.key or "",
                           model="demo-policy", step=0, train_rollout_n=sc.rollouts,
                           hooks=self.hooks)
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=30.0) as client:
            dispatcher = _Dispatcher(client, self.agents, self.senders, sc)
            try:
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
                        self.stop, lambda: dispatcher.error)
                    result = self._learn(rnd, completed, time.monotonic() - started)
                    dispatcher.crowding = self._crowding(result)
                    results.append(result)
                    if self.on_round is not None:
                        self.on_round(result)
                    self._wait_pace(started)
            finally:
                dispatcher.close()
                trainer.client.close()
                for sender in self.senders.values():
                    sender.close(10.0)
        return results

    def _learn(self, rnd: int, completed: list[Any], seconds: float) -> RoundResult:
        """Policy-gradient step per agent from the rollouts Agent Lightning handed back."""
        index = {s.name: i for i, s in enumerate(self.styles)}
        groups: dict[tuple[str, str], list[tuple[np.ndarray, float]]] = defaultdict(list)
        per_arm_counts = {arm: np.zeros(len(self.styles)) for arm in ARMS}
        per_arm_rewards: dict[str, list[float]] = defaultdict(list)
        decisions = 0
        for c in completed:
            counts = np.zeros(len(self.styles))
            for kind in _kinds(c.events):
                if kind in index:
                    counts[index[kind]] += 1
            decisions += int(counts.sum())
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
        return RoundResult(rnd, len(completed), decisions, seconds,
                           {arm: float(np.mean(v)) for arm, v in per_arm_rewards.items()},
                           shares)

    def _crowding(self, result: RoundResult) -> dict[str, np.ndarray]:
        """A shared audience tires of a style the more agents publish it (last round's share,
        above an even spread, costs engagement)."""
        if self.scenario.crowding <= 0 or self.scenario.agents < 2:
            return {}
        even = 1.0 / len(self.styles)
        return {arm: self.scenario.crowding * np.clip(share - even, 0.0, None) / (1 - even)
                for arm, share in result.shares.items()}
