"""The metrics of DESIGN.md computed from stored data: one implementation for the report, the
TUI and `check`. Counts come from the rollups (already summed per arm and round) and are turned
into figures by analysis/metrics.py (coverage, blocked, would have blocked, escaped, per-rule
rates); this module adds performance with its interval, the gap, stability and overhead."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from collections.abc import Callable
from typing import Any

import duckdb
import polars as pl

from ..analysis import metrics as M
from ..analysis.stats import Gap, gap_ci, mean_ci
from ..storage import queries as Q
from ..storage import witness_queries as WQ

GOVERNED, PENALIZED, UNGOVERNED = "governed", "penalized", "ungoverned"
# Performance is judged on the trained policy: the mean reward of the last fifth of the rounds
# (at least one). The whole-run mean mixes in the exploration of the first rounds.
FINAL_SHARE = 0.2


def final_rounds(rounds: int) -> int:
    return max(1, math.ceil(FINAL_SHARE * rounds)) if rounds else 0


@dataclass(frozen=True)
class ArmMetrics:
    arm: str
    run_id: str
    performance: float | None      # mean reward per rollout over the final rounds
    performance_lo: float | None   # its 95% t interval
    performance_hi: float | None
    performance_rounds: int        # how many final rounds that is
    performance_all: float | None  # mean reward per rollout over the whole run
    coverage: float | None         # covered / actions
    actions: int
    attempted: int
    blocked: int                   # stopped: only an enforcing arm stops actions
    escaped_violations: int
    evasions: int
    strategy: str | None           # the most executed action kind
    stability: float | None        # std of the per-round mean reward (lower = steadier)
    rounds: int
    latency_p50_us: float | None
    latency_p99_us: float | None
    overhead_share: float | None   # governance latency / rollout time
    # Attempted in decisions that governed nothing (shadow, off): never "blocked".
    would_have_blocked: int = 0
    mode: str = "none"   # enforce, penalize, shadow, mixed (analysis/metrics.ArmFigures.mode)
    # Penalize mode: the actions that ran and cost the penalty (the arm's expected escapes).
    penalized: int = 0
    # Per rule of the arm (analysis/metrics.RuleFigures.to_json): evaluations, fires, blocks,
    # would_have_blocked, block_rate (None where the rules evaluated are unknown).
    rules: tuple[dict[str, Any], ...] = ()
    # The gateway's witness (analysis/metrics.WitnessFigures): None/0 when nothing was witnessed.
    witnessed_coverage: float | None = None
    witnessed: int = 0
    ungoverned_actions: int = 0
    unwitnessed_decisions: int = 0


# At most this many ungoverned actions are listed (their count is always complete).
UNGOVERNED_LISTED = 1000


@dataclass(frozen=True)
class Report:
    run_id: str
    baseline_run: str | None
    arms: dict[str, ArmMetrics]
    gap: Gap | None
    # The witnessed actions no decision governed (storage/witness_queries.ungoverned_actions),
    # of the report's runs, oldest first.
    ungoverned: tuple[dict[str, Any], ...] = ()
    # Per agent of each arm (agent_rows): its counts, coverage, reward and audience share.
    agents: tuple[dict[str, Any], ...] = ()

    def difference(self) -> dict[str, Any]:
        g, u = self.arms.get(GOVERNED), self.arms.get(UNGOVERNED)
        if g is None or u is None:
            return {}

        def sub(a: float | int | None, b: float | int | None) -> float | int | None:
            return None if a is None or b is None else a - b

        return {
            "performance": sub(g.performance, u.performance),
            "performance_all": sub(g.performance_all, u.performance_all),
            "performance_relative": self.gap.relative if self.gap else None,
            "performance_ci": ([_finite(self.gap.lo), _finite(self.gap.hi)]
                               if self.gap else None),
            "coverage": sub(g.coverage, u.coverage),
            "escaped_violations": sub(g.escaped_violations, u.escaped_violations),
            "blocked": sub(g.blocked, u.blocked),
            "would_have_blocked": sub(g.would_have_blocked, u.would_have_blocked),
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
            d["rules"] = [{k: _finite(v) for k, v in r.items()} for r in m.rules]
            arms[name] = {k: _finite(v) if k != "rules" else v for k, v in d.items()}
        return {"run_id": self.run_id, "baseline_run": self.baseline_run, "arms": arms,
                "difference": self.difference(), "ungoverned_actions": list(self.ungoverned),
                "agents": [{k: _finite(v) for k, v in a.items()} for a in self.agents]}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _Runs:
    """The report's queries, each asked once per run (they return every arm; each arm of the
    report takes its rows), so a report of two arms costs one set of queries, not two."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._memo: dict[tuple[str, str], pl.DataFrame] = {}

    def _get(self, name: str, run_id: str, fn: Callable[[], pl.DataFrame]) -> pl.DataFrame:
        key = (name, run_id)
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    def totals(self, run_id: str) -> pl.DataFrame:
        return self._get("totals", run_id, lambda: Q.totals(self.con, run_id))

    def rule_counts(self, run_id: str, arm: str) -> pl.DataFrame:
        return self._get("rules", run_id, lambda: Q.rule_counts(self.con, run_id)).filter(
            pl.col("arm") == arm)

    def per_round(self, run_id: str, arm: str) -> pl.DataFrame:
        return self._get("rounds", run_id, lambda: Q.per_round(self.con, run_id)).filter(
            pl.col("arm") == arm)

    def action_kinds(self, run_id: str) -> pl.DataFrame:
        return self._get("kinds", run_id, lambda: Q.action_kinds(self.con, run_id))

    def latency(self, run_id: str) -> pl.DataFrame:
        return self._get("latency", run_id, lambda: Q.latency(self.con, run_id))

    def witness(self, run_id: str, arm: str) -> M.WitnessFigures | None:
        counts = self._get("witness", run_id, lambda: WQ.witness_counts(self.con, run_id))
        return M.witness_figures(counts.filter(pl.col("arm") == arm).iter_rows(named=True)).get(
            arm)


def _arm(q: _Runs, run_id: str, arm: str) -> ArmMetrics | None:
    totals = q.totals(run_id).filter(pl.col("arm") == arm)
    if totals.is_empty():
        return None
    t = totals.to_dicts()[0]
    figures = M.arm_figures(t)
    rules = tuple(M.rule_figures(r).to_json()
                  for r in q.rule_counts(run_id, arm).iter_rows(named=True))
    rounds = q.per_round(run_id, arm)
    per_round_reward = rounds["reward_mean"].drop_nulls()
    std = per_round_reward.std()  # a float for a numeric column of two or more values
    stability = float(std) if per_round_reward.len() > 1 and isinstance(std, float) else None
    rewarded = rounds.filter(pl.col("reward_n") > 0)
    final = rewarded.tail(final_rounds(rewarded.height))
    n, total, sq = (float(final[c].sum()) for c in ("reward_n", "reward_sum", "reward_sq_sum"))
    ci = mean_ci(n, total, sq)
    kinds = q.action_kinds(run_id).filter((pl.col("arm") == arm) & (pl.col("executed") > 0))
    lat = q.latency(run_id).filter(pl.col("arm") == arm).to_dicts()
    seen = q.witness(run_id, arm)
    return ArmMetrics(
        arm=arm, run_id=run_id,
        performance=total / n if n else None,
        performance_lo=ci.lo if n else None,
        performance_hi=ci.hi if n else None,
        performance_rounds=final.height,
        performance_all=t["reward_mean"],
        coverage=figures.coverage, actions=figures.actions, attempted=figures.attempted,
        blocked=figures.blocked, escaped_violations=figures.escaped, evasions=figures.evasions,
        strategy=str(kinds["action_kind"][0]) if not kinds.is_empty() else None,
        stability=stability, rounds=t["rounds"],
        latency_p50_us=lat[0]["p50_us"] if lat else None,
        latency_p99_us=lat[0]["p99_us"] if lat else None,
        overhead_share=lat[0]["share_of_rollout_time"] if lat else None,
        would_have_blocked=figures.would_have_blocked, mode=figures.mode,
        penalized=figures.penalized, rules=rules,
        witnessed_coverage=seen.witnessed_coverage if seen else None,
        witnessed=seen.witnessed if seen else 0,
        ungoverned_actions=seen.ungoverned if seen else 0,
        unwitnessed_decisions=seen.unwitnessed if seen else 0,
    )


def witness_by_arm(con: duckdb.DuckDBPyConnection, run_id: str) -> list[dict[str, Any]]:
    """The run's witness per arm (`runs`): [] when the gateway witnessed nothing of it."""
    counts = WQ.witness_counts(con, run_id)
    return [{"arm": arm, **f.to_json()}
            for arm, f in sorted(M.witness_figures(counts.iter_rows(named=True)).items())]


def _final_sums(q: _Runs, run_id: str, arm: str) -> tuple[float, float, float]:
    rounds = q.per_round(run_id, arm).filter(pl.col("reward_n") > 0)
    final = rounds.tail(final_rounds(rounds.height))
    return (float(final["reward_n"].sum()), float(final["reward_sum"].sum()),
            float(final["reward_sq_sum"].sum()))


def _gap(q: _Runs, run_id: str, base_run: str, base_arm: str) -> Gap | None:
    """The governed arm of `run_id` against `base_arm` of `base_run`, over their final rounds;
    None unless both earned rewards."""
    g, b = _final_sums(q, run_id, GOVERNED), _final_sums(q, base_run, base_arm)
    return gap_ci(*g, *b) if g[0] and b[0] else None


def performance_gap(con: duckdb.DuckDBPyConnection, run_id: str) -> Gap | None:
    """The report's gap of a run against its own ungoverned arm, without the rest of the
    report (the Prometheus bridge's gauge)."""
    return _gap(_Runs(con), run_id, run_id, UNGOVERNED)


def build_report(con: duckdb.DuckDBPyConnection, run_id: str, baseline_run: str | None = None
                 ) -> Report:
    """The governed arm of `run_id` against the ungoverned arm of `baseline_run` (default: the
    same run), with the penalized arm of `run_id` when it has one. A baseline run without an
    ungoverned arm lends its only arm."""
    arms: dict[str, ArmMetrics] = {}
    q = _Runs(con)
    governed = _arm(q, run_id, GOVERNED)
    if governed:
        arms[GOVERNED] = governed
    penalized = _arm(q, run_id, PENALIZED)
    if penalized:
        arms[PENALIZED] = penalized
    base_run = baseline_run or run_id
    baseline = _arm(q, base_run, UNGOVERNED)
    if baseline is None and baseline_run:
        others = q.totals(baseline_run)["arm"].to_list()
        if len(others) == 1:
            baseline = _arm(q, baseline_run, others[0])
    if baseline:
        arms[UNGOVERNED] = baseline
    if not arms:  # a run with other arm names: report them as they are
        for name in q.totals(run_id)["arm"].to_list():
            m = _arm(q, run_id, name)
            if m:
                arms[name] = m
    gap = _gap(q, run_id, base_run, baseline.arm) if governed and baseline else None
    ungoverned: list[dict[str, Any]] = []
    for run in sorted({m.run_id for m in arms.values() if m.ungoverned_actions}):
        frame = WQ.ungoverned_actions(con, run, limit=UNGOVERNED_LISTED)
        ungoverned += [{"run_id": run, **row, "ts": row["ts"].isoformat()}
                       for row in frame.iter_rows(named=True)]
    agents = [row for m in arms.values() for row in agent_rows(con, m.run_id, m.arm)]
    return Report(run_id=run_id, baseline_run=baseline_run, arms=arms, gap=gap,
                  ungoverned=tuple(ungoverned[:UNGOVERNED_LISTED]), agents=tuple(agents))


def agent_rows(con: duckdb.DuckDBPyConnection, run_id: str, arm: str) -> list[dict[str, Any]]:
    """The arm's agents (storage/queries.per_agent) with their audience share
    (analysis/metrics.audience_shares)."""
    frame = Q.per_agent(con, run_id, arm)
    rows = frame.to_dicts()
    mass = {r["agent_id"]: (r["reward_mean"] or 0.0) * r["reward_n"] for r in rows}
    shares = M.audience_shares(mass)
    return [{"arm": arm, "agent_id": r["agent_id"], "actions": r["actions"],
             "coverage": r["coverage"], "blocked": r["blocked"], "escaped": r["escaped"],
             "evasions": r["evasions"], "reward_mean": r["reward_mean"],
             "audience_share": shares[r["agent_id"]]} for r in rows]
