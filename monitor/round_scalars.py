"""Per-round governance scalars for training trackers (TensorBoard, W&B): one function, used by
the tracker bridges and by `export --tensorboard`, so every surface writes the same values.

Keyed by the training step, which is the round (verl's step), so the curves line up with the
trainer's own. Every value is a figure of analysis/metrics.py over the counts of
storage/queries.py:

- `governance/<arm>/coverage`, `.../actions`, `.../blocked`, `.../would_have_blocked`,
  `.../escaped`, `.../evasions`: ArmFigures of the arm's round (queries.per_round);
- `governance/<arm>/block_rate/<service>/<rule_id>`: RuleFigures.rule_rate of the round
  (queries.rule_counts by round): block verdicts per evaluation, enforced or not (the Rules
  view's rate); a round whose evaluations are unknown has no value;
- `governance/<arm>/overhead/latency_us_per_action`: governance latency per action of the
  round (queries.per_round's latency_us_mean);
- `governance/gap`: governed - ungoverned mean reward of the round (queries.reward_gap).

A value that is unknown (no actions, no reward in one arm) is left out, never written as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..analysis import metrics as M
from ..storage import queries as Q

PREFIX = "governance"
GAP_TAG = f"{PREFIX}/gap"


def arm_tag(arm: str, name: str) -> str:
    return f"{PREFIX}/{arm}/{name}"


def rule_tag(arm: str, service: str, rule_id: str) -> str:
    return f"{PREFIX}/{arm}/block_rate/{service}/{rule_id}"


@dataclass
class RunScalars:
    """One run's scalars: per arm, per round, tag -> value; and the gap per round."""

    run_id: str
    arms: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    gap: dict[int, float] = field(default_factory=dict)

    def last_round(self, arm: str) -> int | None:
        rounds = self.arms.get(arm)
        return max(rounds) if rounds else None


def _put(values: dict[str, float], tag: str, value: Any) -> None:
    if value is not None and math.isfinite(float(value)):
        values[tag] = float(value)


def round_scalars(con: Any, run_id: str) -> RunScalars:
    """Every round of every arm of `run_id`, as stored now."""
    out = RunScalars(run_id)
    for row in Q.per_round(con, run_id).iter_rows(named=True):
        arm, rnd = str(row["arm"]), int(row["round"])
        f = M.arm_figures(row)
        values = out.arms.setdefault(arm, {}).setdefault(rnd, {})
        _put(values, arm_tag(arm, "coverage"), f.coverage)
        for name in ("actions", "blocked", "would_have_blocked", "escaped", "evasions"):
            _put(values, arm_tag(arm, name), getattr(f, name))
        _put(values, arm_tag(arm, "overhead/latency_us_per_action"), row["latency_us_mean"])
    for row in Q.rule_counts(con, run_id, by_round=True).iter_rows(named=True):
        r = M.rule_figures(row)
        rounds = out.arms.get(r.arm)
        if rounds is None or int(row["round"]) not in rounds:
            continue  # rule counts of a round the per-round rollup has not got yet
        _put(rounds[int(row["round"])], rule_tag(r.arm, r.service, r.rule_id), r.rule_rate)
    for row in Q.reward_gap(con, run_id).iter_rows(named=True):
        if row["gap"] is not None and math.isfinite(row["gap"]):
            out.gap[int(row["round"])] = float(row["gap"])
    return out


__all__ = ["GAP_TAG", "PREFIX", "RunScalars", "arm_tag", "round_scalars", "rule_tag"]
