"""The figures of the definitions (README, DESIGN.md), each computed in one place from counts
handed to it: per arm, "all arms" only where a sum means something, per-rule rates with their
real denominators, alert counts with silenced ones apart.

Pure: no store, no SQL. storage/queries.py fetches the counts; monitor/report.py, the TUI, the
CLI and the alert rules call these functions, so every surface shows the same number.

- blocked: attempted and not executed (only an enforcing arm stops anything);
- would_have_blocked: attempted in a decision that governed nothing (shadow, off): a shadow
  verdict is never a block;
- penalized: a stopping verdict in penalize mode (the penalized arm): the action ran and cost
  the penalty, so its violation is also escaped (the penalized arm's expected escapes);
- escaped: attempted and executed;
- coverage: covered / actions, per arm only (a rate: never summed over arms); an action counts
  as covered when its checks governed it (enforce or penalize mode);
- witnessed coverage: witnessed tool calls matched to a decision checked in a governing mode /
  witnessed tool calls (the gateway's count, not the SDK's); ungoverned: witnessed calls with no
  decision; unwitnessed decisions: decisions with no witnessed call (`WitnessFigures`);
- per rule, per arm: evaluations (checks whose rule set held the rule; None when unknown),
  fires (non-allow verdicts naming it), blocks (enforced block verdicts), would_have_blocked
  (block verdicts not enforced); block_rate = blocks / evaluations, would_block_rate =
  would_have_blocked / evaluations, and the rule's rate = both / evaluations (in one arm a
  rule's checks are all enforced or all not, so it is one of the two). Unknown stays unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

Mode = Literal["enforce", "penalize", "shadow", "mixed", "none"]


def rate(num: int | float | None, den: int | float | None) -> float | None:
    """num / den; None when either is unknown or nothing was counted."""
    if num is None or den is None or den <= 0:
        return None
    return num / den


def _int(row: Mapping[str, Any], key: str) -> int:
    value = row.get(key)
    return int(value) if value is not None else 0


@dataclass(frozen=True)
class ArmFigures:
    """One arm of a run over a span of rounds."""

    arm: str
    actions: int
    covered: int
    enforce_mode: int        # actions decided in enforce mode
    attempted: int
    blocked: int
    would_have_blocked: int
    escaped: int
    evasions: int
    executed: int
    penalize_mode: int = 0   # actions decided in penalize mode
    penalized: int = 0       # of them, those that cost the penalty

    @property
    def coverage(self) -> float | None:
        return rate(self.covered, self.actions)

    @property
    def mode(self) -> Mode:
        """How the arm decided: every action in enforce mode, every one in penalize mode, none
        in either (shadow, off), or some."""
        if not self.actions:
            return "none"
        if self.enforce_mode == self.actions:
            return "enforce"
        if self.penalize_mode == self.actions:
            return "penalize"
        return "shadow" if self.enforce_mode == self.penalize_mode == 0 else "mixed"

    def to_json(self) -> dict[str, Any]:
        return {"arm": self.arm, "mode": self.mode, "actions": self.actions,
                "covered": self.covered, "coverage": self.coverage,
                "attempted": self.attempted, "blocked": self.blocked,
                "would_have_blocked": self.would_have_blocked, "penalized": self.penalized,
                "escaped": self.escaped, "evasions": self.evasions, "executed": self.executed}


def arm_figures(row: Mapping[str, Any]) -> ArmFigures:
    """From a row of summed rollup counts (storage/queries.totals and the like)."""
    return ArmFigures(
        arm=str(row["arm"]), actions=_int(row, "actions"), covered=_int(row, "covered"),
        enforce_mode=_int(row, "enforce_mode"), attempted=_int(row, "attempted"),
        blocked=_int(row, "blocked"), would_have_blocked=_int(row, "would_have_blocked"),
        escaped=_int(row, "escaped"), evasions=_int(row, "evasions"),
        executed=_int(row, "executed"), penalize_mode=_int(row, "penalize_mode"),
        penalized=_int(row, "penalized"))


@dataclass(frozen=True)
class AllArms:
    """What sums over arms: counts of actions and of outcomes. No rate, no coverage."""

    arms: tuple[str, ...]
    actions: int
    attempted: int
    blocked: int
    would_have_blocked: int
    escaped: int
    penalized: int = 0


def all_arms(arms: Iterable[ArmFigures]) -> AllArms:
    items = list(arms)
    return AllArms(arms=tuple(a.arm for a in items),
                   actions=sum(a.actions for a in items),
                   attempted=sum(a.attempted for a in items),
                   blocked=sum(a.blocked for a in items),
                   would_have_blocked=sum(a.would_have_blocked for a in items),
                   escaped=sum(a.escaped for a in items),
                   penalized=sum(a.penalized for a in items))


@dataclass(frozen=True)
class WitnessFigures:
    """The gateway's witness of one arm (or one agent): tool calls it saw in model responses,
    reconciled with the decisions (storage/witness_queries.py)."""

    arm: str
    witnessed: int     # tool calls seen
    governed: int      # of them, matched to a decision checked in enforce or penalize mode
    matched: int       # of them, matched to any decision
    unwitnessed: int   # decisions matched to no witnessed call

    @property
    def witnessed_coverage(self) -> float | None:
        """governed / witnessed: the coverage the agent's own code cannot report wrongly."""
        return rate(self.governed, self.witnessed)

    @property
    def ungoverned(self) -> int:
        """Witnessed calls that no decision governed (went around the Governor)."""
        return self.witnessed - self.matched

    def to_json(self) -> dict[str, Any]:
        return {"witnessed": self.witnessed, "governed": self.governed,
                "ungoverned": self.ungoverned, "unwitnessed_decisions": self.unwitnessed,
                "witnessed_coverage": self.witnessed_coverage}


def witness_figures(rows: Iterable[Mapping[str, Any]], key: str = "arm"
                    ) -> dict[str, WitnessFigures]:
    """Per arm (or per `key`, e.g. agent_id) from rows of witness counts (summed)."""
    sums: dict[str, list[int]] = {}
    arms: dict[str, str] = {}
    for row in rows:
        k = str(row[key])
        acc = sums.setdefault(k, [0, 0, 0, 0])
        arms.setdefault(k, str(row.get("arm", k)))
        for i, col in enumerate(("witnessed", "governed", "matched", "unwitnessed")):
            acc[i] += _int(row, col)
    return {k: WitnessFigures(arms[k], *v) for k, v in sums.items()}


@dataclass(frozen=True)
class RuleFigures:
    """One rule in one arm."""

    arm: str
    service: str
    rule_id: str
    evaluations: int | None  # None: the rules evaluated are unknown (audit logs)
    fires: int
    blocks: int
    would_have_blocked: int

    @property
    def block_rate(self) -> float | None:
        return rate(self.blocks, self.evaluations)

    @property
    def would_block_rate(self) -> float | None:
        return rate(self.would_have_blocked, self.evaluations)

    @property
    def rule_rate(self) -> float | None:
        """Block verdicts per evaluation, enforced or not: what the Rules view shows as the
        rule's rate and what its trend (drift) follows."""
        return rule_rate(self.blocks, self.would_have_blocked, self.evaluations)

    @property
    def fire_rate(self) -> float | None:
        return rate(self.fires, self.evaluations)

    def to_json(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "service": self.service,
                "evaluations": self.evaluations, "fires": self.fires, "blocks": self.blocks,
                "would_have_blocked": self.would_have_blocked, "block_rate": self.block_rate,
                "would_block_rate": self.would_block_rate, "fire_rate": self.fire_rate}


def rule_figures(row: Mapping[str, Any], arm: str | None = None) -> RuleFigures:
    """From a row of storage/queries.rule_counts."""
    evaluations = row.get("evaluations")
    return RuleFigures(arm=str(arm if arm is not None else row["arm"]),
                       service=str(row["service"]), rule_id=str(row["rule_id"]),
                       evaluations=None if evaluations is None else int(evaluations),
                       fires=_int(row, "fires"), blocks=_int(row, "blocks"),
                       would_have_blocked=_int(row, "would_have_blocked"))


def rule_rate(blocks: int, would_have_blocked: int, evaluations: int | None) -> float | None:
    """RuleFigures.rule_rate, for callers that have the counts without the figures."""
    return rate(blocks + would_have_blocked, evaluations)


def rule_trend(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str],
                                                           list[tuple[int, float | None]]]:
    """Per (arm, service, rule): (round, rule rate) oldest first, from rule_counts by round; a
    round whose evaluations are unknown has rate None."""
    out: dict[tuple[str, str, str], list[tuple[int, float | None]]] = {}
    for row in sorted(rows, key=lambda r: (r["arm"], r["service"], r["rule_id"], r["round"])):
        f = rule_figures(row)
        out.setdefault((f.arm, f.service, f.rule_id), []).append((int(row["round"]),
                                                                  f.rule_rate))
    return out


@dataclass(frozen=True)
class AlertCounts:
    firing: int     # firing and not silenced: what fails `check`
    silenced: int   # firing but held back by a silence
    pending: int


def alert_counts(states: Iterable[tuple[str, bool]]) -> AlertCounts:
    """From (state, silenced) pairs."""
    firing = silenced = pending = 0
    for state, muted in states:
        if state == "firing":
            if muted:
                silenced += 1
            else:
                firing += 1
        elif state == "pending":
            pending += 1
    return AlertCounts(firing, silenced, pending)


__all__ = ["AlertCounts", "AllArms", "ArmFigures", "Mode", "RuleFigures", "alert_counts",
           "all_arms", "arm_figures", "rate", "rule_figures", "rule_rate", "rule_trend"]


def audience_shares(reward_mass: Mapping[str, float]) -> dict[str, float | None]:
    """Each agent's share of the audience its arm reached: the agent's summed reward over the
    arm's (the agents of one arm compete for one audience; None when the arm earned nothing)."""
    total = sum(reward_mass.values())
    return {agent: (mass / total if total > 0 else None) for agent, mass in reward_mass.items()}


def concentration(shares: Iterable[float | None]) -> float | None:
    """Herfindahl index of the audience shares: 1/agents for an even split, 1 for one agent
    taking everything."""
    known = [s for s in shares if s is not None]
    return sum(s * s for s in known) if known else None
