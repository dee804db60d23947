"""The dashboard's and reports' queries: parameterised SQL over the rollups, polars results.

Rollup rows are partial aggregates appended per commit, so every query sums them. Each function
takes a DuckDB connection or cursor (one per thread) and consumes its result fully.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, Final, cast

import duckdb
import numpy as np
import polars as pl

from .latency_buckets import midpoints

Con = duckdb.DuckDBPyConnection


def _df(con: Con, sql: str, params: list[Any] | dict[str, Any] | None = None) -> pl.DataFrame:
    # Through an Arrow table: a third of the cost of fetching Python rows for the dashboard's
    # 1,000-row results, a seventh for 28,000 (`.pl()` costs more than both), and an empty
    # result keeps its columns' types.
    table = con.execute(sql, params or []).to_arrow_table()
    return cast(pl.DataFrame, pl.from_arrow(table))


def runs(con: Con) -> pl.DataFrame:
    """Every run, newest first: its experiment (None if none), rounds, time span, whether it
    ended (`ended_at`, from run_events), `actions` and `escaped` summed over its arms, and
    `arms`, one entry per arm with that arm's own figures (analysis/metrics.py defines them)."""
    return _df(con, """
        WITH per_arm AS (
            SELECT run_id, arm, sum(actions)::BIGINT AS actions,
                   sum(covered)::BIGINT AS covered, sum(enforce_mode)::BIGINT AS enforce_mode,
                   sum(attempted)::BIGINT AS attempted, sum(blocked)::BIGINT AS blocked,
                   coalesce(sum(would_have_blocked), 0)::BIGINT AS would_have_blocked,
                   coalesce(sum(penalize_mode), 0)::BIGINT AS penalize_mode,
                   coalesce(sum(penalized), 0)::BIGINT AS penalized,
                   sum(escaped)::BIGINT AS escaped, sum(evasions)::BIGINT AS evasions,
                   max(round) AS max_round, min(ts_min) AS ts_min, max(ts_max) AS ts_max
            FROM rollup_round GROUP BY run_id, arm),
        life AS (
            SELECT run_id, max(ts) AS ended FROM run_events WHERE event = 'ended'
            GROUP BY run_id)
        SELECT r.run_id, r.name, r.created_at,
               -- storage/experiments.py: the experiment the run is a replicate of.
               CASE WHEN json_valid(any_value(r.meta))
                    THEN any_value(r.meta)::JSON->>'experiment' END AS experiment,
               coalesce(list({'arm': a.arm, 'actions': a.actions, 'covered': a.covered,
                              'coverage': CASE WHEN a.actions > 0
                                               THEN a.covered / a.actions END,
                              'enforce_mode': a.enforce_mode, 'attempted': a.attempted,
                              'blocked': a.blocked, 'would_have_blocked': a.would_have_blocked,
                              'penalize_mode': a.penalize_mode, 'penalized': a.penalized,
                              'escaped': a.escaped, 'evasions': a.evasions}
                             ORDER BY a.arm) FILTER (WHERE a.arm IS NOT NULL), [])
                   AS arms,
               coalesce(max(a.max_round) + 1, 0)::BIGINT AS rounds,
               coalesce(sum(a.actions), 0)::BIGINT AS actions,
               coalesce(sum(a.escaped), 0)::BIGINT AS escaped,
               min(a.ts_min) AS first_ts, max(a.ts_max) AS last_ts,
               -- Ended: an end recorded at or after its last data (ENDED_RUNS says the same).
               CASE WHEN any_value(l.ended) >= coalesce(max(a.ts_max), any_value(l.ended))
                    THEN any_value(l.ended) END AS ended_at
        FROM runs r LEFT JOIN per_arm a USING (run_id) LEFT JOIN life l USING (run_id)
        GROUP BY r.run_id, r.name, r.created_at
        ORDER BY coalesce(max(a.ts_max), r.created_at) DESC, r.run_id""")


# The runs that ended: an `ended` event at or after the run's last data (a restarted collector's
# new data makes the run live again). Alert rules use the same text.
ENDED_RUNS = """
    SELECT e.run_id, max(e.ts) AS ended_at FROM run_events e
    JOIN (SELECT run_id, max(ts_max) AS ts_max FROM rollup_round GROUP BY run_id) d
      USING (run_id)
    WHERE e.event = 'ended' AND e.ts >= d.ts_max GROUP BY e.run_id"""


def ended_runs(con: Con) -> dict[str, datetime]:
    """Run id -> when it ended, for the runs that ended."""
    return {str(r[0]): r[1] for r in con.execute(ENDED_RUNS).fetchall()}


def latest_run(con: Con) -> str | None:
    """The first run of `runs()` (newest data first), without its figures."""
    row = con.execute("""
        SELECT r.run_id FROM runs r
        LEFT JOIN (SELECT run_id, max(ts_max) AS ts_max FROM rollup_round GROUP BY run_id) d
          USING (run_id)
        GROUP BY r.run_id, r.created_at
        ORDER BY coalesce(max(d.ts_max), r.created_at) DESC, r.run_id LIMIT 1""").fetchall()
    return str(row[0][0]) if row else None


# The per-round measures (rollup_round, or per agent rollup_agent) summed over their partial
# rows, shared by the per-round, per-run and per-agent queries.
_AGENT_SUMS = """
           sum(actions)::BIGINT AS actions, sum(covered)::BIGINT AS covered,
           sum(enforce_mode)::BIGINT AS enforce_mode, sum(attempted)::BIGINT AS attempted,
           sum(blocked)::BIGINT AS blocked, sum(escaped)::BIGINT AS escaped,
           coalesce(sum(would_have_blocked), 0)::BIGINT AS would_have_blocked,
           coalesce(sum(penalize_mode), 0)::BIGINT AS penalize_mode,
           coalesce(sum(penalized), 0)::BIGINT AS penalized,
           sum(evasions)::BIGINT AS evasions, sum(executed)::BIGINT AS executed,
           sum(latency_us_sum)::BIGINT AS latency_us_sum, sum(reward_n)::BIGINT AS reward_n,
           sum(reward_sum) AS reward_sum, sum(reward_sq_sum) AS reward_sq_sum"""

_PER_ROUND = f"""
    SELECT run_id, arm, round, {_AGENT_SUMS}, max(ts_max) AS ts_max
    FROM rollup_round WHERE run_id = ? {{arm_filter}}
    GROUP BY run_id, arm, round"""


def per_round(con: Con, run_id: str, arm: str | None = None) -> pl.DataFrame:
    """Per (arm, round): counts, coverage, attempted/blocked/escaped rates, reward mean."""
    sql = _PER_ROUND.format(arm_filter="AND arm = ?" if arm else "")
    params: list[Any] = [run_id] + ([arm] if arm else [])
    return _df(con, f"""
        SELECT *, CASE WHEN actions > 0 THEN covered / actions END AS coverage,
               CASE WHEN actions > 0 THEN attempted / actions END AS attempted_rate,
               CASE WHEN actions > 0 THEN blocked / actions END AS blocked_rate,
               CASE WHEN reward_n > 0 THEN reward_sum / reward_n END AS reward_mean,
               CASE WHEN actions > 0 THEN latency_us_sum / actions END AS latency_us_mean
        FROM ({sql}) ORDER BY arm, round""", params)


def totals(con: Con, run_id: str) -> pl.DataFrame:
    """Per arm over the whole run: the KPI strip and the report's counts."""
    return _df(con, f"""
        SELECT arm, count(DISTINCT round)::BIGINT AS rounds, {_AGENT_SUMS},
               CASE WHEN sum(actions) > 0 THEN sum(covered) / sum(actions) END AS coverage,
               CASE WHEN sum(reward_n) > 0 THEN sum(reward_sum) / sum(reward_n) END AS reward_mean
        FROM rollup_round WHERE run_id = ? GROUP BY arm ORDER BY arm""", [run_id])


def _rule_window(run_id: str, arm: str | None, rounds: tuple[int, int] | None,
                 since: datetime | None, until: datetime | None) -> tuple[str, str, list[Any]]:
    """The rule rollup to read and its WHERE clause: per minute only for a time window (the
    per-round one has a row per rule and round, however long the run)."""
    table = "rollup_rule" if since or until else "rollup_rule_round"
    where = ["run_id = ?"]
    params: list[Any] = [run_id]
    if arm:
        where.append("arm = ?")
        params.append(arm)
    if rounds:
        where.append("round BETWEEN ? AND ?")
        params.extend(rounds)
    if since:
        where.append("minute >= date_trunc('minute', ?::TIMESTAMP)")
        params.append(since)
    if until:
        where.append("minute <= ?::TIMESTAMP")
        params.append(until)
    return table, " AND ".join(where), params


def rule_counts(con: Con, run_id: str, *, arm: str | None = None,
                rounds: tuple[int, int] | None = None, since: datetime | None = None,
                until: datetime | None = None, by_round: bool = False) -> pl.DataFrame:
    """Per arm, service and rule (and round with `by_round`): the counts behind each rule's
    rate, from the rollups and the rule sets the checks name (records/rulesets.py).

    evaluations: checks whose service evaluated the rule (their rule set holds it); NULL when
    some check of that service in the window has a rule set that is unknown (no version, as in
    audit logs, or a version never announced) or names the rule outside its own set.
    fires: checks naming the rule with a warn, escalate or block verdict; blocks: block verdicts
    of enforced checks; would_have_blocked: block verdicts of checks not enforced (shadow).
    named: checks naming the rule (any verdict; their latency is the rule's)."""
    table, where, params = _rule_window(run_id, arm, rounds, since, until)
    g = "arm, round, service" if by_round else "arm, service"
    rg = "r.arm, r.round, r.service" if by_round else "r.arm, r.service"
    on = "USING (arm, round, service, rule_id)" if by_round else "USING (arm, service, rule_id)"
    on_u = "USING (arm, round, service)" if by_round else "USING (arm, service)"
    return _df(con, f"""
        WITH r AS (
            SELECT {g}, rule_id, ruleset, sum(checks) AS checks, sum(warns) AS warns,
                   sum(escalates) AS escalates, sum(blocks) AS blocks,
                   sum(enforced_blocks) AS enforced_blocks, sum(latency_us_sum) AS lat,
                   max(latency_us_max) AS lat_max
            FROM {table} WHERE {where} GROUP BY ALL),
        sets AS (SELECT DISTINCT service, ruleset, rule_id FROM rulesets WHERE run_id = ?),
        known AS (SELECT DISTINCT service, ruleset FROM sets),
        by_set AS (SELECT {g}, ruleset, sum(checks) AS n FROM r GROUP BY ALL),
        unknown AS (
            SELECT {g}, sum(n) FILTER (WHERE k.ruleset IS NULL) AS n
            FROM by_set LEFT JOIN known k USING (service, ruleset) GROUP BY ALL),
        evals AS (
            SELECT {g}, s.rule_id, sum(n) AS evaluations
            FROM by_set JOIN sets s USING (service, ruleset) WHERE s.rule_id <> ''
            GROUP BY ALL),
        named AS (
            SELECT {rg}, r.rule_id, sum(r.checks) AS named,
                   sum(r.warns + r.escalates + r.blocks) AS fires,
                   sum(coalesce(r.enforced_blocks, 0)) AS blocks,
                   sum(r.blocks - coalesce(r.enforced_blocks, 0)) AS would_have_blocked,
                   sum(r.checks) FILTER (WHERE s.rule_id IS NULL) AS outside,
                   sum(r.lat) AS lat, max(r.lat_max) AS lat_max
            FROM r LEFT JOIN sets s ON s.service = r.service AND s.ruleset = r.ruleset
                                    AND s.rule_id = r.rule_id
            WHERE r.rule_id <> '' GROUP BY ALL)
        SELECT {g}, rule_id,
               CASE WHEN coalesce(u.n, 0) > 0 OR coalesce(named.outside, 0) > 0 THEN NULL
                    ELSE coalesce(evals.evaluations, 0) END::BIGINT AS evaluations,
               coalesce(named.fires, 0)::BIGINT AS fires,
               coalesce(named.blocks, 0)::BIGINT AS blocks,
               coalesce(named.would_have_blocked, 0)::BIGINT AS would_have_blocked,
               coalesce(named.named, 0)::BIGINT AS named,
               CASE WHEN named.named > 0 THEN named.lat / named.named END AS latency_us_mean,
               named.lat_max::BIGINT AS latency_us_max
        FROM named FULL JOIN evals {on} LEFT JOIN unknown u {on_u}
        ORDER BY {g}, rule_id""", params + [run_id])


def per_rule(con: Con, run_id: str, *, arm: str | None = None,
             rounds: tuple[int, int] | None = None,
             since: datetime | None = None, until: datetime | None = None) -> pl.DataFrame:
    """Per service and rule within a round window and/or time window (minute resolution): the
    checks naming each rule, by verdict (every arm summed: for rates see `rule_counts`)."""
    table, where, params = _rule_window(run_id, arm, rounds, since, until)
    return _df(con, f"""
        SELECT service, rule_id, sum(checks)::BIGINT AS checks,
               sum(enforced)::BIGINT AS enforced, sum(warns)::BIGINT AS warns,
               sum(escalates)::BIGINT AS escalates, sum(blocks)::BIGINT AS blocks,
               sum(latency_us_sum) / sum(checks) AS latency_us_mean,
               max(latency_us_max)::BIGINT AS latency_us_max
        FROM {table} WHERE {where}
        GROUP BY service, rule_id ORDER BY blocks DESC, checks DESC, service, rule_id""", params)


def reward_gap(con: Con, run_id: str, *, baseline_run: str | None = None,
               governed_arm: str = "governed", baseline_arm: str = "ungoverned") -> pl.DataFrame:
    """Per round: reward mean of the governed arm and of the baseline (another arm of the same
    run, or an arm of a baseline run), their gap, and the sums a confidence interval needs."""
    base = baseline_run or run_id
    return _df(con, """
        WITH g AS (
            SELECT round, sum(reward_n) AS n, sum(reward_sum) AS s, sum(reward_sq_sum) AS ss
            FROM rollup_round WHERE run_id = ? AND arm = ? GROUP BY round),
        b AS (
            SELECT round, sum(reward_n) AS n, sum(reward_sum) AS s, sum(reward_sq_sum) AS ss
            FROM rollup_round WHERE run_id = ? AND arm = ? GROUP BY round)
        SELECT coalesce(g.round, b.round) AS round,
               g.n::BIGINT AS governed_n, g.s AS governed_sum, g.ss AS governed_sq_sum,
               b.n::BIGINT AS baseline_n, b.s AS baseline_sum, b.ss AS baseline_sq_sum,
               CASE WHEN g.n > 0 THEN g.s / g.n END AS governed_mean,
               CASE WHEN b.n > 0 THEN b.s / b.n END AS baseline_mean,
               CASE WHEN g.n > 0 AND b.n > 0 THEN g.s / g.n - b.s / b.n END AS gap
        FROM g FULL OUTER JOIN b ON g.round = b.round ORDER BY round""",
        [run_id, governed_arm, base, baseline_arm])


def per_agent(con: Con, run_id: str, arm: str | None = None) -> pl.DataFrame:
    """Per (arm, agent): coverage, blocks, escapes, evasions, reward mean."""
    params: list[Any] = [run_id] + ([arm] if arm else [])
    return _df(con, f"""
        SELECT arm, agent_id, sum(actions)::BIGINT AS actions,
               sum(covered)::BIGINT AS covered, sum(attempted)::BIGINT AS attempted,
               sum(blocked)::BIGINT AS blocked, sum(escaped)::BIGINT AS escaped,
               sum(evasions)::BIGINT AS evasions, sum(reward_n)::BIGINT AS reward_n,
               CASE WHEN sum(actions) > 0 THEN sum(covered) / sum(actions) END AS coverage,
               CASE WHEN sum(reward_n) > 0 THEN sum(reward_sum) / sum(reward_n) END AS reward_mean,
               CASE WHEN sum(actions) > 0 THEN sum(latency_us_sum) / sum(actions) END
                   AS latency_us_mean
        FROM rollup_agent WHERE run_id = ? {'AND arm = ?' if arm else ''}
        GROUP BY arm, agent_id ORDER BY arm, agent_id""", params)


def alert_state(con: Con, run_id: str | None = None) -> pl.DataFrame:
    """Current alert instances, firing first."""
    where = "WHERE run_id = ? OR run_id IS NULL" if run_id else ""
    return _df(con, f"""
        SELECT fingerprint, alertname, run_id, state, severity, labels, annotations, value,
               active_since, updated_at
        FROM alerts {where}
        ORDER BY CASE state WHEN 'firing' THEN 0 WHEN 'pending' THEN 1 WHEN 'nodata' THEN 2
                            ELSE 3 END, active_since DESC NULLS LAST, alertname""",
        [run_id] if run_id else [])


def decisions_page(con: Con, run_id: str, *, limit: int = 100, offset: int = 0,
                   before: datetime | None = None, arm: str | None = None,
                   verdict: str | None = None, rule_id: str | None = None) -> pl.DataFrame:
    """A page of raw decisions, newest first, at or before `before` (keyset paging).

    An ORDER BY ... LIMIT over millions of rows scans them all, so the page is looked for in a
    time window that starts at a minute and grows fourfold until it holds enough rows: DuckDB prunes
    row groups outside the window by their zone maps, so recent pages cost milliseconds.
    """
    where = ["d.run_id = ?"]
    params: list[Any] = [run_id]
    if arm:
        where.append("d.arm = ?")
        params.append(arm)
    if verdict:
        where.append("d.verdict = ?")
        params.append(verdict)
    if rule_id:
        where.append("EXISTS (SELECT 1 FROM checks c WHERE c.run_id = d.run_id AND "
                     "c.decision_id = d.decision_id AND c.ts = d.ts AND c.rule_id = ?)")
        params.append(rule_id)
    span = con.execute("SELECT min(ts_min), max(ts_max) FROM rollup_round WHERE run_id = ?",
                       [run_id]).fetchall()[0]
    first, last = span
    hi = min(before, last) if (before and last) else (before or last)
    window_s = 60.0
    lo = None
    while first is not None and hi is not None:
        lo = hi - timedelta(seconds=window_s)
        if lo <= first:
            lo = None
            break
        n = con.execute(f"SELECT count(*) FROM decisions d WHERE {' AND '.join(where)} "
                        "AND d.ts BETWEEN ? AND ?", params + [lo, hi]).fetchall()[0][0]
        if n >= offset + limit:
            break
        window_s *= 4
    bounds, bound_params = "", []
    if hi is not None:
        bounds += " AND d.ts <= ?"
        bound_params.append(hi)
    if lo is not None:
        bounds += " AND d.ts >= ?"
        bound_params.append(lo)
    return _df(con, f"""
        SELECT d.ts, d.decision_id, d.arm, d.round, d.agent_id, d.mode, d.action_kind,
               d.verdict, d.executed, d.attempted, d.evasion, d.latency_us, d.action_summary
        FROM decisions d WHERE {' AND '.join(where)}{bounds}
        ORDER BY d.ts DESC, d.decision_id LIMIT ? OFFSET ?""",
        params + bound_params + [limit, offset])


def action_kinds(con: Con, run_id: str) -> pl.DataFrame:
    """Per arm and action kind: proposed and executed (the agents' strategy)."""
    return _df(con, """
        SELECT arm, action_kind, sum(actions)::BIGINT AS actions,
               sum(executed)::BIGINT AS executed
        FROM rollup_latency WHERE run_id = ? GROUP BY arm, action_kind
        ORDER BY arm, executed DESC, action_kind""", [run_id])


def quantile_cont(values: list[int], counts: list[int], q: float) -> float:
    """DuckDB's `quantile_cont` of the values a histogram holds (`values` ascending, each
    `counts` times): the same interpolation between the same two values, so the same figure
    as over the raw rows."""
    n = sum(counts)
    rn = (n - 1) * q
    lo, hi = math.floor(rn), math.ceil(rn)

    def at(index: int) -> int:
        seen = 0
        for value, count in zip(values, counts):
            seen += count
            if index < seen:
                return value
        raise IndexError(index)

    low = float(at(lo))
    return low if lo == hi else low + (rn - lo) * (float(at(hi)) - low)


_LATENCY_SCHEMA: Final = {"arm": pl.String, "p50_us": pl.Float64, "p99_us": pl.Float64,
                          "mean_us": pl.Float64, "total_us": pl.Int64, "rollout_s": pl.Float64,
                          "share_of_rollout_time": pl.Float64}


def latency(con: Con, run_id: str) -> pl.DataFrame:
    """Per arm: governance latency per action (p50, p99, mean) and rollout time it is part of.
    From the latency histogram (rollup_latency): exact, as over the decisions themselves."""
    hist = con.execute("""
        SELECT arm, latency_us, sum(actions)::BIGINT FROM rollup_latency WHERE run_id = ?
        GROUP BY arm, latency_us HAVING sum(actions) > 0 ORDER BY arm, latency_us""",
                       [run_id]).fetchall()
    durations = dict(con.execute("""
        SELECT arm, sum(duration_s) FROM rollouts
        WHERE run_id = ? AND status IN ('succeeded', 'failed') GROUP BY arm""",
                                 [run_id]).fetchall())
    by_arm: dict[str, tuple[list[int], list[int]]] = {}
    for arm, value, count in hist:
        values, counts = by_arm.setdefault(arm, ([], []))
        values.append(int(value))
        counts.append(int(count))
    rows = []
    for arm, (values, counts) in by_arm.items():
        total = sum(v * c for v, c in zip(values, counts))
        rollout_s = durations.get(arm)
        rows.append((arm, quantile_cont(values, counts, 0.5), quantile_cont(values, counts, 0.99),
                     float(total) / float(sum(counts)), total, rollout_s,
                     float(total) / 1e6 / rollout_s if rollout_s and rollout_s > 0 else None))
    return pl.DataFrame(rows, schema=_LATENCY_SCHEMA, orient="row")


def grouped_quantile_cont(values: np.ndarray, counts: np.ndarray, starts: np.ndarray,
                          q: float) -> np.ndarray:
    """`quantile_cont` of each group of a histogram at once: rows sorted by group then value,
    every count > 0, groups starting at the row indexes `starts` (ascending, starts[0] == 0).
    The same interpolation as `quantile_cont` above, between the values of rank floor and ceil
    of q(n-1) in each group."""
    if not len(starts):
        return np.zeros(0)
    cum = np.cumsum(counts)
    ends = np.append(starts[1:], len(counts)) - 1
    before = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0)
    rank = q * (cum[ends] - before - 1)
    lo = values[np.searchsorted(cum, before + np.floor(rank), side="right")]
    hi = values[np.searchsorted(cum, before + np.ceil(rank), side="right")]
    return np.asarray(lo + (rank - np.floor(rank)) * (hi - lo), dtype=float)


def latency_by_service(con: Con, run_id: str, arm: str | None = None) -> pl.DataFrame:
    """Per service and round: checks and check latency p50/p99 (the Overhead view), from the
    check-latency histogram (storage/latency_buckets.py: within 1.6% of the exact
    percentiles), each bucket standing for its midpoint. Folded in numpy: half the time of
    the same in SQL for the ~200,000 histogram rows of 10M checks."""
    table = con.execute(f"""
        SELECT service, round, bucket_us, checks FROM rollup_check_latency
        WHERE run_id = ? {'AND arm = ?' if arm else ''}""",
                        [run_id] + ([arm] if arm else [])).to_arrow_table()
    import pyarrow.compute as pc  # here: ~0.1 s to import, which every command would pay

    services = pc.dictionary_encode(table["service"].combine_chunks())
    names = services.dictionary.to_pylist()
    svc = services.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    rnd = table["round"].to_numpy().astype(np.int64)
    bucket = table["bucket_us"].to_numpy()
    n = table["checks"].to_numpy()
    order = np.lexsort((bucket, rnd, svc))
    svc, rnd, bucket, n = svc[order], rnd[order], bucket[order], n[order]
    # One row per (service, round, bucket): the partial rows of many commits summed.
    new = np.ones(len(n), dtype=bool)
    new[1:] = (svc[1:] != svc[:-1]) | (rnd[1:] != rnd[:-1]) | (bucket[1:] != bucket[:-1])
    rows = np.flatnonzero(new)
    n = np.add.reduceat(n, rows) if len(rows) else n
    svc, rnd, bucket = svc[rows], rnd[rows], bucket[rows]
    keep = n > 0
    svc, rnd, bucket, n = svc[keep], rnd[keep], bucket[keep], n[keep]
    first = np.ones(len(n), dtype=bool)
    first[1:] = (svc[1:] != svc[:-1]) | (rnd[1:] != rnd[:-1])
    starts = np.flatnonzero(first)
    mids = midpoints(bucket)
    return pl.DataFrame({
        "service": [names[i] for i in svc[starts]], "round": rnd[starts],
        "checks": np.add.reduceat(n, starts) if len(starts) else n,
        "p50_us": grouped_quantile_cont(mids, n, starts, 0.5),
        "p99_us": grouped_quantile_cont(mids, n, starts, 0.99),
    }, schema={"service": pl.String, "round": pl.Int32, "checks": pl.Int64,
               "p50_us": pl.Float64, "p99_us": pl.Float64}).sort("service", "round")


# --- added for the dashboard (tui/) --------------------------------------------------------------

def alert_history(con: Con, run_id: str | None = None, limit: int = 200) -> pl.DataFrame:
    """The latest alert transitions (the `alert_events` table), newest first."""
    where = "WHERE run_id = ? OR run_id IS NULL" if run_id else ""
    return _df(con, f"""
        SELECT ts, fingerprint, alertname, run_id, from_state, to_state, value, labels
        FROM alert_events {where} ORDER BY ts DESC, alertname LIMIT ?""",
        ([run_id] if run_id else []) + [limit])


def silences(con: Con, active_at: datetime | None = None) -> pl.DataFrame:
    """Silences, latest ending first; only those active at `active_at` when it is given."""
    where = "WHERE starts_at <= ? AND ends_at > ?" if active_at else ""
    return _df(con, f"""
        SELECT silence_id, matchers, comment, created_by, starts_at, ends_at
        FROM silences {where} ORDER BY ends_at DESC, silence_id""",
        [active_at, active_at] if active_at else [])


def rule_reasons(con: Con, run_id: str, arm: str | None = None) -> pl.DataFrame:
    """Per service and rule: the latest non-allow check that gave a reason (time, verdict, reason).

    Searched in a time window that grows from the newest data until every rule that ever warned,
    escalated or blocked has its reason, so a run with millions of checks reads only its tail.
    """
    arm_sql = "AND arm = ?" if arm else ""
    arm_params: list[Any] = [arm] if arm else []
    want, first, last = con.execute(f"""
        SELECT (SELECT count(DISTINCT (service, rule_id)) FROM rollup_rule_round
                WHERE run_id = ? {arm_sql} AND warns + escalates + blocks > 0),
               min(ts_min), max(ts_max)
        FROM rollup_round WHERE run_id = ? {arm_sql}""",
        [run_id, *arm_params, run_id, *arm_params]).fetchall()[0]
    sql = f"""
        SELECT service, rule_id, max(ts) AS ts, arg_max(verdict, ts) AS verdict,
               arg_max(reason, ts) AS reason
        FROM checks WHERE run_id = ? {arm_sql} AND verdict <> 'allow'
             AND reason IS NOT NULL AND reason <> '' {{bounds}}
        GROUP BY service, rule_id ORDER BY service, rule_id"""
    if not want or first is None:
        return _df(con, sql.format(bounds="AND false"), [run_id] + arm_params)
    window_s = 60.0
    while True:
        lo = last - timedelta(seconds=window_s)
        if lo <= first:
            return _df(con, sql.format(bounds=""), [run_id] + arm_params)
        df = _df(con, sql.format(bounds="AND ts >= ?"), [run_id] + arm_params + [lo])
        if df.height >= want:
            return df
        window_s *= 4


def decision_checks(con: Con, run_id: str, decision_id: str,
                    ts: datetime | None = None) -> pl.DataFrame:
    """The checks of one decision in order; pass its `ts` so only its row groups are read."""
    params: list[Any] = [run_id, decision_id] + ([ts] if ts else [])
    return _df(con, f"""
        SELECT idx, service, rule_id, verdict, raw_verdict, boundary, severity, enforced,
               latency_us, reason
        FROM checks WHERE run_id = ? AND decision_id = ? {'AND ts = ?' if ts else ''}
        ORDER BY idx""", params)


def freshness(con: Con, run_id: str | None = None, *,
              lake: bool = False) -> tuple[int, datetime | None]:
    """A number that changes whenever rows are committed, and the newest data time of a run:
    lets a viewer skip work when nothing is new. On a lake the number is the snapshot id (one
    catalog read, where counting tables costs a hundred); on a file, row counts (rollup rows
    are appended per commit)."""
    version = ("(SELECT max(id) FROM ducklake_current_snapshot(current_database()))" if lake
               else """(SELECT count(*) FROM rollup_round)
                       + (SELECT count(*) FROM rollup_rule_round)
                       + (SELECT count(*) FROM alert_events) + (SELECT count(*) FROM silences)""")
    row = con.execute(f"SELECT {version}, (SELECT max(ts_max) FROM rollup_round WHERE run_id = ?)",
                      [run_id]).fetchall()[0]
    return int(row[0]), row[1]


def check_latency_histogram(con: Con, run_id: str) -> pl.DataFrame:
    """Per arm, service and latency bucket (storage/latency_buckets.py): checks, over the whole
    run, with the service's exact latency sum (rollup_rule_round: every check names one rule,
    '' included) on every row. What the Prometheus bridge's histogram is built from."""
    return _df(con, """
        WITH h AS (
            SELECT arm, service, bucket_us, sum(checks)::BIGINT AS checks
            FROM rollup_check_latency WHERE run_id = ? GROUP BY ALL HAVING sum(checks) > 0),
        s AS (
            SELECT arm, service, sum(latency_us_sum)::BIGINT AS latency_us_sum
            FROM rollup_rule_round WHERE run_id = ? GROUP BY ALL)
        SELECT h.arm, h.service, h.bucket_us, h.checks, s.latency_us_sum
        FROM h LEFT JOIN s USING (arm, service) ORDER BY h.arm, h.service, h.bucket_us""",
               [run_id, run_id])
