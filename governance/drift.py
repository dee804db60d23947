"""Drift detectors: CUSUMs on blocked/attempted rates, coverage drop, gap and latency trends.

Every detector is incremental: `update` costs O(new data) (the trend tests cost O(window²) for
a fixed window), so a live dashboard can feed it round by round without rescanning history.

CUSUM thresholds come from a target in-control average run length (ARL0: the mean number of rounds,
or actions, between false alarms). They are computed, not simulated: the CUSUM statistic is a
Markov chain on [0, h), discretised into cells (Brook & Evans 1972), and its ARL is the solution of
one linear system; h is then found by root-finding on log ARL. This is deterministic and takes a
few milliseconds, and the result is cached per (p0, p1, n, ARL0).

When p0 is estimated from a warm-up, the chart is built on the estimate but the data come from
the unknown true rate. To keep the *average* false-alarm rate at the target (the figure users see
across runs), h is chosen so that the false-alarm rate 1/ARL, averaged over the uncertainty of
the estimate (Gauss-Hermite quadrature over a normal approximation of the logit of the rate),
equals 1/ARL0. This raises h a little; it never lowers it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal

import numpy as np

from .stats import binom_pmf, norm_ppf, norm_sf

# 2000 rounds: ~0.04 false alarms per 80-round run, while a doubling of a 3% rate at 500 checks
# per round is still caught within ~2 rounds (see tests/governance/test_drift.py).
DEFAULT_ARL0_ROUNDS: Final = 2000.0
# About the same false-alarm rate per action as the round chart at a few hundred actions/round.
DEFAULT_ARL0_ACTIONS: Final = 200_000.0
DEFAULT_WARMUP_ROUNDS: Final = 10
DEFAULT_WARMUP_ACTIONS: Final = 2000
DEFAULT_RATIO: Final = 2.0

_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite.hermgauss(5)


# --- ARL of a one-sided Binomial / Bernoulli CUSUM ------------------------------------------------

def _llr_steps(p0: float, p1: float) -> tuple[float, float]:
    """(log-LR of one success, log-LR of one failure) for p1 against p0."""
    return math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))


def _solve_arl(q: np.ndarray) -> np.ndarray:
    m = q.shape[0]
    # Far-tail probabilities underflow to subnormal floats, which slow LAPACK down ~50x;
    # they are far below the precision of the answer anyway.
    q = np.where(q < 1e-20, 0.0, q)
    return np.linalg.solve(np.eye(m) - q, np.ones(m))


def cusum_arl_binomial(h: float, n: int, p0: float, p1: float, p_true: float | None = None,
                       units: int | None = None) -> float:
    """Average run length, in rounds, of the Binomial(n) CUSUM for p1 vs p0 with threshold h.

    Data are drawn at `p_true` (default p0: the in-control ARL). The per-round increment is
    z = x*d - u with d = log-LR weight of a success minus that of a failure, u = n*log((1-p0)/
    (1-p1)). Measured in units of d/q, z is the integer q*x - round(u*q/d): the chain on those
    integers is solved exactly (`_arl_lattice`); only u is rounded, by at most 1/2 unit, and q is
    chosen so that this is under ~1% of u. When u is too small for that at a tractable number
    of states (per-action bits, very rare events), the chain is embedded at the rounds with
    successes instead (`_arl_embedded`, Brook-Evans cells, a few % accurate).
    """
    p_true = p0 if p_true is None else p_true
    if h <= 0:
        return 1.0
    a, c = _llr_steps(p0, p1)
    d = a - c
    u = n * abs(c)
    q = units or _units_for(h, d)
    if u * q / d < 50:
        return _arl_embedded(h, n, a, c, p_true, 200)
    return _arl_lattice(h, n, d, u, p_true, q)


_MAX_STATES: Final = 300


def _units_for(h: float, d: float) -> int:
    return max(1, int((_MAX_STATES - 1) * d / max(h, 1e-9)))


def _arl_lattice(h: float, n: int, d: float, u: float, p_true: float, q: int) -> float:
    delta = d / q
    drain = int(round(u / delta))
    top = int(math.floor(h / delta))  # states 0..top are below the threshold
    m = top + 1
    pmf = binom_pmf(n, p_true)
    xs = np.flatnonzero(pmf > 1e-15)
    probs = pmf[xs]
    rows = np.repeat(np.arange(m), xs.size)
    dest = rows + np.tile(q * xs - drain, m)
    prob = np.tile(probs, m)
    keep = dest <= top  # above top: absorbed (alarm)
    q_mat = np.zeros((m, m))
    np.add.at(q_mat, (rows[keep], np.maximum(dest[keep], 0)), prob[keep])
    return float(_solve_arl(q_mat)[0])


def _arl_embedded(h: float, n: int, a: float, c: float, p_true: float, m: int) -> float:
    """ARL of the CUSUM observed only at rounds with at least one success ("events").

    Between two events a Geometric number G of empty rounds (each with probability
    pi0 = (1-p)^n) drains G*u, u = n|c|; the event round then adds z = n*c + x*(a - c) with
    x ~ Binomial(n, p) given x >= 1. The statistic can only rise, hence cross h, at an event,
    so by Wald's identity the ARL in rounds is E[events to alarm] / P(event).
    """
    u = n * abs(c)
    d = a - c
    pi0 = math.exp(n * math.log1p(-p_true))
    p_event = -math.expm1(n * math.log1p(-p_true))
    pmf = binom_pmf(n, p_true)[1:] / p_event  # x = 1..n given x >= 1
    xs = np.flatnonzero(pmf > 1e-14) + 1
    weights = pmf[xs - 1]
    z = n * c + xs * d
    w = h / (m - 0.5)
    y = (np.arange(m) * w)[:, None, None]  # from state i

    def below(t: np.ndarray) -> np.ndarray:
        # P(max(0, y - G u) + z < t), summed over x: D < s with s = t - z, where
        # P(D < s) = 0 for s <= 0, 1 for s > y, else P(G > (y - s)/u) = pi0^(floor(.) + 1).
        s_ = t[None, :, None] - z[None, None, :]
        k = (y - s_) / u
        inner = np.where(k < 0, 1.0, np.power(pi0, np.floor(np.maximum(k, 0.0)) + 1.0))
        prob = np.where(s_ <= 0, 0.0, inner)
        return (prob * weights[None, None, :]).sum(axis=2)

    edges = (np.arange(m) + 0.5) * w
    upper = below(edges)
    lower = np.concatenate((np.zeros((m, 1)), upper[:, :-1]), axis=1)
    events = float(_solve_arl(upper - lower)[0])
    return events / p_event


def cusum_arl_bernoulli(h: float, p0: float, p1: float, p_true: float | None = None,
                        units: int | None = None) -> float:
    """Average run length, in actions, of the per-action Bernoulli CUSUM (Binomial with n=1)."""
    return cusum_arl_binomial(h, 1, p0, p1, p_true, units)


def _averaged_arl(arl_at: Callable[[float], float], p_hat: float,
                  est: tuple[int, int] | None) -> float:
    """ARL whose false-alarm rate is averaged over the uncertainty of an estimated p0."""
    if est is None:
        return arl_at(p_hat)
    x, n = est
    xs, fs = x + 0.5, n - x + 0.5
    centre = math.log(xs / fs)
    se = math.sqrt(1.0 / xs + 1.0 / fs)
    rate = 0.0
    for node, weight in zip(_GH_NODES, _GH_WEIGHTS):
        p = 1.0 / (1.0 + math.exp(-(centre + math.sqrt(2.0) * se * node)))
        rate += weight / math.sqrt(math.pi) / arl_at(p)
    return 1.0 / rate


def _solve_threshold(log_arl: Callable[[float], float], arl0: float) -> float:
    """h with ARL(h) ~= arl0 (within 1%, never below), by Illinois regula falsi on log ARL.

    The ARL of a chart on counts is a non-decreasing *step* function of h (the statistic lives
    on a lattice), so an exact root may not exist: stop within 1% of the target or when the
    bracket is 1e-3 wide, and return the upper end, which holds the false-alarm target.
    """
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


@lru_cache(maxsize=512)
def binomial_cusum_threshold(p0: float, p1: float, n: int, arl0: float = DEFAULT_ARL0_ROUNDS,
                             est: tuple[int, int] | None = None) -> float:
    """Threshold h giving an in-control ARL of `arl0` rounds at `n` checks per round.

    `est` = (successes, trials) when p0 was estimated from them: see the module docstring.
    """
    a, c = _llr_steps(p0, p1)
    # One resolution for the whole search keeps ARL(h) monotone in h.
    units = _units_for(1.5 * max(math.log(arl0), 1.0), a - c)

    def log_arl(h: float) -> float:
        return math.log(_averaged_arl(
            lambda pt: cusum_arl_binomial(h, n, p0, p1, pt, units), p0, est))
    return _solve_threshold(log_arl, arl0)


@lru_cache(maxsize=512)
def bernoulli_cusum_threshold(p0: float, p1: float, arl0: float = DEFAULT_ARL0_ACTIONS,
                              est: tuple[int, int] | None = None) -> float:
    """Threshold h giving an in-control ARL of `arl0` actions."""
    a, c = _llr_steps(p0, p1)
    units = _units_for(1.5 * max(math.log(arl0), 1.0), a - c)

    def log_arl(h: float) -> float:
        return math.log(_averaged_arl(
            lambda pt: cusum_arl_bernoulli(h, p0, p1, pt, units), p0, est))
    return _solve_threshold(log_arl, arl0)


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


def _estimate(x: int, n: int) -> float:
    # Jeffreys-style half counts: a warm-up with no success still gives a usable, small p0.
    return (x + 0.5) / (n + 1.0)


def _alternative(p0: float, p1: float | None, ratio: float) -> float:
    p1 = p0 * ratio if p1 is None else p1
    if not 0.0 < p0 < p1 < 1.0:
        # A doubling of a rate already above 1/2 cannot be represented: aim at the midpoint
        # to 1 instead so the chart still has a direction.
        p1 = (p0 + 1.0) / 2.0 if p1 >= 1.0 else p1
    if not 0.0 < p0 < p1 < 1.0:
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}")
    return p1


class _Cusum:
    """Shared recursion: S = max(0, S + llr); alarm when S > h; optional reset and cap."""

    def __init__(self, reset: bool, cap_factor: float | None) -> None:
        self.reset = reset
        self.cap_factor = cap_factor
        self.statistic = 0.0
        self.threshold = math.nan
        self.alarms = 0
        self._run_start: int | None = None  # the change-point estimate

    def _step(self, llr: float, rnd: int) -> tuple[bool, int | None]:
        s = max(0.0, self.statistic + llr)
        if s == 0.0:
            self._run_start = None
        elif self._run_start is None:
            self._run_start = rnd
        if self.cap_factor is not None:
            s = min(s, self.cap_factor * self.threshold)
        self.statistic = s
        alarm = s > self.threshold
        change = self._run_start
        if alarm:
            self.alarms += 1
            if self.reset:
                self.statistic = 0.0
                self._run_start = None
        return alarm, change


class BinomialCusum(_Cusum):
    """One-sided upper CUSUM per round on (x successes of n), e.g. blocked of checked.

    p0 given, or estimated from the first `warmup` rounds with data (no alarms meanwhile). The
    alternative is p1, or `ratio` * p0. The threshold is calibrated for `n_typical` checks per
    round (given, else the mean n of the warm-up, else the first round's n): rounds of other sizes
    still add their exact log-likelihood ratio, only the ARL0 calibration assumes n_typical.
    `reset` restarts the statistic after an alarm (counting alarms); `cap_factor` (with
    reset=False) caps the statistic at cap_factor*h so that an alarm clears within a few rounds
    once the rate is back to normal.
    """

    def __init__(self, p0: float | None = None, p1: float | None = None, *,
                 ratio: float = DEFAULT_RATIO, arl0: float = DEFAULT_ARL0_ROUNDS,
                 n_typical: int | None = None, warmup: int = DEFAULT_WARMUP_ROUNDS,
                 reset: bool = True, cap_factor: float | None = None) -> None:
        super().__init__(reset, cap_factor)
        if ratio <= 1.0:
            raise ValueError(f"ratio must be > 1, got {ratio}")
        if arl0 <= 1.0:
            raise ValueError(f"arl0 must be > 1, got {arl0}")
        self.ratio = ratio
        self.arl0 = arl0
        self.n_typical = n_typical
        self.warmup = warmup
        self.p0 = p0
        self.p1 = p1
        self._given_p1 = p1
        self._est: tuple[int, int] | None = None
        self._warm_x = 0
        self._warm_n = 0
        self._warm_rounds = 0
        self._round = -1
        self._a = self._c = 0.0
        if p0 is not None:
            self.p1 = _alternative(p0, p1, ratio)
            if n_typical is not None:
                self._calibrate(n_typical)

    def _calibrate(self, n: int) -> None:
        assert self.p0 is not None and self.p1 is not None
        self._a, self._c = _llr_steps(self.p0, self.p1)
        self.threshold = binomial_cusum_threshold(self.p0, self.p1, max(1, int(n)), self.arl0,
                                                  self._est)

    @property
    def ready(self) -> bool:
        return not math.isnan(self.threshold)

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
                if self._warm_rounds < self.warmup:
                    return DetectorState(rnd, 0.0, math.nan, False, None, True, rate)
                self.p0 = _estimate(self._warm_x, self._warm_n)
                self.p1 = _alternative(self.p0, self._given_p1, self.ratio)
                self._est = (self._warm_x, self._warm_n)
                self._calibrate(self.n_typical or round_half(self._warm_n / self._warm_rounds))
                # The warm-up rounds defined "normal": they are not scored again.
                return DetectorState(rnd, 0.0, self.threshold, False, None, False, rate, self.p0)
            if n == 0:
                return DetectorState(rnd, 0.0, math.nan, False, None, False, rate, self.p0)
            self._calibrate(self.n_typical or n)
        if n == 0:
            return DetectorState(rnd, self.statistic, self.threshold, False, None, False, rate,
                                 self.p0)
        alarm, change = self._step(x * self._a + (n - x) * self._c, rnd)
        return DetectorState(rnd, self.statistic, self.threshold, alarm,
                             change if alarm else self._run_start, False, rate, self.p0)


def round_half(v: float) -> int:
    return int(math.floor(v + 0.5))


class BernoulliCusum(_Cusum):
    """One-sided upper CUSUM per action bit (live streams); ARL0 counted in actions."""

    def __init__(self, p0: float | None = None, p1: float | None = None, *,
                 ratio: float = DEFAULT_RATIO, arl0: float = DEFAULT_ARL0_ACTIONS,
                 warmup: int = DEFAULT_WARMUP_ACTIONS, reset: bool = True,
                 cap_factor: float | None = None) -> None:
        super().__init__(reset, cap_factor)
        if ratio <= 1.0:
            raise ValueError(f"ratio must be > 1, got {ratio}")
        self.ratio = ratio
        self.arl0 = arl0
        self.warmup = warmup
        self.p0 = p0
        self.p1 = p1
        self._given_p1 = p1
        self._warm_x = 0
        self._warm_n = 0
        self._index = -1
        self._a = self._c = 0.0
        if p0 is not None:
            self.p1 = _alternative(p0, p1, ratio)
            self._calibrate(None)

    def _calibrate(self, est: tuple[int, int] | None) -> None:
        assert self.p0 is not None and self.p1 is not None
        self._a, self._c = _llr_steps(self.p0, self.p1)
        self.threshold = bernoulli_cusum_threshold(self.p0, self.p1, self.arl0, est)

    def update(self, bit: int | bool, index: int | None = None) -> DetectorState:
        idx = self._index + 1 if index is None else index
        self._index = idx
        b = 1 if bit else 0
        if math.isnan(self.threshold):
            self._warm_x += b
            self._warm_n += 1
            if self._warm_n < self.warmup:
                return DetectorState(idx, 0.0, math.nan, False, None, True, float(b))
            self.p0 = _estimate(self._warm_x, self._warm_n)
            self.p1 = _alternative(self.p0, self._given_p1, self.ratio)
            self._calibrate((self._warm_x, self._warm_n))
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


def mann_kendall(y: Sequence[float] | np.ndarray) -> MannKendall:
    """Mann-Kendall trend test for a series in time order, with the ties correction."""
    arr = np.asarray(y, dtype=float)
    n = arr.size
    if n < 2:
        return MannKendall(0, 0.0, 0.0, 1.0, 0.0, n)
    iu, ju = np.triu_indices(n, 1)
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
              level: float = 0.95) -> TheilSen:
    """Median of pairwise slopes, intercept median(y - slope*t), and Sen's confidence interval."""
    arr = np.asarray(y, dtype=float)
    n = arr.size
    tt = np.arange(n, dtype=float) if t is None else np.asarray(t, dtype=float)
    if n < 2:
        return TheilSen(math.nan, math.nan, math.nan, math.nan, n)
    iu, ju = np.triu_indices(n, 1)
    dt = tt[ju] - tt[iu]
    keep = dt != 0
    slopes = np.sort((arr[ju] - arr[iu])[keep] / dt[keep])
    if slopes.size == 0:
        return TheilSen(math.nan, math.nan, math.nan, math.nan, n)
    slope = float(np.median(slopes))
    intercept = float(np.median(arr - slope * tt))
    big_n = slopes.size
    var_s = mann_kendall(arr).var_s
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
        ts = theil_sen(y, t, level=1.0 - self.alpha)
        mk = mann_kendall(y)
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
    "BernoulliCusum", "BinomialCusum", "CoverageDrop", "DEFAULT_ARL0_ACTIONS",
    "DEFAULT_ARL0_ROUNDS", "DEFAULT_RATIO", "DEFAULT_WARMUP_ACTIONS", "DEFAULT_WARMUP_ROUNDS",
    "DetectorState", "GapState", "GapTrend", "MannKendall", "TheilSen", "TrendDetector",
    "TrendState", "bernoulli_cusum_threshold", "binomial_cusum_threshold",
    "block_bootstrap_mean_ci", "block_length", "cusum_arl_bernoulli", "cusum_arl_binomial",
    "mann_kendall", "theil_sen",
]
