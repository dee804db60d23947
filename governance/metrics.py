"""The metrics of DESIGN.md computed from stored data: one implementation for the report, the
TUI and `check`. Counts come from the rollups (already summed per arm and round); this module
turns them into coverage, violations, performance with its interval, the gap, stability and
overhead."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import duckdb
import polars as pl

from ..storage import queries as Q
from .stats import Gap, gap_ci, mean_ci

GOVERNED, UNGOVERNED = "governed", "ungoverned"


@dataclass(frozen=True)
class ArmMetrics:
    arm: str
    run_id: str
    performance: float | None      # mean reward per rollout
    performance_lo: float | None   # 95% t interval
    performance_hi: float | None
    coverage: float | None         # covered / actions
    actions: int
    attempted: int
    blocked: int
    escaped_violations: int
    evasions: int
    strategy: str | None           # the most executed action kind
    stability: float | None        # std of the per-round mean reward (lower = steadier)
    rounds: int
    latency_p50_us: float | None
    latency_p99_us: float | None
    overhead_share: float | None   # governance latency / rollout time


@dataclass(frozen=True)
class Report:
    run_id: str
    baseline_run: str | None
    arms: dict[str, ArmMetrics]
    gap: Gap | None

    def difference(self) -> dict[str, Any]:
        g, u = self.arms.get(GOVERNED), self.arms.get(UNGOVERNED)
        if g is None or u is None:
            return {}

        def sub(a: float | int | None, b: float | int | None) -> float | int | None:
            return None if a is None or b is None else a - b

        return {
            "performance": sub(g.performance, u.performance),
            "performance_relative": self.gap.relative if self.gap else None,
            "performance_ci": ([_finite(self.gap.lo), _finite(self.gap.hi)]
                               if self.gap else None),
            "coverage": sub(g.coverage, u.coverage),
            "escaped_violations": sub(g.escaped_violations, u.escaped_violations),
            "blocked": sub(g.blocked, u.blocked),
            "strategy": f"{u.strategy} -> {g.strategy}",
            "stability": sub(g.stability, u.stability),
            "rounds": sub(g.rounds, u.rounds),
            "actions": sub(g.actions, u.actions),
        }

    def to_json(self) -> dict[str, Any]:
        arms = {}
        for name, m in self.arms.items():
            d = asdict(m)
            d.pop("arm")
            arms[name] = {k: _finite(v) for k, v in d.items()}
        return {"run_id": self.run_id, "baseline_run": self.baseline_run, "arms": arms,
                "difference": self.difference()}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _arm(con: duckdb.DuckDBPyConnection, run_id: str, arm: str) -> ArmMetrics | None:
    totals = Q.totals(con, run_id).filter(pl.col("arm") == arm)
    if totals.is_empty():
        return None
    t = totals.to_dicts()[0]
    rounds = Q.per_round(con, run_id, arm)
    per_round_reward = rounds["reward_mean"].drop_nulls()
    stability = float(per_round_reward.std()) if per_round_reward.len() > 1 else None
    kinds = Q.action_kinds(con, run_id).filter((pl.col("arm") == arm) & (pl.col("executed") > 0))
    lat = Q.latency(con, run_id).filter(pl.col("arm") == arm).to_dicts()
    ci = mean_ci(t["reward_n"], t["reward_sum"] or 0.0, t["reward_sq_sum"] or 0.0)
    return ArmMetrics(
        arm=arm, run_id=run_id,
        performance=t["reward_mean"],
        performance_lo=ci.lo if t["reward_n"] else None,
        performance_hi=ci.hi if t["reward_n"] else None,
        coverage=t["coverage"], actions=t["actions"], attempted=t["attempted"],
        blocked=t["blocked"], escaped_violations=t["escaped"], evasions=t["evasions"],
        strategy=str(kinds["action_kind"][0]) if not kinds.is_empty() else None,
        stability=stability, rounds=t["rounds"],
        latency_p50_us=lat[0]["p50_us"] if lat else None,
        latency_p99_us=lat[0]["p99_us"] if lat else None,
        overhead_share=lat[0]["share_of_rollout_time"] if lat else None,
    )


def build_report(con: duckdb.DuckDBPyConnection, run_id: str, baseline_run: str | None = None
                 ) -> Report:
    """The governed arm of `run_id` against the ungoverned arm of `baseline_run` (default: the
    same run). A baseline run without an ungoverned arm lends its only arm."""
    arms: dict[str, ArmMetrics] = {}
    governed = _arm(con, run_id, GOVERNED)
    if governed:
        arms[GOVERNED] = governed
    base_run = baseline_run or run_id
    baseline = _arm(con, base_run, UNGOVERNED)
    if baseline is None and baseline_run:
        others = Q.totals(con, baseline_run)["arm"].to_list()
        if len(others) == 1:
            baseline = _arm(con, baseline_run, others[0])
    if baseline:
        arms[UNGOVERNED] = baseline
    if not arms:  # a run with other arm names: report them as they are
        for name in Q.totals(con, run_id)["arm"].to_list():
            m = _arm(con, run_id, name)
            if m:
                arms[name] = m
    gap = None
    if governed and baseline:
        tg = Q.totals(con, run_id).filter(pl.col("arm") == GOVERNED).to_dicts()[0]
        tb = Q.totals(con, base_run).filter(pl.col("arm") == baseline.arm).to_dicts()[0]
        if tg["reward_n"] and tb["reward_n"]:
            gap = gap_ci(tg["reward_n"], tg["reward_sum"], tg["reward_sq_sum"],
                         tb["reward_n"], tb["reward_sum"], tb["reward_sq_sum"])
    return Report(run_id=run_id, baseline_run=baseline_run, arms=arms, gap=gap)
