"""A governed run written round by round into a real spool (SpoolWriter), for the bridge tests:
two arms (governed enforces, ungoverned shadows), two services with announced rule sets, some
blocks, rewards per decision, and a shadow auditor whose flags make evasions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tractatus_watch.governance.spool_writer import SpoolWriter
from tractatus_watch.records.rulesets import RuleSetInfo

SETS = {"BoundaryEnforcer": ("STR-001", "STR-002"), "Auditor": ("AUD-1",)}


def decision(i: int, *, arm: str, round_: int) -> dict[str, Any]:
    blocked_rule = ("STR-001", "STR-002", None, None, None)[(i + round_) % 5]
    flagged = i % 7 == 3 and blocked_rule is None
    governed = arm == "governed"
    checks = []
    for service, rules in SETS.items():
        info = RuleSetInfo.of(service, list(rules))
        if service == "Auditor":
            checks.append({"service": service, "rule_id": "AUD-1",
                           "verdict": "block" if flagged else "allow", "enforced": False,
                           "latency_us": 40 + i % 3, "ruleset": info.version})
            continue
        checks.append({"service": service, "rule_id": blocked_rule or "STR-001",
                       "verdict": "block" if blocked_rule else "allow",
                       "raw_verdict": "BLOCK" if blocked_rule else "PROCEED",
                       "enforced": governed, "latency_us": 100 + 10 * (i % 4),
                       "ruleset": info.version})
    stopped = blocked_rule is not None and governed
    return {
        "schema": "tractatus.decision/1",
        "decision_id": f"{arm}-{round_}-{i}", "agent_id": f"agent-{i % 2}", "round": round_,
        "arm": arm, "mode": "enforce" if governed else "shadow",
        "rollout_id": f"ro-{arm}-{round_}-{i}",
        "action": {"kind": "publish" if i % 2 else "reply", "summary": f"post {i}"},
        "checks": checks, "verdict": "block" if blocked_rule else "allow",
        "executed": not stopped, "latency_us": 200 + i % 5, "ts": time.time(),
        "rulesets": [RuleSetInfo.of(s, list(r)).to_payload() for s, r in SETS.items()],
    }


def write_round(spool: SpoolWriter, round_: int, n: int) -> int:
    """n decisions per arm, each with a reward; returns decisions written."""
    for i in range(n):
        for arm in ("governed", "ungoverned"):
            d = decision(i, arm=arm, round_=round_)
            spool.write("decision", d)
            value = (0.5 if arm == "governed" else 0.8) + 0.01 * ((i * 7 + round_) % 10)
            spool.write("reward", {"reward_id": f"r-{d['decision_id']}",
                                   "rollout_id": d["rollout_id"], "agent_id": d["agent_id"],
                                   "round": round_, "arm": arm, "value": value,
                                   "ts": time.time()})
    spool.rotate()
    return 2 * n


def new_spool(folder: Path) -> SpoolWriter:
    return SpoolWriter(folder, max_age_s=60, fsync=False)
