"""`detector` rules: run a drift detector over the per-round series of one (run, arm).

`series` maps the summed rollup_agent columns to one value per round, sorted by round:
round, actions, covered, enforce_mode, penalize_mode (optional), attempted, blocked, escaped,
evasions, executed, latency_us_sum, reward_n, reward_sum, reward_sq_sum; gap detectors also need
the baseline arm's columns prefixed `base_` and aligned with `round` (0 where the baseline has no
data); `no_data` needs `ts_max` (epoch seconds of the last record per round);
`witnessed_coverage_drop` needs `witnessed` and `witness_governed` (the gateway's witness,
storage/witness_queries.py). A detector returns one sample when it is in alarm at the latest
round, none otherwise, and raises NoData when there is nothing to judge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..drift import (DEFAULT_ARL0_ROUNDS, DEFAULT_RATIO, DEFAULT_WARMUP_ROUNDS, BinomialCusum,
                     GapTrend, TrendDetector)
from .alert_rules import DETECTOR_PARAMS, NoData, Sample, parse_duration

Series = Mapping[str, np.ndarray | Sequence[float] | Sequence[int]]


def _fmt(v: float | int | None) -> str:
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _col(series: Series, key: str, length: int) -> np.ndarray:
    if key not in series:
        raise NoData(f"series has no column {key!r}")
    arr = np.asarray(series[key], dtype=float)
    if arr.shape != (length,):
        raise ValueError(f"series column {key!r} has {arr.size} values, round has {length}")
    return arr


def _governed(series: Series, length: int) -> bool:
    """Whether the arm's checks governed any action: enforce mode, or penalize mode (the
    penalized arm's checks are meant to cover every action, as the governed arm's)."""
    return any(key in series and float(_col(series, key, length).sum()) > 0
               for key in ("enforce_mode", "penalize_mode"))


@dataclass(frozen=True)
class Reading:
    """A detector's verdict at the latest round (`samples`, empty when not in alarm) and the
    figure it judged with its limit where it has one: the CUSUM statistic and threshold, the
    share and its threshold, a trend's slope (its alarm also needs significance, so no one
    limit). What the Prometheus bridge exports, from the same code as the alert engine."""

    samples: list[Sample] = field(default_factory=list)
    statistic: float | None = None
    threshold: float | None = None


def _cusum(params: Mapping[str, Any], series: Series, rounds: np.ndarray, x_key: str,
           n_key: str, labels: dict[str, str]) -> Reading:
    n_len = rounds.size
    x = _col(series, str(params.get("x", x_key)), n_len)
    n = _col(series, str(params.get("n", n_key)), n_len)
    warmup = int(params.get("warmup", DEFAULT_WARMUP_ROUNDS))
    with_data = n > 0
    if not with_data.any():
        raise NoData("no round with checks")
    p0 = params.get("p0")
    # With p0 given the threshold is calibrated for the typical round size of the early rounds,
    # which stays fixed as the series grows (so the verdict on old rounds never changes).
    early = n[with_data][:max(1, warmup)]
    n_typical = int(round(float(np.median(early)))) if p0 is not None else None
    det = BinomialCusum(p0=None if p0 is None else float(p0),
                        p1=None if params.get("p1") is None else float(params["p1"]),
                        ratio=float(params.get("ratio", DEFAULT_RATIO)),
                        arl0=float(params.get("arl0", DEFAULT_ARL0_ROUNDS)),
                        n_typical=n_typical, warmup=warmup, reset=False, cap_factor=2.0)
    state = None
    for r, xi, ni in zip(rounds, x, n):
        ni_int = int(ni)
        state = det.update(min(int(xi), ni_int), ni_int, int(r))
    if state is None:
        return Reading()
    if not state.alarm:
        return Reading([], state.statistic, state.threshold)
    since = state.change_round if state.change_round is not None else state.round
    mask = (rounds >= since) & with_data
    rate = float(x[mask].sum() / n[mask].sum()) if mask.any() else math.nan
    return Reading([Sample(labels, rate, state.round, {
        "p0": _fmt(state.p0), "rate": _fmt(rate), "change_round": _fmt(since),
        "statistic": _fmt(state.statistic), "threshold": _fmt(state.threshold)})],
        state.statistic, state.threshold)


def _below(params: Mapping[str, Any], rounds: np.ndarray, part: np.ndarray, whole: np.ndarray,
           labels: dict[str, str], names: tuple[str, str]) -> Reading:
    """A sample when part / whole of the latest round with any `whole` is below `threshold`;
    its info names both counts and their difference (`missing`)."""
    idx = np.flatnonzero(whole > 0)
    if idx.size == 0:
        raise NoData(f"no round with {names[1]}")
    last = int(idx[-1])
    share = float(part[last] / whole[last])
    threshold = float(params.get("threshold", 1.0))
    if share >= threshold - 1e-12:
        return Reading([], share, threshold)
    return Reading([Sample(labels, share, int(rounds[last]), {
        names[0]: _fmt(int(part[last])), names[1]: _fmt(int(whole[last])),
        "missing": _fmt(int(whole[last] - part[last]))})], share, threshold)


def _gap_series(series: Series, rounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    length = rounds.size
    n_g = _col(series, "reward_n", length)
    n_u = _col(series, "base_reward_n", length)
    both = (n_g > 0) & (n_u > 0)
    if not both.any():
        raise NoData("no round with rewards in both arms")
    gap = (_col(series, "reward_sum", length)[both] / n_g[both]
           - _col(series, "base_reward_sum", length)[both] / n_u[both])
    return rounds[both], gap


def _trend(direction: int, params: Mapping[str, Any], t: np.ndarray, y: np.ndarray,
           min_growth: float = 0.0) -> Any:
    window = int(params.get("window", 30))
    det = TrendDetector(1 if direction > 0 else -1, window=window,
                        alpha=float(params.get("alpha", 0.01)),
                        min_points=int(params.get("min_points", 8)), min_growth=min_growth)
    # The latest state depends only on the last `window` finite points (the detector keeps no
    # more): replaying from there gives the same state as replaying the whole series, at a
    # cost that does not grow with the run (a 1000-round run is evaluated 100 times).
    finite = np.flatnonzero(np.isfinite(np.asarray(y, dtype=float)))
    start = int(finite[-window]) if window > 0 and finite.size >= window else 0
    state = None
    for r, v in zip(t[start:], y[start:]):
        state = det.update(float(v), int(r))
    return state


def evaluate_detector(name: str, params: Mapping[str, Any], series: Series, *,
                      labels: Mapping[str, str] | None = None,
                      now: float | None = None) -> list[Sample]:
    """Run detector `name` over one (run, arm)'s per-round series; samples when in alarm.

    Pure: the result depends only on the arguments. `labels` (e.g. run_id, arm) are copied onto
    the samples; `now` (epoch seconds) is needed by `no_data` only.
    """
    return read_detector(name, params, series, labels=labels, now=now).samples


def read_detector(name: str, params: Mapping[str, Any], series: Series, *,
                  labels: Mapping[str, str] | None = None,
                  now: float | None = None) -> Reading:
    """`evaluate_detector` with the figure judged and its limit (`Reading`)."""
    if name not in DETECTOR_PARAMS:
        raise ValueError(f"unknown detector {name!r}")
    unknown = set(params) - set(DETECTOR_PARAMS[name])
    if unknown:
        raise ValueError(f"unknown parameters for {name}: {', '.join(sorted(unknown))}")
    lab = dict(labels or {})
    if "round" not in series:
        raise NoData("series has no round column")
    rounds = np.asarray(series["round"], dtype=np.int64)
    if rounds.size == 0:
        raise NoData("empty series")
    length = rounds.size
    governed_only_default = name in ("evasion_drift", "coverage_drop", "witnessed_coverage_drop")
    if params.get("governed_only", governed_only_default) and not _governed(series, length):
        return Reading()

    if name == "adherence_drift":
        return _cusum(params, series, rounds, "attempted", "covered", lab)
    if name == "evasion_drift":
        return _cusum(params, series, rounds, "evasions", "covered", lab)
    if name == "coverage_drop":
        return _below(params, rounds, _col(series, "covered", length),
                      _col(series, "actions", length), lab, ("covered", "actions"))
    if name == "witnessed_coverage_drop":
        return _below(params, rounds, _col(series, "witness_governed", length),
                      _col(series, "witnessed", length), lab, ("governed", "witnessed"))
    if name in ("gap_widening", "gap_closed"):
        t, gap = _gap_series(series, rounds)
        if name == "gap_widening":
            st = _trend(-1, params, t, gap)
            if st is None or not st.alarm:
                return Reading([], None if st is None else st.slope)
            return Reading([Sample(lab, st.slope, int(t[-1]), {
                "gap": _fmt(float(gap[-1])), "p": _fmt(st.mk_p), "slope_lo": _fmt(st.slope_lo),
                "slope_hi": _fmt(st.slope_hi)})], st.slope)
        side = str(params.get("side", "shortfall"))
        if side not in ("shortfall", "two-sided"):
            raise ValueError(f"gap_closed side must be shortfall or two-sided, got {side!r}")
        gt = GapTrend(tol=float(params.get("tol", 0.02)),
                      ci_window=int(params.get("ci_window", 10)),
                      hold=int(params.get("hold", 5)), level=float(params.get("level", 0.90)),
                      side=side,  # type: ignore[arg-type]
                      seed=int(params.get("seed", 0)))
        gs = None
        for r, g in zip(t, gap):
            gs = gt.update(float(g), int(r))
        if gs is None or not gs.closed:
            return Reading([], None if gs is None else gs.mean)
        return Reading([Sample(lab, gs.mean, gs.round, {
            "lo": _fmt(gs.lo), "hi": _fmt(gs.hi), "closed_since": _fmt(gs.closed_since)})],
            gs.mean)
    if name == "latency_growth":
        actions = _col(series, "actions", length)
        lat = _col(series, "latency_us_sum", length)
        ok = actions > 0
        if not ok.any():
            raise NoData("no round with actions")
        per_action = lat[ok] / actions[ok]
        st = _trend(+1, params, rounds[ok], per_action,
                    min_growth=float(params.get("min_growth", 0.1)))
        if st is None or not st.alarm:
            return Reading([], None if st is None else st.slope)
        return Reading([Sample(lab, st.slope, int(rounds[ok][-1]), {
            "latency_us": _fmt(float(per_action[-1])), "p": _fmt(st.mk_p)})], st.slope)
    if name == "no_data":
        if now is None:
            raise ValueError("no_data needs `now`")
        ts = _col(series, "ts_max", length)
        ts = ts[np.isfinite(ts)]
        if ts.size == 0:
            raise NoData("no timestamps")
        age = now - float(ts.max())
        after = parse_duration(str(params.get("after", "5m")))
        if age >= after.amount:
            return Reading([Sample(lab, age, int(rounds[-1]),
                                   {"last_seen": _fmt(float(ts.max()))})], age, after.amount)
        return Reading([], age, after.amount)
    raise AssertionError(name)  # every name in DETECTOR_PARAMS is handled above


__all__ = ["Reading", "Series", "evaluate_detector", "read_detector"]
