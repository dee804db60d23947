"""The README's definitions computed straight from the raw tables (decisions, checks, rulesets),
never from the rollups or the product's queries: what the consistency tests compare every
surface with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb


@dataclass(frozen=True)
class ArmTruth:
    arm: str
    actions: int
    covered: int
    attempted: int
    blocked: int             # attempted and not executed
    would_have_blocked: int  # attempted in a decision not made in enforce mode
    escaped: int             # attempted and executed
    evasions: int
    enforce_mode: int

    @property
    def coverage(self) -> float | None:
        return self.covered / self.actions if self.actions else None

    @property
    def mode(self) -> str:
        if not self.actions:
            return "none"
        if self.enforce_mode == self.actions:
            return "enforce"
        return "shadow" if self.enforce_mode == 0 else "mixed"


@dataclass(frozen=True)
class RuleTruth:
    arm: str
    service: str
    rule_id: str
    evaluations: int | None
    fires: int
    blocks: int
    would_have_blocked: int

    def _rate(self, k: int) -> float | None:
        return k / self.evaluations if self.evaluations else None

    @property
    def block_rate(self) -> float | None:
        return self._rate(self.blocks)

    @property
    def would_block_rate(self) -> float | None:
        return self._rate(self.would_have_blocked)

    @property
    def rule_rate(self) -> float | None:
        return self._rate(self.blocks + self.would_have_blocked)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    return con.execute(sql, params).fetchall()


def arms(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, ArmTruth]:
    rows = _rows(con, """
        SELECT arm, count(*), count_if(covered),
               count_if(attempted), count_if(attempted AND NOT executed),
               count_if(attempted AND mode <> 'enforce'), count_if(attempted AND executed),
               count_if(evasion), count_if(mode = 'enforce')
        FROM decisions WHERE run_id = ? GROUP BY arm ORDER BY arm""", [run_id])
    return {r[0]: ArmTruth(*r) for r in rows}


def rules(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[tuple[str, str, str], RuleTruth]:
    """Per (arm, service, rule): evaluations = checks of the service whose rule set holds the
    rule (unknown, None, when some check of that service has no known set or names the rule
    outside its set), fires = non-allow verdicts naming it, blocks / would_have_blocked =
    its block verdicts on enforced / other checks."""
    sets = {(s, v): set() for s, v in _rows(
        con, "SELECT DISTINCT service, ruleset FROM rulesets WHERE run_id = ?", [run_id])}
    for s, v, r in _rows(con, "SELECT service, ruleset, rule_id FROM rulesets "
                              "WHERE run_id = ? AND rule_id <> ''", [run_id]):
        sets[(s, v)].add(r)
    checks = _rows(con, "SELECT arm, service, ruleset, rule_id, verdict, enforced FROM checks "
                        "WHERE run_id = ?", [run_id])
    evaluations: dict[tuple[str, str, str], int] = {}
    fires: dict[tuple[str, str, str], list[int]] = {}
    unknown_service: set[tuple[str, str]] = set()
    unknown_rule: set[tuple[str, str, str]] = set()
    for arm, service, ruleset, rule_id, verdict, enforced in checks:
        held = sets.get((service, ruleset)) if ruleset is not None else None
        if held is None:
            unknown_service.add((arm, service))
        else:
            for r in held:
                evaluations[(arm, service, r)] = evaluations.get((arm, service, r), 0) + 1
        if rule_id:
            key = (arm, service, rule_id)
            f = fires.setdefault(key, [0, 0, 0])
            if held is not None and rule_id not in held:
                unknown_rule.add(key)
            if verdict != "allow":
                f[0] += 1
            if verdict == "block":
                f[1 if enforced else 2] += 1
    out = {}
    for key in set(evaluations) | set(fires):
        unknown = key[:2] in unknown_service or key in unknown_rule
        f = fires.get(key, [0, 0, 0])
        out[key] = RuleTruth(*key, None if unknown else evaluations.get(key, 0), *f)
    return out


__all__ = ["ArmTruth", "RuleTruth", "arms", "rules"]
