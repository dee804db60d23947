"""Drift detectors: CUSUMs on blocked/attempted rates, coverage drop, gap and latency trends.

Every detector is incremental: `update` costs O(new data) (the trend tests cost O(window²) for
a fixed window), so a live dashboard can feed it round by round without rescanning history.

CUSUM thresholds come from a target in-control average run length (ARL0: the mean number of
rounds, or actions, between false alarms). They are computed, not simulated, from the Markov
chain of the statistic, and cached per (p0, p1, n, ARL0):

- Round charts (`BinomialCusum`) run on an integer lattice: the log-likelihood-ratio increment
  x*d - n*u1 is measured in units of d/q, so it is the integer q*x - round(n*u1*q/d) and the
  chain on integers is solved *exactly* for the chart that is actually run. Only the reference
  value is rounded, by under 2% of the drain per round; the threshold resolution d/q is about
  0.1 nats; as counts move the statistic in steps, the ARL is a step function of the
  threshold and the design takes the first step at or above the target (here within ~20%).
- Per-action charts (`BernoulliCusum`), and round charts whose rounds rarely contain a success,
  drain by tiny amounts per step, which a lattice would need thousands of states for. They run
  the exact log-LR statistic; its chain is embedded at the steps with successes (a Geometric
  number of empty steps between two) and discretised in cells (Brook & Evans 1972). This is
  within a few % of simulation when the drain between successes is spread over many cells (the
  rare-event regime it is used for), and up to ~10% off in between.

When p0 is estimated from a warm-up, the chart is built on the estimate but the data come from
the unknown true rate. To hold the *average* false-alarm rate at the target (the figure users see
across runs), the threshold is chosen so that 1/ARL, averaged over the uncertainty of the
estimate (Gauss-Hermite quadrature over a normal approximation of the logit of the rate), equals
1/ARL0. This raises the threshold; it never lowers it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal

import numpy as np

from .stats import binom_pmf, norm_ppf, norm_sf

# 2000 rounds: ~0.03 false alarms per 80-round run, while a doubling of a 3% rate at 500 checks
# per round is still caught within ~2 rounds (see tests/governance/test_drift.py).
DEFAULT_ARL0_ROUNDS: Final = 2000.0
# About the same false-alarm rate per action as the round chart at a few hundred actions/round.
DEFAULT_ARL0_ACTIONS: Final = 200_000.0
DEFAULT_WARMUP_ROUNDS: Final = 10
DEFAULT_WARMUP_ACTIONS: Final = 2000
DEFAULT_RATIO: Final = 2.0
# A warm-up whose rate is clearly below this is charted as if at p_floor (see _from_warmup): a
# doubling of a near-zero rate is no useful alarm, and its estimate is too rough to calibrate on.
DEFAULT_P_FLOOR: Final = 1e-3
# A warm-up also waits for this many successes: with fewer, p and 2p are hard to tell apart and
# the threshold that holds the false-alarm target would blind the chart.
DEFAULT_MIN_EVENTS: Final = 30

_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite.hermgauss(5)
_TARGET_STATES: Final = 90
_MAX_LATTICE_STATES: Final = 400
_MIN_DRAIN_UNITS: Final = 30  # rounding the drain to an integer costs at most 1/60 of it
_EMBEDDED_CELLS: Final = 200


# --- the Markov chains ---------------------------------------------------------------------------

def _llr_steps(p0: float, p1: float) -> tuple[float, float]:
    """(log-LR of one success, log-LR of one failure) for p1 against p0."""
    return math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))


def _solve_arl(q: np.ndarray) -> float:
    """Expected steps to absorption from state 0 of the substochastic transition matrix q."""
    m = q.shape[0]
    # Far-tail probabilities underflow to subnormal floats, which slow LAPACK down ~50x;
    # they are far below the precision of the answer anyway.
    q = np.where(q < 1e-20, 0.0, q)
    return float(np.linalg.solve(np.eye(m) - q, np.ones(m))[0])


def _lattice_arl(top: int, n: int, units: int, drain: int, p_true: float) -> float:
    """ARL in rounds of T' = max(0, T + units*x - drain), alarm when T > top, x ~ Bin(n, p)."""
    m = top + 1
    pmf = binom_pmf(n, p_true)
    xs = np.flatnonzero(pmf > 1e-16)
    probs = pmf[xs]
    steps = units * xs - drain
    q = np.zeros((m, m))
    rows = np.arange(m)[:, None]
    dest = rows + steps[None, :]
    inside = (dest > 0) & (dest <= top)
    # Distinct x give distinct destinations, so plain assignment cannot collide.
    r_idx, x_idx = np.nonzero(inside)
    q[r_idx, dest[inside]] = probs[x_idx]
    q[:, 0] = np.where(dest <= 0, probs[None, :], 0.0).sum(axis=1)
    return _solve_arl(q)


def _embedded_arl(h: float, n: int, a: float, c: float, p_true: float,
                  m: int = _EMBEDDED_CELLS) -> float:
    """ARL in steps of S' = max(0, S + x*a + (n-x)*c), alarm when S > h, x ~ Bin(n, p).

    Observed only at steps with at least one success ("events"): between two events a Geometric
    number G of empty steps (each with probability pi0 = (1-p)^n) drains G*u, u = n|c|; the event
    then adds z = n*c + x*(a - c), x ~ Bin(n, p) given x >= 1. The statistic can only cross h at
    an event, so by Wald's identity the ARL is E[events to alarm] / P(event). Cells of width
    w = h/(m - 1/2) are centred on i*w, so the restart value 0 is a cell centre.
    """
    if h <= 0:
        return 1.0
    u = n * abs(c)
    d = a - c
    pi0 = math.exp(n * math.log1p(-p_true))
    p_event = -math.expm1(n * math.log1p(-p_true))
    pmf = binom_pmf(n, p_true)[1:] / p_event  # x = 1..n given x >= 1
    xs = np.flatnonzero(pmf > 1e-14) + 1
    weights = pmf[xs - 1]
    z = n * c + xs * d
    w = h / (m - 0.5)
    y = (np.arange(m) * w)[:, None, None]
    edges = (np.arange(m) + 0.5) * w
    # P(max(0, y - G u) + z < t): with s = t - z, P(D < s) = 0 for s <= 0, else
    # P(G > (y - s)/u) = pi0^(floor((y - s)/u) + 1), and 1 when y < s.
    s = edges[None, :, None] - z[None, None, :]
    k = (y - s) / u
    inner = np.where(k < 0, 1.0, np.power(pi0, np.floor(np.maximum(k, 0.0)) + 1.0))
    upper = (np.where(s <= 0, 0.0, inner) * weights[None, None, :]).sum(axis=2)
    lower = np.concatenate((np.zeros((m, 1)), upper[:, :-1]), axis=1)
    return _solve_arl(upper - lower) / p_event


# --- designs: a calibrated chart -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CusumDesign:
    """A calibrated one-sided CUSUM of p1 against p0: what a detector runs.

    method "lattice": integer statistic T' = max(0, T + units*x - drain_for(n)), alarm when
    T > top; its LLR value is T*step. method "embedded": the exact log-LR statistic,
    alarm when it exceeds h. `arl` is the model's in-control ARL at this threshold (averaged over
    the estimate's uncertainty when p0 was estimated), in rounds of `n` trials or in actions.
    """

    p0: float
    p1: float
    n: int
    h: float
    method: Literal["lattice", "embedded"]
    units: int = 0
    top: int = 0
    drain: int = 0  # lattice units drained by a round of n trials
    arl: float = math.nan

    @property
    def step(self) -> float:
        a, c = _llr_steps(self.p0, self.p1)
        return (a - c) / self.units if self.units else math.nan

    def drain_for(self, n: int) -> int:
        """Lattice units drained by a round of n trials (exactly `drain` for the design's n)."""
        if n == self.n:
            return self.drain
        a, c = _llr_steps(self.p0, self.p1)
        return int(round(n * abs(c) * self.units / (a - c)))


def _posterior_nodes(est: tuple[int, int] | None, p0: float) -> list[tuple[float, float]]:
    """(rate, weight) pairs: p0 itself, or quadrature over the uncertainty of an estimate."""
    if est is None:
        return [(p0, 1.0)]
    x, n = est
    xs, fs = x + 0.5, n - x + 0.5
    centre = math.log(xs / fs)
    se = math.sqrt(1.0 / xs + 1.0 / fs)
    return [(1.0 / (1.0 + math.exp(-(centre + math.sqrt(2.0) * se * node))),
             float(weight) / math.sqrt(math.pi)) for node, weight in zip(_GH_NODES, _GH_WEIGHTS)]


def _averaged(arl_at: Callable[[float], float], nodes: list[tuple[float, float]]) -> float:
    """The ARL whose false-alarm rate 1/ARL is the weighted mean over the nodes."""
    return 1.0 / sum(w / arl_at(p) for p, w in nodes)


def _lattice_design(p0: float, p1: float, n: int, arl0: float,
                    nodes: list[tuple[float, float]]) -> CusumDesign | None:
    a, c = _llr_steps(p0, p1)
    d, u = a - c, n * abs(c)
    # ~90 states at the expected threshold: 0.1-nat resolution, and small enough that LAPACK
    # stays single-threaded (its threaded path is ~20x slower on a busy 2-core machine).
    h_ref = math.log(arl0) + 1.0
    units = max(1, int(_TARGET_STATES * d / h_ref), math.ceil(_MIN_DRAIN_UNITS * d / u))
    drain = int(round(u * units / d))
    # A common factor of units and drain would leave most states unreachable and make the
    # threshold move in coarse steps.
    while math.gcd(units, drain) > 1:
        drain += 1
    step = d / units
    if h_ref / step > _MAX_LATTICE_STATES:
        return None

    def arl(top: int) -> float:
        return _averaged(lambda p: _lattice_arl(top, n, units, drain, p), nodes)

    # Smallest integer threshold reaching the target: exponential then binary search.
    lo, hi = -1, max(1, int(math.log(arl0) / step))
    while arl(hi) < arl0:
        lo, hi = hi, hi * 2
        if hi > 4 * _MAX_LATTICE_STATES:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if arl(mid) >= arl0:
            hi = mid
        else:
            lo = mid
    return CusumDesign(p0, p1, n, hi * step, "lattice", units, hi, drain, arl(hi))


def _solve_threshold(log_arl: Callable[[float], float], arl0: float) -> float:
    """h with ARL(h) within 1% above arl0, by Illinois regula falsi on log ARL (monotone in h)."""
    target = math.log(arl0)
    lo, f_lo = 0.0, log_arl(0.0) - target
    if f_lo >= 0:
        return 0.0
    hi = max(1.0, target)
    f_hi = log_arl(hi) - target
    while f_hi < 0:
        lo, f_lo = hi, f_hi
        hi *= 1.5
        f_hi = log_arl(hi) - target
    side = 0
    for _ in range(60):
        if f_hi < 0.01 or hi - lo < 1e-3:
            break
        h = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        h = min(max(h, lo + 1e-4), hi - 1e-4)
        f = log_arl(h) - target
        if f >= 0:
            hi, f_hi = h, f
            if side == 1:
                f_lo /= 2.0
            side = 1
        else:
            lo, f_lo = h, f
            if side == -1:
                f_hi /= 2.0
            side = -1
    return hi


def _embedded_design(p0: float, p1: float, n: int, arl0: float,
                     nodes: list[tuple[float, float]]) -> CusumDesign:
    a, c = _llr_steps(p0, p1)

    def arl(h: float) -> float:
        return _averaged(lambda p: _embedded_arl(h, n, a, c, p), nodes)

    h = _solve_threshold(lambda h: math.log(arl(h)), arl0)
    return CusumDesign(p0, p1, n, h, "embedded", arl=arl(h))


@lru_cache(maxsize=1024)
def design_binomial_cusum(p0: float, p1: float, n: int, arl0: float = DEFAULT_ARL0_ROUNDS,
                          est: tuple[int, int] | None = None) -> CusumDesign:
    """Calibrate a round chart for `n` checks per round to an in-control ARL of `arl0` rounds.

    `est` = (successes, trials) of the warm-up when p0 was estimated from it.
    """
    if not 0.0 < p0 < p1 < 1.0:
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}")
    if n < 1 or arl0 <= 1.0:
        raise ValueError(f"need n >= 1 and arl0 > 1, got n={n}, arl0={arl0}")
    nodes = _posterior_nodes(est, p0)
    return (_lattice_design(p0, p1, n, arl0, nodes)
            or _embedded_design(p0, p1, n, arl0, nodes))


@lru_cache(maxsize=1024)
def design_bernoulli_cusum(p0: float, p1: float, arl0: float = DEFAULT_ARL0_ACTIONS,
                           est: tuple[int, int] | None = None) -> CusumDesign:
    """Calibrate a per-action chart to an in-control ARL of `arl0` actions."""
    if not 0.0 < p0 < p1 < 1.0:
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}")
    return _embedded_design(p0, p1, 1, arl0, _posterior_nodes(est, p0))


def cusum_arl(design: CusumDesign, p_true: float | None = None, n: int | None = None) -> float:
    """The ARL of a design when the data come at `p_true` (default p0) with n trials per step."""
    p = design.p0 if p_true is None else p_true
    n = design.n if n is None else n
    if design.method == "lattice":
        return _lattice_arl(design.top, n, design.units, design.drain_for(n), p)
    a, c = _llr_steps(design.p0, design.p1)
    return _embedded_arl(design.h, n, a, c, p)


# --- CUSUM detectors -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DetectorState:
    """The detector after one update. `threshold` is NaN while warming up."""

    round: int
    statistic: float
    threshold: float
    alarm: bool
    change_round: int | None = None  # CUSUM: first round after the statistic last sat at 0
    warming_up: bool = False
    rate: float = math.nan  # the observed rate in this update (x/n), NaN without data
    p0: float | None = None


def _alternative(p0: float, p1: float | None, ratio: float) -> float:
    p1 = p0 * ratio if p1 is None else p1
    if p1 >= 1.0 and p0 < 1.0:
        # A doubling of a rate already above 1/2 cannot happen: aim halfway to 1 instead.
        p1 = (p0 + 1.0) / 2.0
    if not 0.0 < p0 < p1 < 1.0:
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}")
    return p1


def _upper_rate(x: int, n: int) -> float:
    """Upper 97.5% bound of a rate (logit scale, half counts so that x = 0 works)."""
    xs, fs = x + 0.5, n - x + 0.5
    logit = math.log(xs / fs) + 1.96 * math.sqrt(1.0 / xs + 1.0 / fs)
    return 1.0 / (1.0 + math.exp(-logit))


def _warmup_done(x: int, n: int, min_events: int, p_floor: float) -> bool:
    return n > 0 and (x >= min_events or _upper_rate(x, n) <= p_floor)


def _from_warmup(x: int, n: int, p_floor: float) -> tuple[float, tuple[int, int] | None]:
    """p0 and the estimate to average over, from a warm-up of x successes in n trials.

    When even the upper 97.5% bound of the rate is below p_floor, the chart watches for a
    doubling of p_floor, taken as known: the true rate is below it, so the false-alarm rate can
    only be lower than the target.
    """
    if _upper_rate(x, n) <= p_floor:
        return p_floor, None
    return max((x + 0.5) / (n + 1.0), p_floor), (x, n)


class _Cusum:
    """Shared recursion: S = max(0, S + step); alarm when S > threshold; optional reset and cap.

    The statistic is kept in the design's raw units (lattice integers or nats); `scale` turns
    it into nats for reporting.
    """

    def __init__(self, reset: bool, cap_factor: float | None) -> None:
        self.reset = reset
        self.cap_factor = cap_factor
        self.design: CusumDesign | None = None
        self.alarms = 0
        self._raw = 0.0
        self._limit = math.nan
        self._scale = 1.0
        self._run_start: int | None = None  # the change-point estimate

    @property
    def statistic(self) -> float:
        return self._raw * self._scale

    @property
    def threshold(self) -> float:
        return self._limit * self._scale

    @property
    def ready(self) -> bool:
        return self.design is not None

    def _use(self, design: CusumDesign) -> None:
        self.design = design
        if design.method == "lattice":
            self._limit, self._scale = float(design.top), design.step
        else:
            self._limit, self._scale = design.h, 1.0

    def _step(self, inc: float, rnd: int) -> tuple[bool, int | None]:
        s = max(0.0, self._raw + inc)
        if s == 0.0:
            self._run_start = None
        elif self._run_start is None:
            self._run_start = rnd
        if self.cap_factor is not None:
            s = min(s, self.cap_factor * self._limit)
        self._raw = s
        alarm = s > self._limit
        change = self._run_start
        if alarm:
            self.alarms += 1
            if self.reset:
                self._raw = 0.0
                self._run_start = None
        return alarm, change


class BinomialCusum(_Cusum):
    """One-sided upper CUSUM per round on (x successes of n), e.g. blocked of checked.

    p0 given, or estimated from a warm-up (no alarms meanwhile) of at least `warmup` rounds with
    data and `min_events` successes (or a rate clearly below `p_floor`, see _from_warmup). The
    alternative is p1, or `ratio` * p0. The threshold is calibrated for `n_typical` checks per
    round (given, else the mean n of the warm-up, else the first round's n); rounds of other sizes
    add their own log-likelihood ratio, only the ARL0 calibration assumes n_typical.
    `reset` restarts the statistic after an alarm (counting alarms); `cap_factor` (with
    reset=False) caps the statistic at cap_factor * threshold so that an alarm clears within a
    few rounds once the rate is back to normal.
    """

    def __init__(self, p0: float | None = None, p1: float | None = None, *,
                 ratio: float = DEFAULT_RATIO, arl0: float = DEFAULT_ARL0_ROUNDS,
                 n_typical: int | None = None, warmup: int = DEFAULT_WARMUP_ROUNDS,
                 min_events: int = DEFAULT_MIN_EVENTS, p_floor: float = DEFAULT_P_FLOOR,
                 reset: bool = True, cap_factor: float | None = None) -> None:
        super().__init__(reset, cap_factor)
        if ratio <= 1.0:
            raise ValueError(f"ratio must be > 1, got {ratio}")
        if arl0 <= 1.0:
            raise ValueError(f"arl0 must be > 1, got {arl0}")
        if warmup < 1 and p0 is None:
            raise ValueError("estimating p0 needs warmup >= 1")
        self.ratio = ratio
        self.arl0 = arl0
        self.n_typical = n_typical
        self.warmup = warmup
        self.min_events = min_events
        self.p_floor = p_floor
        self.p0 = p0
        self.p1 = None if p0 is None else _alternative(p0, p1, ratio)
        self._given_p1 = p1
        self._est: tuple[int, int] | None = None
        self._warm_x = self._warm_n = self._warm_rounds = 0
        self._round = -1
        self._a = self._c = 0.0
        if p0 is not None and n_typical is not None:
            self._calibrate(n_typical)

    def _calibrate(self, n: int) -> None:
        assert self.p0 is not None and self.p1 is not None
        self._a, self._c = _llr_steps(self.p0, self.p1)
        self._use(design_binomial_cusum(self.p0, self.p1, max(1, int(n)), self.arl0, self._est))

    def _increment(self, x: int, n: int) -> float:
        d = self.design
        assert d is not None
        if d.method == "lattice":
            return float(d.units * x - d.drain_for(n))
        return x * self._a + (n - x) * self._c

    def update(self, x: int, n: int, round: int | None = None) -> DetectorState:
        rnd = self._round + 1 if round is None else round
        self._round = rnd
        if x < 0 or n < 0 or x > n:
            raise ValueError(f"need 0 <= x <= n, got x={x}, n={n}")
        rate = x / n if n else math.nan
        if not self.ready:
            if self.p0 is None:
                if n > 0:
                    self._warm_x += x
                    self._warm_n += n
                    self._warm_rounds += 1
                if self._warm_rounds < self.warmup or not _warmup_done(
                        self._warm_x, self._warm_n, self.min_events, self.p_floor):
                    return DetectorState(rnd, 0.0, math.nan, False, None, True, rate)
                self.p0, self._est = _from_warmup(self._warm_x, self._warm_n, self.p_floor)
                self.p1 = _alternative(self.p0, self._given_p1, self.ratio)
                mean_n = self._warm_n / self._warm_rounds
                self._calibrate(self.n_typical or int(math.floor(mean_n + 0.5)))
                # The warm-up rounds defined "normal": they are not scored again.
                return DetectorState(rnd, 0.0, self.threshold, False, None, False, rate, self.p0)
            if n == 0:
                return DetectorState(rnd, 0.0, math.nan, False, None, False, rate, self.p0)
            self._calibrate(self.n_typical or n)
        if n == 0:
            return DetectorState(rnd, self.statistic, self.threshold, False, None, False, rate,
                                 self.p0)
        alarm, change = self._step(self._increment(x, n), rnd)
        return DetectorState(rnd, self.statistic, self.threshold, alarm,
                             change if alarm else self._run_start, False, rate, self.p0)


class BernoulliCusum(_Cusum):
    """One-sided upper CUSUM per action bit (live streams); ARL0 counted in actions."""

    def __init__(self, p0: float | None = None, p1: float | None = None, *,
                 ratio: float = DEFAULT_RATIO, arl0: float = DEFAULT_ARL0_ACTIONS,
                 warmup: int = DEFAULT_WARMUP_ACTIONS, min_events: int = DEFAULT_MIN_EVENTS,
                 p_floor: float = DEFAULT_P_FLOOR, reset: bool = True,
                 cap_factor: float | None = None) -> None:
        super().__init__(reset, cap_factor)
        if ratio <= 1.0:
            raise ValueError(f"ratio must be > 1, got {ratio}")
        if warmup < 1 and p0 is None:
            raise ValueError("estimating p0 needs warmup >= 1")
        self.ratio = ratio
        self.arl0 = arl0
        self.warmup = warmup
        self.min_events = min_events
        self.p_floor = p_floor
        self.p0 = p0
        self.p1 = p1
        self._given_p1 = p1
        self._warm_x = self._warm_n = 0
        self._index = -1
        self._a = self._c = 0.0
        if p0 is not None:
            self.p1 = _alternative(p0, p1, ratio)
            self._calibrate(None)

    def _calibrate(self, est: tuple[int, int] | None) -> None:
        assert self.p0 is not None and self.p1 is not None
        self._a, self._c = _llr_steps(self.p0, self.p1)
        self._use(design_bernoulli_cusum(self.p0, self.p1, self.arl0, est))

    def update(self, bit: int | bool, index: int | None = None) -> DetectorState:
        idx = self._index + 1 if index is None else index
        self._index = idx
        b = 1 if bit else 0
        if not self.ready:
            self._warm_x += b
            self._warm_n += 1
            if self._warm_n < self.warmup or not _warmup_done(
                    self._warm_x, self._warm_n, self.min_events, self.p_floor):
                return DetectorState(idx, 0.0, math.nan, False, None, True, float(b))
            self.p0, est = _from_warmup(self._warm_x, self._warm_n, self.p_floor)
            self.p1 = _alternative(self.p0, self._given_p1, self.ratio)
            self._calibrate(est)
            return DetectorState(idx, 0.0, self.threshold, False, None, False, float(b), self.p0)
        alarm, change = self._step(self._a if b else self._c, idx)
        return DetectorState(idx, self.statistic, self.threshold, alarm,
                             change if alarm else self._run_start, False, float(b), self.p0)

    def feed(self, bits: Iterable[int | bool]) -> list[DetectorState]:
        """Feed many bits; returns the states of the bits that raised an alarm."""
        return [s for s in (self.update(b) for b in bits) if s.alarm]


class CoverageDrop:
    """Fires in any round with data whose coverage (covered/actions) is below `threshold`."""

    def __init__(self, threshold: float = 1.0) -> None:
        self.threshold = threshold
        self._round = -1

    def update(self, covered: int, actions: int, round: int | None = None) -> DetectorState:
        rnd = self._round + 1 if round is None else round
        self._round = rnd
        if actions <= 0:
            return DetectorState(rnd, math.nan, self.threshold, False)
        coverage = covered / actions
        # A tolerance of one part in 1e12 keeps 1.0 from firing on float round-off.
        return DetectorState(rnd, coverage, self.threshold, coverage < self.threshold - 1e-12,
                             rate=coverage)


# --- trends: Theil-Sen, Mann-Kendall, moving-block bootstrap -------------------------------------

@dataclass(frozen=True, slots=True)
class MannKendall:
    s: int
    var_s: float
    z: float
    p: float  # two-sided, normal approximation with continuity correction
    tau: float
    n: int


@dataclass(frozen=True, slots=True)
class TheilSen:
    slope: float
    intercept: float
    lo: float  # Sen's CI from the Kendall distribution of pairwise slopes
    hi: float
    n: int


@lru_cache(maxsize=64)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, 1)


def mann_kendall(y: Sequence[float] | np.ndarray) -> MannKendall:
    """Mann-Kendall trend test for a series in time order, with the ties correction."""
    arr = np.asarray(y, dtype=float)
    n = arr.size
    if n < 2:
        return MannKendall(0, 0.0, 0.0, 1.0, 0.0, n)
    iu, ju = _pairs(n)
    s = int(np.sign(arr[ju] - arr[iu]).sum())
    _, counts = np.unique(arr, return_counts=True)
    ties = counts[counts > 1].astype(float)
    var_s = (n * (n - 1) * (2 * n + 5) - float((ties * (ties - 1) * (2 * ties + 5)).sum())) / 18.0
    if var_s <= 0:
        return MannKendall(s, 0.0, 0.0, 1.0, 0.0, n)
    z = (s - 1) / math.sqrt(var_s) if s > 0 else (s + 1) / math.sqrt(var_s) if s < 0 else 0.0
    p = min(1.0, 2.0 * norm_sf(abs(z)))
    tau = s / (n * (n - 1) / 2.0)
    return MannKendall(s, var_s, z, p, tau, n)


def theil_sen(y: Sequence[float] | np.ndarray, t: Sequence[float] | np.ndarray | None = None,
              level: float = 0.95, mk: MannKendall | None = None) -> TheilSen:
    """Median of pairwise slopes, intercept median(y - slope*t), and Sen's confidence interval.

    Sen's interval uses the Mann-Kendall variance of y; pass `mk` if already computed.
    """
    arr = np.asarray(y, dtype=float)
    n = arr.size
    tt = np.arange(n, dtype=float) if t is None else np.asarray(t, dtype=float)
    if n < 2:
        return TheilSen(math.nan, math.nan, math.nan, math.nan, n)
    iu, ju = _pairs(n)
    dt = tt[ju] - tt[iu]
    keep = dt != 0
    slopes = np.sort((arr[ju] - arr[iu])[keep] / dt[keep])
    if slopes.size == 0:
        return TheilSen(math.nan, math.nan, math.nan, math.nan, n)
    slope = float(np.median(slopes))
    intercept = float(np.median(arr - slope * tt))
    big_n = slopes.size
    var_s = (mk if mk is not None else mann_kendall(arr)).var_s
    c = norm_ppf((1 + level) / 2) * math.sqrt(var_s)
    lo_rank = int(math.floor((big_n - c) / 2.0))
    hi_rank = int(math.ceil((big_n + c) / 2.0))
    lo = float(slopes[lo_rank - 1]) if lo_rank >= 1 else -math.inf
    hi = float(slopes[hi_rank]) if hi_rank < big_n else math.inf
    return TheilSen(slope, intercept, lo, hi, n)


def block_length(n: int) -> int:
    """Moving-block length ~ n^(1/3), the rate that balances bias and variance for the mean."""
    return max(1, int(round(n ** (1.0 / 3.0))))


def block_bootstrap_mean_ci(y: Sequence[float] | np.ndarray, level: float = 0.90,
                            reps: int = 1000, rng: np.random.Generator | None = None,
                            block: int | None = None) -> tuple[float, float]:
    """Percentile CI of the mean by the moving-block bootstrap (keeps serial correlation)."""
    arr = np.asarray(y, dtype=float)
    n = arr.size
    if n == 0:
        return (math.nan, math.nan)
    if n == 1:
        return (-math.inf, math.inf)
    rng = rng if rng is not None else np.random.default_rng(0)
    size = min(n, block or block_length(n))
    k = -(-n // size)
    starts = rng.integers(0, n - size + 1, size=(reps, k))
    idx = (starts[:, :, None] + np.arange(size)).reshape(reps, k * size)[:, :n]
    means = arr[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


@dataclass(frozen=True, slots=True)
class TrendState:
    round: int
    n: int  # points in the window
    slope: float
    slope_lo: float
    slope_hi: float
    mk_z: float
    mk_p: float
    alarm: bool  # a significant trend in the watched direction


class TrendDetector:
    """Theil-Sen slope + Mann-Kendall over the last `window` points of a per-round series.

    `direction` -1 watches for a fall (a widening shortfall gap), +1 for a rise (latency).
    `min_growth` (for direction +1) also asks the fitted rise over the window to be at least this
    share of the median level, so a significant but negligible trend does not alarm.
    """

    def __init__(self, direction: Literal[-1, 1], window: int = 30, alpha: float = 0.01,
                 min_points: int = 8, min_growth: float = 0.0) -> None:
        self.direction = direction
        self.alpha = alpha
        self.min_points = max(3, min_points)
        self.min_growth = min_growth
        self._t: deque[float] = deque(maxlen=window)
        self._y: deque[float] = deque(maxlen=window)
        self._round = -1

    def update(self, value: float, round: int | None = None) -> TrendState:
        rnd = self._round + 1 if round is None else round
        self._round = rnd
        if math.isfinite(value):
            self._t.append(float(rnd))
            self._y.append(value)
        n = len(self._y)
        if n < self.min_points:
            return TrendState(rnd, n, math.nan, math.nan, math.nan, 0.0, 1.0, False)
        y = np.fromiter(self._y, float, n)
        t = np.fromiter(self._t, float, n)
        mk = mann_kendall(y)
        ts = theil_sen(y, t, level=1.0 - self.alpha, mk=mk)
        alarm = mk.p < self.alpha and self.direction * mk.z > 0 and self.direction * ts.slope > 0
        if alarm and self.min_growth > 0:
            level = float(np.median(np.abs(y)))
            rise = self.direction * ts.slope * (t[-1] - t[0])
            alarm = level > 0 and rise >= self.min_growth * level
        return TrendState(rnd, n, ts.slope, ts.lo, ts.hi, mk.z, mk.p, alarm)


@dataclass(frozen=True, slots=True)
class GapState:
    round: int
    gap: float  # this round's gap
    mean: float  # mean gap over the last `ci_window` rounds
    lo: float  # moving-block bootstrap CI of that mean
    hi: float
    within: bool  # the CI clears the tolerance this round
    closed: bool  # ... and has for `hold` consecutive rounds
    closed_since: int | None
    trend: TrendState


class GapTrend:
    """Per-round performance gap (governed - ungoverned mean reward): trend and closure.

    Closure is an equivalence (TOST-style) decision: the bootstrap CI of the recent mean gap at
    `level` (0.90 = two one-sided 5% tests) must lie within the tolerance for `hold` consecutive
    rounds. side="shortfall" (default) asks only that the governed arm be no worse than `tol`
    below the ungoverned (lower bound > -tol); "two-sided" asks |gap| < tol on both sides.
    """

    def __init__(self, tol: float = 0.02, ci_window: int = 10, hold: int = 5,
                 level: float = 0.90, side: Literal["shortfall", "two-sided"] = "shortfall",
                 window: int = 30, alpha: float = 0.01, min_points: int = 8, reps: int = 1000,
                 seed: int = 0) -> None:
        self.tol = tol
        self.hold = hold
        self.level = level
        self.side = side
        self.reps = reps
        self._recent: deque[float] = deque(maxlen=ci_window)
        self._trend = TrendDetector(-1, window=window, alpha=alpha, min_points=min_points)
        self._rng = np.random.default_rng(seed)
        self._streak = 0
        self._closed_since: int | None = None
        self._round = -1

    def update(self, gap: float, round: int | None = None) -> GapState:
        rnd = self._round + 1 if round is None else round
        self._round = rnd
        trend = self._trend.update(gap, rnd)
        if math.isfinite(gap):
            self._recent.append(gap)
        recent = np.fromiter(self._recent, float, len(self._recent))
        mean = float(recent.mean()) if recent.size else math.nan
        if recent.size >= 2:
            lo, hi = block_bootstrap_mean_ci(recent, self.level, self.reps, self._rng)
        else:
            lo, hi = -math.inf, math.inf
        within = lo > -self.tol if self.side == "shortfall" else (lo > -self.tol and hi < self.tol)
        # A short window cannot show equivalence: wait until it is full.
        within = within and recent.size == self._recent.maxlen
        self._streak = self._streak + 1 if within else 0
        closed = self._streak >= self.hold
        if closed and self._closed_since is None:
            self._closed_since = rnd
        elif not closed:
            self._closed_since = None
        return GapState(rnd, gap, mean, lo, hi, within, closed, self._closed_since, trend)


__all__ = [
    "BernoulliCusum", "BinomialCusum", "CoverageDrop", "CusumDesign", "DEFAULT_ARL0_ACTIONS",
    "DEFAULT_ARL0_ROUNDS", "DEFAULT_MIN_EVENTS", "DEFAULT_P_FLOOR", "DEFAULT_RATIO",
    "DEFAULT_WARMUP_ACTIONS",
    "DEFAULT_WARMUP_ROUNDS", "DetectorState", "GapState", "GapTrend", "MannKendall", "TheilSen",
    "TrendDetector", "TrendState", "block_bootstrap_mean_ci", "block_length", "cusum_arl",
    "design_bernoulli_cusum", "design_binomial_cusum", "mann_kendall", "theil_sen",
]
