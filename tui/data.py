"""What each view shows, read through storage/queries.py in a worker thread.

No Textual here: the app calls these from thread workers and renders the results on the main
thread, and the benchmark and tests call them directly. Every function takes its own cursor and
returns immutable results (dataclasses holding polars frames).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

import duckdb
import numpy as np
import polars as pl

from ..analysis import metrics as M
from ..analysis.stats import Gap, welch_gaps
from ..monitor.report import GOVERNED, UNGOVERNED, ArmMetrics, Report, build_report
from ..storage import queries as Q
from ..storage import witness_queries as WQ

Con = duckdb.DuckDBPyConnection

# Verdicts and arms a filter may name; anything else is a typo worth reporting.
EVENT_FILTER_KEYS: Final = {"arm": "arm", "verdict": "verdict", "rule": "rule_id",
                            "rule_id": "rule_id"}


def labels_of(value: Any) -> dict[str, str]:
    """Alert labels are stored as JSON text."""
    if not value:
        return {}
    try:
        data = json.loads(value) if isinstance(value, str) else dict(value)
    except (ValueError, TypeError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def shown_arm(arms: list[str]) -> str | None:
    """The arm the dashboard watches: governed when there is one."""
    if GOVERNED in arms:
        return GOVERNED
    return sorted(arms)[0] if arms else None


# --- every refresh --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Common:
    run_id: str | None          # the run shown (the latest one while following)
    version: int                # changes whenever anything is committed
    last_ts: datetime | None    # newest data of the run (lag)
    alerts: pl.DataFrame        # alert_state of the run, with `silenced`

    @property
    def alert_counts(self) -> M.AlertCounts:
        return M.alert_counts(zip(self.alerts["state"], self.alerts["silenced"]))


def with_silenced(con: Con, alerts: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """`alerts` with a `silenced` column: an active silence matches the alert's labels."""
    from ..analysis.alerts.engine import Silence

    if alerts.is_empty():  # nothing to silence: spare the dashboard's refresh a query
        return alerts.with_columns(pl.lit(False).alias("silenced"))
    silences = []
    for row in Q.silences(con, active_at=now).iter_rows(named=True):
        try:
            silences.append(Silence.from_row(row))
        except (ValueError, KeyError):
            continue  # a malformed silence mutes nothing; it still shows in the list
    silenced = [any(s.matches({**labels_of(lab), "alertname": name}) for s in silences)
                for lab, name in zip(alerts["labels"], alerts["alertname"])]
    return alerts.with_columns(pl.Series("silenced", silenced, dtype=pl.Boolean))


def fetch_common(con: Con, run_id: str | None, *, follow_latest: bool,
                 known_version: int | None = None, known_run: str | None = None,
                 lake: bool = False, now: datetime | None = None) -> Common:
    rid = run_id if not follow_latest else known_run
    version, last_ts = Q.freshness(con, rid, lake=lake)
    if follow_latest and (version != known_version or rid is None):
        # runs() scans the rollups: only look for a newer run when something was committed.
        latest = Q.latest_run(con)
        if latest != rid:
            rid = latest
            version, last_ts = Q.freshness(con, rid, lake=lake)
    alerts = Q.alert_state(con, rid) if rid else Q.alert_state(con)
    at = now if now is not None else datetime.now(timezone.utc).replace(tzinfo=None)
    return Common(rid, version, last_ts, with_silenced(con, alerts, at))


# --- KPIs: monitor/report.build_report is the one implementation of the metrics ------------

@dataclass(frozen=True)
class ArmKpis:
    """One arm in the header, labelled with its arm and mode (analysis/metrics.py)."""

    arm: str
    mode: str
    coverage: float | None
    actions: int
    blocked: int
    would_have_blocked: int
    escaped: int
    # The gateway's witness (the report's ArmMetrics): witnessed 0 = nothing witnessed, the
    # coverage is then n/a, never 0%.
    witnessed_coverage: float | None = None
    witnessed: int = 0
    ungoverned: int = 0
    penalized: int = 0  # penalize mode: actions that ran and cost the penalty


@dataclass(frozen=True)
class Kpis:
    arm: str
    coverage: float | None
    actions: int
    blocked: int
    escaped: int
    baseline_escaped: int | None
    performance: float | None
    baseline_performance: float | None
    gap: Gap | None
    arms: tuple[ArmKpis, ...] = ()  # the watched arm first, then the others of the report


def kpis(report: Report) -> Kpis | None:
    arm = GOVERNED if GOVERNED in report.arms else next(iter(report.arms), None)
    if arm is None:
        return None
    m = report.arms[arm]
    base = report.arms.get(UNGOVERNED) if arm == GOVERNED else None
    order = [arm] + [a for a in report.arms if a != arm]
    arms = tuple(_arm_kpis(report.arms[a]) for a in order)
    return Kpis(arm=arm, coverage=m.coverage, actions=m.actions, blocked=m.blocked,
                escaped=m.escaped_violations,
                baseline_escaped=base.escaped_violations if base else None,
                performance=m.performance,
                baseline_performance=base.performance if base else None, gap=report.gap,
                arms=arms)


def _arm_kpis(m: ArmMetrics) -> ArmKpis:
    return ArmKpis(m.arm, m.mode, m.coverage, m.actions, m.blocked, m.would_have_blocked,
                   m.escaped_violations, m.witnessed_coverage, m.witnessed, m.ungoverned_actions,
                   m.penalized)


def fetch_report(con: Con, run_id: str, baseline_run: str | None = None) -> Report:
    return build_report(con, run_id, baseline_run)


# --- overview -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleTrend:
    service: str
    rule_id: str
    evaluations: int | None     # None: the rules evaluated are unknown
    blocks: int                 # block verdicts, enforced or not (the rule's rate: per arm)
    rates: tuple[float, ...]    # the rule's rate per round, oldest first (unknown rounds left out)

    @property
    def rate(self) -> float | None:
        return M.rate(self.blocks, self.evaluations)


@dataclass(frozen=True)
class OverviewData:
    run_id: str
    arm: str | None
    rounds: pl.DataFrame        # per_round of the watched arm
    reward: pl.DataFrame        # reward_gap per round
    alert_rounds: tuple[int, ...]
    # The baseline run's rounds of the same arm (None without a baseline run): drawn over
    # the rate charts, dim.
    compared: pl.DataFrame | None = None


def _rates_by_round(by_round: pl.DataFrame) -> pl.DataFrame:
    """Per arm and rule (oldest round first): its rounds, the rule rate of each round
    (metrics.rule_rate, as a column: tests/tui/test_rule_rates.py proves they agree), and its
    totals (evaluations unknown if unknown in any round). Columns, not rows: rounds x rules
    rows each refresh."""
    k = pl.col("blocks").fill_null(0) + pl.col("would_have_blocked").fill_null(0)
    rate = pl.when(pl.col("evaluations") > 0).then(k / pl.col("evaluations"))
    return (by_round.sort(["arm", "service", "rule_id", "round"])
            .group_by(["arm", "service", "rule_id"], maintain_order=True)
            .agg(pl.col("round"), rate.alias("rate"),
                 pl.when(pl.col("evaluations").null_count() == 0)
                 .then(pl.col("evaluations").sum()).alias("evaluations"),
                 k.sum().alias("k")))


def rule_trend(by_round: pl.DataFrame) -> pl.DataFrame:
    """Per arm, service and rule of a rule_counts(by_round=True) frame: the rates of the rounds
    whose evaluations are known, oldest first (metrics.rule_trend's rate function)."""
    return _rates_by_round(by_round).select(
        "arm", "service", "rule_id", pl.col("rate").list.drop_nulls().alias("trend")
    ).cast(TREND_SCHEMA)


def rule_trends(by_round: pl.DataFrame, arm: str | None) -> tuple[RuleTrend, ...]:
    """Per rule of one arm (`rule_counts(by_round=True)`): totals and the rate per round."""
    if by_round.is_empty() or arm is None:
        return ()
    rows = _rates_by_round(by_round.filter(pl.col("arm") == arm))
    return tuple(RuleTrend(service, rule_id, evaluations, int(k),
                           tuple(r for r in rates if r is not None))
                 for service, rule_id, evaluations, k, rates in
                 rows.select("service", "rule_id", "evaluations", "k", "rate").iter_rows())


def rounds_of(times: list[datetime], rounds: pl.DataFrame) -> tuple[int, ...]:
    """The round each time falls in: the first round that ended at or after it."""
    if rounds.is_empty() or not times:
        return ()
    ends = rounds.select("round", "ts_max").drop_nulls().sort("round")
    out: set[int] = set()
    for t in times:
        later = ends.filter(pl.col("ts_max") >= t)
        out.add(int(later["round"][0]) if later.height else int(ends["round"][-1]))
    return tuple(sorted(out))


def reward_rounds(watched: pl.DataFrame, baseline: pl.DataFrame,
                  level: float = 0.95) -> pl.DataFrame:
    """Per round: mean reward of the watched arm and of the baseline, their gap, and the
    gap's Welch interval (analysis/stats.py welch_gaps, gap_ci's formula: the report's gap)
    from the rounds' reward sums; no interval where it is infinite. Rounds without rewards on
    either side are left out."""
    # In numpy over the few hundred rounds: each polars frame operation costs ~0.2 ms.
    sides = [_reward_sums(f) for f in (watched, baseline)]
    rounds = np.union1d(*(r[~np.isnan(m)] for r, m, *_ in sides)).astype(np.int64)
    (g_mean, g_n, g_sum, g_sq), (b_mean, b_n, b_sum, b_sq) = (_at(s, rounds) for s in sides)
    _, lo, hi, _, _ = welch_gaps(g_n, g_sum, g_sq, b_n, b_sum, b_sq, level=level)

    def col(name: str, values: np.ndarray) -> pl.Series:
        return pl.Series(name, np.where(np.isfinite(values), values, np.nan), nan_to_null=True)

    return pl.DataFrame([pl.Series("round", rounds, dtype=pl.Int32), col("governed_mean", g_mean),
                         col("baseline_mean", b_mean), col("gap", g_mean - b_mean),
                         col("gap_lo", lo), col("gap_hi", hi)])


def _reward_sums(frame: pl.DataFrame) -> tuple[np.ndarray, ...]:
    """round, reward_mean (NaN: no rewards), reward_n, reward_sum, reward_sq_sum."""
    return tuple(frame[c].cast(pl.Float64).to_numpy()  # a null is NaN: no plan needed
                 for c in ("round", "reward_mean", "reward_n", "reward_sum", "reward_sq_sum"))


def _at(side: tuple[np.ndarray, ...], rounds: np.ndarray) -> list[np.ndarray]:
    """The side's mean (NaN where it has none) and sums (0 where none) at `rounds`."""
    r, mean, *sums = side
    _, at, found = np.intersect1d(rounds, r, assume_unique=True, return_indices=True)
    out = [np.full(len(rounds), np.nan)] + [np.zeros(len(rounds)) for _ in sums]
    for o, v in zip(out, [mean, *sums]):
        o[at] = v[found]
    return out


def fetch_overview(con: Con, run_id: str, baseline_run: str | None = None) -> OverviewData:
    per_round = Q.per_round(con, run_id)
    arm = shown_arm(per_round["arm"].unique().to_list())
    rounds = per_round.filter(pl.col("arm") == arm) if arm else per_round
    if baseline_run is None:
        baseline = per_round.filter(pl.col("arm") == UNGOVERNED) if arm == GOVERNED \
            else per_round.clear()
    else:
        baseline = Q.per_round(con, baseline_run, UNGOVERNED)
    compared = None if baseline_run is None or arm is None else \
        Q.per_round(con, baseline_run, arm)
    history = Q.alert_history(con, run_id)
    fired = history.filter(pl.col("to_state") == "firing")["ts"].to_list()
    return OverviewData(run_id=run_id, arm=arm, rounds=rounds,
                        reward=reward_rounds(rounds, baseline),
                        alert_rounds=rounds_of(fired, rounds),
                        compared=compared)


@dataclass(frozen=True)
class OverviewSlow:
    """The Overview's background part: the header's KPIs (the report) and the rule trends
    of the watched arm (sparklines), both from the rollups, off the charts' refresh."""

    kpis: Kpis | None
    rules: tuple[RuleTrend, ...]


def fetch_overview_slow(con: Con, run_id: str, baseline_run: str | None = None) -> OverviewSlow:
    report = fetch_report(con, run_id, baseline_run)
    arm = shown_arm(list(report.arms))  # the arm fetch_overview watches: the same rule
    by_round = Q.rule_counts(con, run_id, arm=arm, by_round=True) if arm else None
    return OverviewSlow(kpis(report), rule_trends(by_round, arm) if by_round is not None else ())


# --- rules ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RulesData:
    run_id: str
    arm: str | None
    table: pl.DataFrame     # arm, service, rule_id, evaluations, fires, blocks, rates


def fetch_rules(con: Con, run_id: str, arm: str | None = None,
                text_filter: str = "") -> RulesData:
    """One row per arm and rule (rates are per arm: with every arm shown, each keeps its own):
    evaluations, fires, blocks, would_have_blocked and their rates (analysis/metrics.py). The
    trend per round and the latest reason come from `fetch_rule_extras`, in the background
    lane (the trend's query costs as much as this one), joined by `with_extras`."""
    counts = Q.rule_counts(con, run_id, arm=arm)
    figures = [M.rule_figures(r) for r in counts.iter_rows(named=True)]
    table = pl.DataFrame({
        "arm": [f.arm for f in figures], "service": [f.service for f in figures],
        "rule_id": [f.rule_id for f in figures],
        "evaluations": [f.evaluations for f in figures], "fires": [f.fires for f in figures],
        "blocks": [f.blocks for f in figures],
        "would_have_blocked": [f.would_have_blocked for f in figures],
        "block_rate": [f.block_rate for f in figures],
        "would_block_rate": [f.would_block_rate for f in figures],
        "rule_rate": [f.rule_rate for f in figures],
        "latency_us_mean": counts["latency_us_mean"].to_list(),
    }, schema={"arm": pl.String, "service": pl.String, "rule_id": pl.String,
               "evaluations": pl.Int64, "fires": pl.Int64, "blocks": pl.Int64,
               "would_have_blocked": pl.Int64, "block_rate": pl.Float64,
               "would_block_rate": pl.Float64, "rule_rate": pl.Float64,
               "latency_us_mean": pl.Float64})
    table = table.sort(["blocks", "would_have_blocked", "fires", "arm", "service", "rule_id"],
                       descending=[True, True, True, False, False, False])
    if text_filter:
        needle = text_filter.lower()
        table = table.filter(
            pl.col("service").str.to_lowercase().str.contains(needle, literal=True)
            | pl.col("rule_id").str.to_lowercase().str.contains(needle, literal=True))
    return RulesData(run_id, arm, table)


REASON_SCHEMA: Final = pl.Schema({"service": pl.String(), "rule_id": pl.String(),
                                  "last_ts": pl.Datetime("us"), "last_verdict": pl.String(),
                                  "last_reason": pl.String()})
TREND_SCHEMA: Final = pl.Schema({"arm": pl.String(), "service": pl.String(),
                                 "rule_id": pl.String(), "trend": pl.List(pl.Float64())})


@dataclass(frozen=True)
class RuleExtras:
    """The Rules view's background part for one run and arm."""

    run_id: str
    arm: str | None
    reasons: pl.DataFrame   # REASON_SCHEMA: the latest non-allow check per rule (raw checks)
    trends: pl.DataFrame    # TREND_SCHEMA: the rule's rate per round, oldest first


def rule_reasons(con: Con, run_id: str, arm: str | None = None) -> pl.DataFrame:
    """Per service and rule: the time, verdict and reason of its latest non-allow check."""
    return Q.rule_reasons(con, run_id, arm).rename(
        {"ts": "last_ts", "verdict": "last_verdict", "reason": "last_reason"}
    ).cast(REASON_SCHEMA)


def fetch_rule_extras(con: Con, run_id: str, arm: str | None = None) -> RuleExtras:
    return RuleExtras(run_id, arm, rule_reasons(con, run_id, arm),
                      rule_trend(Q.rule_counts(con, run_id, arm=arm, by_round=True)))


def with_extras(table: pl.DataFrame, extras: RuleExtras | None) -> pl.DataFrame:
    """The Rules table with each rule's trend and latest reason (empty while being fetched)."""
    reasons = extras.reasons if extras else pl.DataFrame(schema=REASON_SCHEMA)
    trends = extras.trends if extras else pl.DataFrame(schema=TREND_SCHEMA)
    return (table.join(trends, on=["arm", "service", "rule_id"], how="left",
                       maintain_order="left")
            .with_columns(pl.col("trend").fill_null(pl.lit([], dtype=pl.List(pl.Float64))))
            .join(reasons, on=["service", "rule_id"], how="left", maintain_order="left"))


# --- alerts ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlertsData:
    current: pl.DataFrame   # alert_state + `silenced` (an active silence matches its labels)
    silences: pl.DataFrame  # active silences
    history: pl.DataFrame   # alert_events, newest first


def fetch_alerts(con: Con, run_id: str | None, now: datetime, text_filter: str = "",
                 history_limit: int = 200) -> AlertsData:
    current = Q.alert_state(con, run_id) if run_id else Q.alert_state(con)
    active = Q.silences(con, active_at=now)
    current = with_silenced(con, current, now)
    history = Q.alert_history(con, run_id, limit=history_limit)
    if text_filter:
        needle = text_filter.lower()
        current = current.filter(
            pl.col("alertname").str.to_lowercase().str.contains(needle, literal=True)
            | pl.col("labels").fill_null("").str.to_lowercase().str.contains(needle,
                                                                               literal=True))
        history = history.filter(
            pl.col("alertname").str.to_lowercase().str.contains(needle, literal=True))
    return AlertsData(current, active, history)


# --- runs -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunsData:
    runs: pl.DataFrame


def fetch_runs(con: Con, text_filter: str = "") -> RunsData:
    runs = Q.runs(con)
    if text_filter:
        needle = text_filter.lower()
        runs = runs.filter(
            pl.col("run_id").str.to_lowercase().str.contains(needle, literal=True)
            | pl.col("name").fill_null("").str.to_lowercase().str.contains(needle,
                                                                             literal=True))
    return RunsData(runs)


# What a witness figure reads when the gateway witnessed nothing (never 0%).
NOT_WITNESSED: Final = "n/a"


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    table: pl.DataFrame     # metric, a, b, b_minus_a (text, as shown)


def _metric_rows(report: Report) -> dict[str, float | int | str | None]:
    k = kpis(report)
    g = report.arms.get(k.arm) if k else None
    return {
        "coverage": k.coverage if k else None,
        # n/a, not 0: a run the gateway did not witness (not behind its proxy).
        "witnessed coverage": g.witnessed_coverage if g and g.witnessed else NOT_WITNESSED,
        "ungoverned actions": g.ungoverned_actions if g and g.witnessed else NOT_WITNESSED,
        "actions": k.actions if k else None,
        "blocked": k.blocked if k else None,
        "would have blocked": g.would_have_blocked if g else None,
        "escaped (watched arm)": k.escaped if k else None,
        "escaped (baseline)": k.baseline_escaped if k else None,
        "reward (watched arm)": k.performance if k else None,
        "reward (baseline)": k.baseline_performance if k else None,
        "gap": k.gap.absolute if k and k.gap else None,
        "gap relative": k.gap.relative if k and k.gap else None,
        "rounds": g.rounds if g else None,
        "latency p50 µs": g.latency_p50_us if g else None,
        "latency p99 µs": g.latency_p99_us if g else None,
        "evasions": g.evasions if g else None,
        "strategy": g.strategy if g else None,
    }


def _cell(metric: str, value: float | int | str | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, str):
        return value
    if metric in ("coverage", "witnessed coverage", "gap relative"):
        return f"{value * 100:.1f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.0f}" if "µs" in metric else f"{value:.4f}"


def fetch_comparison(con: Con, a: str, b: str) -> Comparison:
    ra, rb = fetch_report(con, a), fetch_report(con, b)
    ma, mb = _metric_rows(ra), _metric_rows(rb)
    rows = []
    for metric in ma:
        va, vb = ma[metric], mb[metric]
        diff: float | int | None = None
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            diff = vb - va
        rows.append((metric, _cell(metric, va), _cell(metric, vb),
                     "–" if diff is None else ("+" if diff >= 0 else "") + _cell(metric, diff)))
    table = pl.DataFrame(rows, schema=["metric", f"A: {a}", f"B: {b}", "B - A"], orient="row")
    return Comparison(a, b, table)


# --- agents ---------------------------------------------------------------------------------------

AGENT_SORTS: Final = ("agent_id", "actions", "coverage", "blocked", "escaped", "evasions",
                      "reward_mean")


@dataclass(frozen=True)
class AgentsQuery:
    run_id: str
    text_filter: str = ""
    sort: str = "agent_id"
    descending: bool = False
    page: int = 0
    page_size: int = 50


@dataclass(frozen=True)
class AgentsData:
    query: AgentsQuery
    total: int              # agents of the run (all arms)
    matched: int            # after the filter
    rows: pl.DataFrame      # the page shown
    # Witnessed actions of the run (the rollup): 0 = not witnessed, no witness columns and
    # no background match; else the per-agent witness comes from `fetch_agent_witness`.
    witnessed: int = 0


def fetch_agents(con: Con, q: AgentsQuery) -> AgentsData:
    df = Q.per_agent(con, q.run_id).filter(pl.col("actions") > 0)
    total = df.height
    witnessed = WQ.witnessed_total(con, q.run_id)
    if q.text_filter:
        df = _agent_filter(df, q.text_filter)
    df = df.sort([q.sort, "arm", "agent_id"] if q.sort != "agent_id" else ["agent_id", "arm"],
                 descending=[q.descending, False, False] if q.sort != "agent_id"
                 else [q.descending, False], nulls_last=True)
    start = q.page * q.page_size
    return AgentsData(q, total, df.height, df.slice(start, q.page_size), witnessed)


AGENT_WITNESS_SCHEMA: Final = pl.Schema({
    "arm": pl.String(), "agent_id": pl.String(), "witnessed": pl.Int64(),
    "governed": pl.Int64(), "matched": pl.Int64(), "ungoverned_actions": pl.Int64(),
    "unwitnessed_decisions": pl.Int64(), "witnessed_coverage": pl.Float64()})


@dataclass(frozen=True)
class AgentWitness:
    """The Agents view's background part: the gateway's witness of each (arm, agent) of a run
    (analysis/metrics.WitnessFigures, as the report's per arm), AGENT_WITNESS_SCHEMA."""

    run_id: str
    table: pl.DataFrame

    def without_decisions(self) -> pl.DataFrame:
        """Agents the gateway saw proposing actions that made no decision at all (an agent
        without the SDK): they have no row of their own in the Agents table."""
        return self.table.filter((pl.col("matched") == 0)
                                 & (pl.col("unwitnessed_decisions") == 0))


def fetch_agent_witness(con: Con, run_id: str) -> AgentWitness:
    """The match of witnessed calls with decisions reads raw rows: the background lane's."""
    counts = WQ.witness_counts(con, run_id)
    rows = []
    for (arm,), part in counts.partition_by("arm", as_dict=True, maintain_order=True).items():
        for agent, f in M.witness_figures(part.iter_rows(named=True), key="agent_id").items():
            rows.append((str(arm), agent, f.witnessed, f.governed, f.matched, f.ungoverned,
                         f.unwitnessed, f.witnessed_coverage))
    return AgentWitness(run_id, pl.DataFrame(rows, schema=AGENT_WITNESS_SCHEMA, orient="row"))


def with_witness(rows: pl.DataFrame, witness: AgentWitness | None) -> pl.DataFrame:
    """The Agents page with each agent's witness columns (null: none witnessed or not yet
    fetched)."""
    table = witness.table if witness else pl.DataFrame(schema=AGENT_WITNESS_SCHEMA)
    return rows.join(table, on=["arm", "agent_id"], how="left", maintain_order="left")


AGENT_NUMERIC: Final = ("actions", "covered", "attempted", "blocked", "escaped", "evasions",
                        "reward_n", "coverage", "reward_mean", "latency_us_mean")
AGENT_TEXT: Final = ("arm", "agent_id")


def parse_agent_filter(text: str) -> list[tuple[str, str, str | float]]:
    """`agent-3`, `arm=governed`, `escaped>0`: words combine with AND. Raises ValueError."""
    terms: list[tuple[str, str, str | float]] = []
    for word in text.split():
        op = next((o for o in (">=", "<=", ">", "<", "=") if o in word), None)
        if op is None:
            terms.append(("agent_id", "~", word))
            continue
        col, value = word.split(op, 1)
        if col in AGENT_NUMERIC:
            try:
                terms.append((col, op, float(value)))
            except ValueError:
                raise ValueError(f"{col} takes a number, got {value!r}") from None
        elif col in AGENT_TEXT and op == "=":
            terms.append((col, op, value))
        else:
            raise ValueError(f"cannot filter on {word!r}: use agent text, arm=…, agent_id=… "
                             f"or one of {', '.join(AGENT_NUMERIC)} with > < = >= <=")
    return terms


def _agent_filter(df: pl.DataFrame, text: str) -> pl.DataFrame:
    for col, op, value in parse_agent_filter(text):
        c = pl.col(col)
        if op == "~":
            df = df.filter(c.str.contains(str(value), literal=True))
        else:
            df = df.filter({">=": c >= value, "<=": c <= value, ">": c > value,
                            "<": c < value, "=": c == value}[op])
    return df


# --- overhead -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OverheadData:
    run_id: str
    rounds: pl.DataFrame    # per arm and round: latency_us_mean (from the rollups)


def fetch_overhead(con: Con, run_id: str) -> OverheadData:
    rounds = Q.per_round(con, run_id).select("arm", "round", "actions", "latency_us_mean")
    return OverheadData(run_id, rounds)


@dataclass(frozen=True)
class OverheadDetail:
    run_id: str
    by_service: pl.DataFrame    # service, round, checks, p50_us, p99_us
    by_agents: pl.DataFrame     # run_id, arm, agents, p50_us, p99_us, mean_us, share


def fetch_overhead_detail(con: Con, run_id: str, max_runs: int = 12) -> OverheadDetail:
    """Percentiles from the latency histograms, for this run and the latest others: the
    background part of the view."""
    by_service = Q.latency_by_service(con, run_id)
    rows: list[dict[str, Any]] = []
    for rid in Q.runs(con)["run_id"].head(max_runs).to_list():
        agents = (Q.per_agent(con, rid).filter(pl.col("actions") > 0)
                  .group_by("arm").agg(pl.col("agent_id").n_unique().alias("agents")))
        lat = Q.latency(con, rid).join(agents, on="arm", how="left")
        for r in lat.iter_rows(named=True):
            rows.append({"run_id": rid, "arm": r["arm"], "agents": r["agents"] or 0,
                         "p50_us": r["p50_us"], "p99_us": r["p99_us"], "mean_us": r["mean_us"],
                         "share": r["share_of_rollout_time"]})
    by_agents = pl.DataFrame(rows, schema={"run_id": pl.String, "arm": pl.String,
                                           "agents": pl.Int64, "p50_us": pl.Float64,
                                           "p99_us": pl.Float64, "mean_us": pl.Float64,
                                           "share": pl.Float64})
    return OverheadDetail(run_id, by_service, by_agents.sort("agents", "run_id", "arm"))


# --- events ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EventsQuery:
    run_id: str
    arm: str | None = None
    verdict: str | None = None
    rule_id: str | None = None
    before: datetime | None = None   # keyset anchor: None follows the newest decisions
    offset: int = 0                  # rows at `before` already shown on earlier pages
    limit: int = 50

    @property
    def filter_text(self) -> str:
        parts = [f"arm={self.arm}" if self.arm else "",
                 f"verdict={self.verdict}" if self.verdict else "",
                 f"rule={self.rule_id}" if self.rule_id else ""]
        return " ".join(p for p in parts if p)


def parse_event_filter(text: str) -> dict[str, str | None]:
    """`verdict=block arm=governed rule=STR-001` -> keyword arguments of decisions_page."""
    out: dict[str, str | None] = {"arm": None, "verdict": None, "rule_id": None}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep or key not in EVENT_FILTER_KEYS or not value:
            raise ValueError(f"filter words are key=value with key one of arm, verdict, rule "
                             f"(got {word!r})")
        out[EVENT_FILTER_KEYS[key]] = value
    return out


@dataclass(frozen=True)
class EventsData:
    query: EventsQuery
    rows: pl.DataFrame


def fetch_events(con: Con, q: EventsQuery) -> EventsData:
    rows = Q.decisions_page(con, q.run_id, limit=q.limit, offset=q.offset, before=q.before,
                            arm=q.arm, verdict=q.verdict, rule_id=q.rule_id)
    return EventsData(q, rows)


def next_anchor(q: EventsQuery, rows: pl.DataFrame) -> tuple[datetime, int] | None:
    """Keyset for the page after `rows`: its last time, skipping the rows at that time already
    shown (ties at a page boundary are neither lost nor repeated)."""
    if rows.height < q.limit:
        return None
    last = rows["ts"][-1]
    same = int((rows["ts"] == last).sum())
    return last, same + (q.offset if q.before == last else 0)


@dataclass(frozen=True)
class DecisionDetail:
    decision: dict[str, Any]
    checks: pl.DataFrame = field(default_factory=pl.DataFrame)


def fetch_decision(con: Con, run_id: str, decision: dict[str, Any]) -> DecisionDetail:
    return DecisionDetail(decision, Q.decision_checks(con, run_id, decision["decision_id"],
                                                      decision.get("ts")))
