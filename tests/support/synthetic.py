"""Deterministic synthetic decisions as Arrow batches, for benchmarks and tests.

Vectorised with numpy so that generating 10M checks costs far less than storing them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from tractatus_watch.records.rulesets import ruleset_version
from tractatus_watch.storage.batch import ARROW_SCHEMAS, Batch

BASE_TS_US = 1_795_000_000_000_000  # a fixed epoch (2026-11) so runs are reproducible
SERVICES = ("BoundaryEnforcer", "CrossReferenceValidator")
RULES = ("STR-001", "CONTENT-CLICKBAIT", "SYS-001", "STR-002")


def decisions_batch(start: int, n: int, *, run_id: str = "bench", rounds: int = 100,
                    agents: int = 10, block_rate: float = 0.05, checks_per_decision: int = 2,
                    seed: int = 0, total: int | None = None, rulesets: bool = False) -> Batch:
    """Decisions `start`..`start+n-1` (each with `checks_per_decision` checks), spread evenly
    over rounds and agents of a stream of `total` decisions, with two arms; the same arguments
    always give the same rows. With `rulesets`, every service evaluates every rule of RULES
    on every check (the rule set is recorded: rates have their denominators); without, the
    rules evaluated are unknown."""
    rng = np.random.default_rng(seed * 1_000_003 + start)
    idx = np.arange(start, start + n, dtype=np.int64)
    rnd = (idx * max(rounds, 1) // max(total or start + n, 1)).astype(np.int32)
    arm_is_gov = (idx % 2 == 0)
    arm = np.where(arm_is_gov, "governed", "ungoverned")
    agent = np.char.add("agent-", (idx // 2 % agents).astype(str))
    blocked = rng.random(n) < block_rate
    executed = ~(blocked & arm_is_gov)
    ts = BASE_TS_US + idx * 1_000
    did = np.char.add("d", np.char.zfill(idx.astype(str), 12))
    latency = rng.integers(50, 400, n)
    decisions = pa.Table.from_pydict({
        "run_id": pa.array(np.full(n, run_id)), "decision_id": pa.array(did),
        "rollout_id": pa.array(np.char.add("ro-", (idx // 8).astype(str))),
        "agent_id": pa.array(agent), "round": pa.array(rnd), "arm": pa.array(arm),
        "mode": pa.array(np.where(arm_is_gov, "enforce", "shadow")),
        "action_kind": pa.array(np.where(blocked, "clickbait", "informative")),
        "action_summary": pa.nulls(n, pa.string()), "action_digest": pa.nulls(n, pa.string()),
        "verdict": pa.array(np.where(blocked, "block", "allow")),
        "executed": pa.array(executed), "covered": pa.array(arm_is_gov),
        "attempted": pa.array(blocked), "evasion": pa.array(np.zeros(n, dtype=bool)),
        "n_checks": pa.array(np.full(n, checks_per_decision, dtype=np.int16)),
        "latency_us": pa.array(latency), "ts": pa.array(ts, type=pa.timestamp("us")),
        "extra": pa.nulls(n, pa.string()),
    }, schema=ARROW_SCHEMAS["decisions"])
    k = checks_per_decision
    c_idx = np.repeat(idx, k)
    pos = np.tile(np.arange(k, dtype=np.int16), n)
    c_blocked = np.repeat(blocked, k) & (pos == 0)
    checks = pa.Table.from_pydict({
        "run_id": pa.array(np.full(n * k, run_id)), "decision_id": pa.array(np.repeat(did, k)),
        "idx": pa.array(pos), "round": pa.array(np.repeat(rnd, k)),
        "arm": pa.array(np.repeat(arm, k)), "agent_id": pa.array(np.repeat(agent, k)),
        "service": pa.array(np.array(SERVICES)[pos % len(SERVICES)]),
        "rule_id": pa.array(np.array(RULES)[(c_idx + pos) % len(RULES)]),
        "verdict": pa.array(np.where(c_blocked, "block", "allow")),
        "raw_verdict": pa.array(np.where(c_blocked, "REQUIRE_HUMAN_DECISION", "PROCEED")),
        "boundary": pa.nulls(n * k, pa.string()), "severity": pa.nulls(n * k, pa.string()),
        "enforced": pa.array(np.repeat(arm_is_gov, k)),
        "latency_us": pa.array(np.repeat(latency // k, k)),
        "reason": pa.array(np.where(c_blocked, "clickbait headline", "")),
        "ts": pa.array(np.repeat(ts, k), type=pa.timestamp("us")),
        "extra": pa.nulls(n * k, pa.string()),
        "ruleset": (pa.array(np.full(n * k, ruleset_version(RULES))) if rulesets
                    else pa.nulls(n * k, pa.string())),
    }, schema=ARROW_SCHEMAS["checks"])
    rewards_mask = idx % 8 < 2  # one reward per rollout of 8 decisions, in both arms
    m = int(rewards_mask.sum())
    rewards = pa.Table.from_pydict({
        "run_id": pa.array(np.full(m, run_id)),
        "reward_id": pa.array(np.char.add("rw", idx[rewards_mask].astype(str))),
        "rollout_id": pa.array(np.char.add("ro-", (idx[rewards_mask] // 8).astype(str))),
        "agent_id": pa.array(agent[rewards_mask]), "round": pa.array(rnd[rewards_mask]),
        "arm": pa.array(arm[rewards_mask]),
        "value": pa.array(np.round(rng.random(m) * 0.3 + np.where(arm_is_gov[rewards_mask],
                                                                   0.6, 0.65), 6)),
        "ts": pa.array(ts[rewards_mask], type=pa.timestamp("us")),
    }, schema=ARROW_SCHEMAS["rewards"])
    tables = {"decisions": decisions, "checks": checks, "rewards": rewards}
    if rulesets:
        pairs = [(svc, rule) for svc in SERVICES for rule in RULES]
        tables["rulesets"] = pa.Table.from_pydict({
            "run_id": pa.array([run_id] * len(pairs)),
            "service": pa.array([p[0] for p in pairs]),
            "ruleset": pa.array([ruleset_version(RULES)] * len(pairs)),
            "rule_id": pa.array([p[1] for p in pairs]),
            "ts": pa.array([int(ts[0])] * len(pairs), type=pa.timestamp("us")),
        }, schema=ARROW_SCHEMAS["rulesets"])
    return Batch(tables)


def nested(depth: int) -> list[Any]:
    """A list nested `depth` deep: JSON deeper than parsers allow, built without recursion."""
    root: list[Any] = []
    node = root
    for _ in range(depth):
        child: list[Any] = []
        node.append(child)
        node = child
    return root
