"""The Evaluator the engine runs against stored data: SQL for `expr` rules, the per-round rollup
series of each run and arm for `detector` rules."""

from __future__ import annotations

import time
from typing import Iterator, Sequence

import duckdb
import numpy as np
import polars as pl

from ..storage import queries as Q
from ..storage import witness_queries as WQ
from ..analysis.alerts.detectors import evaluate_detector
from ..analysis.alerts.engine import AlertEngine, Transition, evaluate_rules
from ..analysis.alerts.alert_rules import NoData, AlertRule, Sample

SERIES_COLUMNS = ("round", "actions", "covered", "enforce_mode", "penalize_mode", "attempted",
                  "blocked", "escaped", "evasions", "executed", "latency_us_sum", "reward_n",
                  "reward_sum", "reward_sq_sum")
GAP_DETECTORS = frozenset({"gap_widening", "gap_closed"})
WITNESS_DETECTORS = frozenset({"witnessed_coverage_drop"})
# The witness detector judges the latest round with witnessed actions; the match is made for
# the last rounds only, so an evaluation costs what those rounds hold, not the whole run.
WITNESS_ROUNDS = 2
BASELINE_ARM = "ungoverned"


def _series(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    out = {c: frame[c].fill_null(0).to_numpy().astype(float) for c in SERIES_COLUMNS}
    # Epoch microseconds as one column operation (what datetime.timestamp() gives, exactly).
    epoch_us = frame["ts_max"].dt.replace_time_zone("UTC").dt.epoch("us")
    out["ts_max"] = epoch_us.cast(pl.Float64).fill_null(np.nan).to_numpy() / 1e6
    return out


def define_clock(con: duckdb.DuckDBPyConnection, now: float | None = None) -> None:
    """Rules read the evaluation's clock as `tw_now()` (now() is the wall clock), so `check
    --at` and tests judge stored data as of another time. A temporary macro: per connection,
    nothing stored."""
    clock = "now()" if now is None else f"to_timestamp({float(now)!r})"
    con.execute(f"CREATE OR REPLACE TEMP MACRO tw_now() AS {clock}")


class StoreEvaluator:
    """Evaluates rules over one database cursor; `runs` limits the runs judged (default all)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, runs: Sequence[str] | None = None,
                 now: float | None = None) -> None:
        self.con = con
        self.runs = list(runs) if runs is not None else None
        self.now = now
        define_clock(con, now)
        self._per_round: dict[str, pl.DataFrame] = {}  # one read per run per evaluation
        # Each (run, arm)'s series, and its baseline's aligned with it: built once per
        # evaluation, not once per rule; each rule gets a copy it may extend.
        self._arm_series: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self._base_series: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self._witness: dict[str, pl.DataFrame] = {}

    def _witness_rounds(self, run_id: str) -> pl.DataFrame:
        """Per (arm, round) of the run's last rounds: witnessed and governed tool calls."""
        if run_id not in self._witness:
            last = self.con.execute("SELECT max(round) FROM rollup_witness WHERE run_id = ?",
                                    [run_id]).fetchall()[0][0]
            span = (int(last) - WITNESS_ROUNDS + 1, int(last)) if last is not None else None
            counts = WQ.witness_counts(self.con, run_id, rounds=span)
            self._witness[run_id] = counts.group_by("arm", "round").agg(
                pl.col("witnessed").sum(), pl.col("governed").sum().alias("witness_governed"))
        return self._witness[run_id]

    def _runs(self) -> list[str]:
        if self.runs is not None:
            return self.runs
        return Q.runs(self.con)["run_id"].to_list()

    def evaluate(self, rule: AlertRule) -> list[Sample]:
        if rule.expr is not None:
            return self._expr(rule.expr)
        return self._detector(rule)

    def _expr(self, sql: str) -> list[Sample]:
        cur = self.con.execute(sql)
        names = [d[0] for d in cur.description]
        samples = []
        for row in cur.fetchall():
            rec = dict(zip(names, row))
            rnd = rec.pop("round", None)
            value = rec.pop("value", None)
            labels = {k: str(v) for k, v in rec.items() if v is not None}
            if self.runs is not None and labels.get("run_id") not in self.runs:
                continue
            samples.append(Sample(labels, None if value is None else float(value),
                                  None if rnd is None else int(rnd)))
        return samples

    def detector_series(self, name: str) -> Iterator[tuple[str, str, dict[str, np.ndarray]]]:
        """(run, arm, series) for every (run, arm) detector `name` judges: what the engine
        judges here and what the Prometheus bridge exports (monitor/prometheus_bridge.py)."""
        for run_id in self._runs():
            frame = self._per_round.get(run_id)
            if frame is None:
                frame = self._per_round[run_id] = Q.per_round(self.con, run_id)
            for arm in frame["arm"].unique().sort().to_list():
                per_arm = frame.filter(pl.col("arm") == arm)
                if (run_id, arm) not in self._arm_series:
                    self._arm_series[(run_id, arm)] = _series(per_arm)
                series = dict(self._arm_series[(run_id, arm)])
                if name in WITNESS_DETECTORS:
                    seen = per_arm.select("round").join(
                        self._witness_rounds(run_id).filter(pl.col("arm") == arm),
                        on="round", how="left")
                    for c in ("witnessed", "witness_governed"):
                        series[c] = seen[c].fill_null(0).to_numpy().astype(float)
                if name in GAP_DETECTORS:
                    if arm == BASELINE_ARM:
                        continue
                    base = frame.filter(pl.col("arm") == BASELINE_ARM)
                    if base.is_empty():
                        continue  # no baseline: nothing to compare, not "no data"
                    if (run_id, arm) not in self._base_series:
                        aligned = per_arm.select("round").join(base, on="round", how="left")
                        self._base_series[(run_id, arm)] = {
                            "base_" + c: np.nan_to_num(values)
                            for c, values in _series(aligned).items() if c != "round"}
                    series.update(self._base_series[(run_id, arm)])
                yield run_id, arm, series

    def _detector(self, rule: AlertRule) -> list[Sample]:
        name = rule.detector or ""
        samples: list[Sample] = []
        judged = False
        for run_id, arm, series in self.detector_series(name):
            try:
                samples += evaluate_detector(name, rule.params, series,
                                             labels={"run_id": run_id, "arm": arm},
                                             now=self.now or time.time())
                judged = True
            except NoData:
                continue
        if not judged and not samples:
            raise NoData(f"no run with data for {name}")
        return samples


def latest_rounds(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    rows = con.execute("SELECT run_id, max(round) FROM rollup_round GROUP BY run_id").fetchall()
    return {r[0]: int(r[1]) for r in rows}


def evaluate_once(engine: AlertEngine, con: duckdb.DuckDBPyConnection, *,
                  runs: Sequence[str] | None = None, now: float | None = None
                  ) -> list[Transition]:
    """One evaluation of every rule against the stored data; returns the transitions."""
    now = now or time.time()
    evaluator = StoreEvaluator(con, runs, now)
    return engine.evaluate(now, latest_rounds(con), evaluate_rules(engine.rules, evaluator))
