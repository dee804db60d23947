"""Prometheus exposition (`--metrics [HOST:]PORT`): the stored figures of this session's runs on
http://HOST:PORT/metrics, for a Prometheus server to scrape.

The bridge thread (monitor/bridges.PollingBridge) builds a snapshot from the store after each
commit it sees, from the one definition of each figure: counts from storage/queries.py turned
into figures by analysis/metrics.py, the gap from monitor/report.performance_gap (the report's),
witnessed coverage from monitor/report.witness_by_arm, the drift detectors' statistics from
analysis/alerts/detectors.read_detector over the series the alert engine judges
(monitor/store_evaluator.py). A scrape only reads the last snapshot: it never queries DuckDB.

Metrics (label `rule` is the raw rule_id; `run_id` as in the alert rules, so the generated
Prometheus rules keep their labels, annotations and inhibition):

- counters, per run_id and arm, the stored totals (monotonic: nothing stored is ever lost):
  tractatus_actions_total, _covered_actions_total, _enforce_mode_actions_total,
  _penalize_mode_actions_total, _attempted_violations_total, _blocked_actions_total,
  _would_have_blocked_actions_total, _escaped_violations_total, _evasions_total,
  _penalized_actions_total; tractatus_checks_total (+ service, rule, verdict),
  tractatus_rule_blocks_total, _rule_would_have_blocked_total and _rule_evaluations_total
  (+ service, rule; evaluations only where the rules evaluated are known);
- gauges: tractatus_coverage_ratio and tractatus_witnessed_coverage_ratio (run_id, arm),
  tractatus_performance_gap (run_id; governed - ungoverned mean reward over the final rounds,
  reward units), tractatus_last_data_timestamp_seconds and tractatus_run_end_timestamp_seconds
  (run_id), tractatus_source_up, tractatus_source_lag_seconds (source);
  tractatus_detector_statistic, _threshold, _alarm, _value (run_id, arm, alert) and
  tractatus_detector_detail (+ detail: the numbers an alert's annotation shows);
- histogram tractatus_check_latency_seconds (run_id, arm, service), built exactly from the
  check-latency rollup: its `le` bounds are bucket edges (storage/latency_buckets.octave_edges).

Cardinality: only this session's runs, no agent, decision or rollout label. Per run with A arms,
S services, R rules and D detector rules at most
  A * (10 + 2 + S*R*(4 + 3) + S*(len(EDGES) + 3) + D*(4 + 6)) + 3
series, plus 2 per source: for the demo (A=3, S=4, R=10, D=5) about 1,400 per run.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.registry import Collector

from ..analysis import metrics as M
from ..analysis.alerts.alert_rules import AlertRuleSet, NoData, load_default_alert_rules
from ..analysis.alerts.detectors import read_detector
from ..storage import queries as Q
from ..storage.latency_buckets import cumulative_counts, octave_edges
from .bridges import PollingBridge
from .report import performance_gap, witness_by_arm
from .store_evaluator import StoreEvaluator

log = logging.getLogger("tractatus_watch.bridges")

EDGES_US = octave_edges()
VERDICTS = ("allow", "warn", "escalate", "block")

# (metric name, help, ArmFigures attribute): the per-arm counters.
ARM_COUNTERS = (
    ("tractatus_actions_total", "Actions proposed (decisions stored).", "actions"),
    ("tractatus_covered_actions_total", "Actions checked in a governing mode (enforce or "
     "penalize).", "covered"),
    ("tractatus_enforce_mode_actions_total", "Actions decided in enforce mode.", "enforce_mode"),
    ("tractatus_penalize_mode_actions_total", "Actions decided in penalize mode.",
     "penalize_mode"),
    ("tractatus_attempted_violations_total", "Actions with at least one block verdict.",
     "attempted"),
    ("tractatus_blocked_actions_total", "Attempted violations stopped (not executed).",
     "blocked"),
    ("tractatus_would_have_blocked_actions_total", "Attempted violations in decisions that "
     "governed nothing (shadow, off): never blocked.", "would_have_blocked"),
    ("tractatus_escaped_violations_total", "Attempted violations executed.", "escaped"),
    ("tractatus_evasions_total", "Actions that passed the enforced checks but a shadow check "
     "flagged block.", "evasions"),
    ("tractatus_penalized_actions_total", "Violations in penalize mode that cost the penalty.",
     "penalized"),
)


@dataclass
class Snapshot:
    """What a scrape shows: metric families by name, built by the bridge thread."""

    families: list[Metric] = field(default_factory=list)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _epoch(ts: Any) -> float | None:
    # Stored timestamps are naive UTC (DuckDB TIMESTAMP).
    if ts is None:
        return None
    from datetime import timezone
    return float(ts.replace(tzinfo=timezone.utc).timestamp())


def store_families(con: Any, runs: list[str], rules: AlertRuleSet) -> list[Metric]:
    """The families of the stored figures of `runs` (everything but source health)."""
    arm_lab = ["run_id", "arm"]
    rule_lab = ["run_id", "arm", "service", "rule"]
    counters = {name: CounterMetricFamily(name, doc, labels=arm_lab)
                for name, doc, _ in ARM_COUNTERS}
    checks = CounterMetricFamily("tractatus_checks_total", "Checks by verdict.",
                                 labels=rule_lab + ["verdict"])
    rule_blocks = CounterMetricFamily("tractatus_rule_blocks_total",
                                      "Enforced block verdicts naming the rule.", labels=rule_lab)
    rule_would = CounterMetricFamily("tractatus_rule_would_have_blocked_total",
                                     "Block verdicts naming the rule in checks not enforced "
                                     "(shadow).", labels=rule_lab)
    rule_evals = CounterMetricFamily("tractatus_rule_evaluations_total",
                                     "Checks whose rule set held the rule (only where known).",
                                     labels=rule_lab)
    coverage = GaugeMetricFamily("tractatus_coverage_ratio", "Covered / actions (SDK).",
                                 labels=arm_lab)
    witnessed = GaugeMetricFamily("tractatus_witnessed_coverage_ratio",
                                  "Witnessed tool calls governed / witnessed tool calls.",
                                  labels=arm_lab)
    gap = GaugeMetricFamily("tractatus_performance_gap", "Governed - ungoverned mean reward "
                            "per rollout over the final rounds (reward units).",
                            labels=["run_id"])
    last = GaugeMetricFamily("tractatus_last_data_timestamp_seconds",
                             "Time of the run's newest stored data.", labels=["run_id"])
    ended = GaugeMetricFamily("tractatus_run_end_timestamp_seconds",
                              "When the run ended (absent while it runs).", labels=["run_id"])
    latency = HistogramMetricFamily("tractatus_check_latency_seconds",
                                    "Governance check latency.",
                                    labels=["run_id", "arm", "service"])
    det_lab = ["run_id", "arm", "alert"]
    statistic = GaugeMetricFamily("tractatus_detector_statistic", "The detector's figure at "
                                  "the latest round (CUSUM statistic, share, slope).",
                                  labels=det_lab)
    threshold = GaugeMetricFamily("tractatus_detector_threshold",
                                  "The limit the statistic is judged against.", labels=det_lab)
    alarm = GaugeMetricFamily("tractatus_detector_alarm", "1 while the detector is in alarm.",
                              labels=det_lab)
    value = GaugeMetricFamily("tractatus_detector_value", "The alert's value while in alarm.",
                              labels=det_lab)
    detail = GaugeMetricFamily("tractatus_detector_detail",
                               "The numbers the alert's annotations show, while in alarm.",
                               labels=det_lab + ["detail"])
    ended_at = Q.ended_runs(con)
    for run in runs:
        totals = Q.totals(con, run)
        for row in totals.iter_rows(named=True):
            f = M.arm_figures(row)
            for name, _, attr in ARM_COUNTERS:
                counters[name].add_metric([run, f.arm], float(getattr(f, attr)))
            if f.coverage is not None:
                coverage.add_metric([run, f.arm], f.coverage)
        for row in Q.rule_counts(con, run).iter_rows(named=True):
            r = M.rule_figures(row)
            labels = [run, r.arm, r.service, r.rule_id]
            rule_blocks.add_metric(labels, float(r.blocks))
            rule_would.add_metric(labels, float(r.would_have_blocked))
            if r.evaluations is not None:
                rule_evals.add_metric(labels, float(r.evaluations))
        for arm in totals["arm"].to_list():
            for row in Q.per_rule(con, run, arm=arm).iter_rows(named=True):
                allow = row["checks"] - row["warns"] - row["escalates"] - row["blocks"]
                counts = {"allow": allow, "warn": row["warns"], "escalate": row["escalates"],
                          "block": row["blocks"]}
                for verdict in VERDICTS:
                    checks.add_metric([run, arm, row["service"], row["rule_id"], verdict],
                                      float(counts[verdict]))
        for w in witness_by_arm(con, run):
            share = _finite(w["witnessed_coverage"])
            if share is not None:
                witnessed.add_metric([run, w["arm"]], share)
        report_gap = performance_gap(con, run)
        if report_gap is not None and _finite(report_gap.absolute) is not None:
            gap.add_metric([run], report_gap.absolute)
        newest = _epoch(Q.freshness(con, run)[1])
        if newest is not None:
            last.add_metric([run], newest)
        if run in ended_at:
            end = _epoch(ended_at[run])
            if end is not None:
                ended.add_metric([run], end)
        _latency(con, run, latency)
    evaluator = StoreEvaluator(con, runs)
    now = time.time()
    for rule in rules.rules:
        if rule.detector is None:
            continue
        for run, arm, series in evaluator.detector_series(rule.detector):
            try:
                reading = read_detector(rule.detector, rule.params, series, now=now)
            except NoData:
                continue
            labels = [run, arm, rule.name]
            if (s := _finite(reading.statistic)) is not None:
                statistic.add_metric(labels, s)
            if (t := _finite(reading.threshold)) is not None:
                threshold.add_metric(labels, t)
            alarm.add_metric(labels, 1.0 if reading.samples else 0.0)
            for sample in reading.samples:
                if (v := _finite(sample.value)) is not None:
                    value.add_metric(labels, v)
                for key, text in sample.info.items():
                    try:
                        number = _finite(float(text))
                    except ValueError:
                        number = None
                    if number is not None:
                        detail.add_metric(labels + [key], number)
    return [*counters.values(), checks, rule_blocks, rule_would, rule_evals, coverage,
            witnessed, gap, last, ended, latency, statistic, threshold, alarm, value, detail]


def _latency(con: Any, run: str, family: HistogramMetricFamily) -> None:
    hist = Q.check_latency_histogram(con, run)
    for (arm, service), part in hist.group_by("arm", "service", maintain_order=True):
        counts = cumulative_counts(part["bucket_us"].to_numpy(), part["checks"].to_numpy(),
                                   EDGES_US)
        total = int(part["checks"].sum())
        buckets = [(f"{edge / 1e6:.6f}".rstrip("0"), float(n))
                   for edge, n in zip(EDGES_US, counts)] + [("+Inf", float(total))]
        sum_us = part["latency_us_sum"][0]
        family.add_metric([run, str(arm), str(service)], buckets,
                          sum_value=float(sum_us or 0) / 1e6)


def health_families(health: list[Any]) -> list[Metric]:
    up = GaugeMetricFamily("tractatus_source_up", "1 while the source is connected.",
                           labels=["source"])
    lag = GaugeMetricFamily("tractatus_source_lag_seconds",
                            "Now - time of the newest record the source ingested.",
                            labels=["source"])
    for h in health:
        up.add_metric([h.name], 1.0 if h.state == "connected" else 0.0)
        if (v := _finite(h.lag_s)) is not None:
            lag.add_metric([h.name], v)
    return [up, lag]


class _SnapshotCollector(Collector):
    def __init__(self, bridge: PrometheusBridge) -> None:
        self.bridge = bridge

    def collect(self) -> Iterator[Metric]:
        with self.bridge.snapshot_lock:
            families = list(self.bridge.store_snapshot.families)
        families += health_families(self.bridge.health())
        yield from families


class PrometheusBridge(PollingBridge):
    """Serve /metrics on host:port, from the moment it is built (so a port in use fails before
    anything is collected: OSError, which the CLI turns into its one-line error)."""

    name = "prometheus"

    def __init__(self, host: str, port: int, *, interval_s: float = 1.0,
                 rules: AlertRuleSet | None = None) -> None:
        super().__init__(interval_s)
        self.rules = rules if rules is not None else load_default_alert_rules()
        self.snapshot_lock = threading.Lock()
        self.store_snapshot = Snapshot()
        self._version: int | None = None
        self._runs: frozenset[str] = frozenset()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(self))
        self._server, self._server_thread = start_http_server(port, host, self.registry)
        self.host, self.port = host, int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def health(self) -> list[Any]:
        return list(self.ctx.health()) if self.ctx is not None else []

    def poll(self, con: Any) -> None:
        assert self.ctx is not None
        runs = self.ctx.runs()
        # A file's version counts rollup rows, a lake's is its snapshot id: nothing new, no
        # new figures (the clock-driven ones, detector ages, move with the next commit).
        version = Q.freshness(con, None, lake=self.ctx.store.is_lake)[0]
        if version == self._version and runs == self._runs:
            return
        families = store_families(con, sorted(runs), self.rules)
        with self.snapshot_lock:
            self.store_snapshot = Snapshot(families)
        self._version, self._runs = version, runs

    def finish(self) -> None:
        self._server.shutdown()
        self._server.server_close()


__all__ = ["PrometheusBridge", "health_families", "store_families"]
