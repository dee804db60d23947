"""Statistics across seeds: the replicates of an experiment are its seeds, not its rollouts.

Rollouts within one run share the run's seed (its environment, its agent's trajectory), so they
are correlated and an interval over them is too narrow (tests/analysis/test_seed_stats.py
measures how much). Here every interval is over per-seed values, as rliable does (Agarwal et
al. 2021): interquartile mean (IQM) and mean with stratified bootstrap percentile intervals,
probability of improvement, paired t intervals per round, an equivalence test (TOST) for gap
closure, and for drift detectors the empirical false-alarm rate with an exact Poisson interval
next to the stated ARL0, and detection delay quantiles.

Everything is pure (arrays in, frozen values out), seeded where random, and vectorised: a
bootstrap is one resampling of a (reps, seeds, tasks) index array, never a Python loop over reps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from .drift import DEFAULT_ARL0_ROUNDS, DEFAULT_RATIO, DEFAULT_WARMUP_ROUNDS, BinomialCusum
from .stats import percentiles, t_cdf, t_ppf

LEVEL: Final = 0.95
REPS: Final = 2000
# Bounds the (reps, n, m, tasks) comparison array of a probability-of-improvement bootstrap.
_POI_CHUNK_CELLS: Final = 4_000_000

Statistic = Literal["iqm", "mean"]


def _json_float(v: float) -> float | None:
    """JSON has no NaN or infinity: a value that is not a number is null."""
    return float(v) if math.isfinite(v) else None


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


# --- intervals -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval at `level`; n replicates (seeds) behind it."""

    point: float
    lo: float
    hi: float
    n: int
    level: float = LEVEL

    def to_json(self) -> dict[str, Any]:
        return {"point": _json_float(self.point), "lo": _json_float(self.lo),
                "hi": _json_float(self.hi), "n": self.n, "level": self.level}


def _scores(x: npt.ArrayLike) -> np.ndarray:
    """Seeds x tasks as a float matrix (a 1-d array is one task)."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 1:
        return arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"scores must be 1-d (seeds) or 2-d (seeds x tasks), got {arr.ndim}-d")
    return arr


def _rows_statistic(values: np.ndarray, statistic: Statistic) -> np.ndarray:
    """The statistic of each row of a 2-d array, NaN entries left out (NaN for no values).

    IQM is scipy.stats.trim_mean(row, 0.25): sort, drop floor(m/4) values at each end of the m
    finite ones, average the rest. A row mask instead of a slice keeps it one array operation
    when rows hold different numbers of finite values.
    """
    finite = np.isfinite(values)
    count = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if statistic == "mean":
            return np.where(finite, values, 0.0).sum(axis=1) / count
        if statistic != "iqm":
            raise ValueError(f"statistic must be 'iqm' or 'mean', got {statistic!r}")
        ordered = np.sort(np.where(finite, values, np.inf), axis=1)
        cut = count // 4
        pos = np.arange(values.shape[1])[None, :]
        keep = (pos >= cut[:, None]) & (pos < (count - cut)[:, None])
        return np.where(keep, ordered, 0.0).sum(axis=1) / (count - 2 * cut)


def iqm(x: npt.ArrayLike) -> float:
    """Interquartile mean (rliable): the 25%-trimmed mean of all values; NaN for none."""
    flat = np.asarray(x, dtype=float).ravel()
    return float(_rows_statistic(flat[None, :], "iqm")[0])


def _statistic(scores: np.ndarray, statistic: Statistic) -> float:
    return float(_rows_statistic(scores.reshape(1, -1), statistic)[0])


def _resample(scores: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified bootstrap samples, (reps, seeds, tasks): seeds drawn with replacement
    independently within each task (column), as rliable's StratifiedBootstrap."""
    n, tasks = scores.shape
    idx = rng.integers(0, n, size=(reps, n, tasks))
    return scores[idx, np.arange(tasks)]


def _percentile_bounds(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - level) / 2.0
    q = percentiles(samples, (tail, 100.0 - tail))
    return q[tail], q[100.0 - tail]


def bootstrap_ci(scores: npt.ArrayLike, statistic: Statistic = "iqm", *, reps: int = REPS,
                 level: float = LEVEL, seed: int = 0) -> Interval:
    """The statistic over all seeds (and tasks) with a stratified bootstrap percentile interval.

    Fewer than two seeds: no interval (lo = hi = NaN), a bootstrap of one value says nothing.
    """
    _check_level(level)
    mat = _scores(scores)
    n = mat.shape[0]
    point = _statistic(mat, statistic) if mat.size else math.nan
    if n < 2:
        return Interval(point, math.nan, math.nan, n, level)
    boot = _resample(mat, reps, np.random.default_rng(seed))
    lo, hi = _percentile_bounds(_rows_statistic(boot.reshape(reps, -1), statistic), level)
    return Interval(point, lo, hi, n, level)


def _two_arms(a: npt.ArrayLike, b: npt.ArrayLike, level: float
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """Both arms' score matrices (same tasks) and the replicates behind a comparison."""
    _check_level(level)
    ma, mb = _scores(a), _scores(b)
    if ma.shape[1] != mb.shape[1]:
        raise ValueError(f"a has {ma.shape[1]} tasks, b has {mb.shape[1]}")
    return ma, mb, min(ma.shape[0], mb.shape[0])


def bootstrap_difference(a: npt.ArrayLike, b: npt.ArrayLike, statistic: Statistic = "iqm", *,
                         reps: int = REPS, level: float = LEVEL, seed: int = 0) -> Interval:
    """statistic(a) - statistic(b), a and b resampled independently (each stratified per task).

    Independent resampling ignores a pairing by seed: when both arms of a seed share a seed
    effect the interval is conservative (paired_t_interval uses the pairing).
    """
    ma, mb, n = _two_arms(a, b, level)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    point = _statistic(ma, statistic) - _statistic(mb, statistic)
    if n < 2:
        return Interval(point, math.nan, math.nan, n, level)
    rng = np.random.default_rng(seed)
    boot_a = _rows_statistic(_resample(ma, reps, rng).reshape(reps, -1), statistic)
    boot_b = _rows_statistic(_resample(mb, reps, rng).reshape(reps, -1), statistic)
    lo, hi = _percentile_bounds(boot_a - boot_b, level)
    return Interval(point, lo, hi, n, level)


def _poi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y)/2 averaged over tasks, for a (..., n, tasks) and b (..., m, tasks);
    pairs with a NaN side are left out (the Mann-Whitney U / (n m) of each task's values)."""
    x, y = a[..., :, None, :], b[..., None, :, :]
    valid = np.isfinite(x) & np.isfinite(y)
    wins = np.where(valid, (x > y) + 0.5 * (x == y), 0.0).sum(axis=(-3, -2))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_task = wins / valid.sum(axis=(-3, -2))
    return np.asarray(per_task.mean(axis=-1))


def probability_of_improvement(a: npt.ArrayLike, b: npt.ArrayLike, *, reps: int = REPS,
                               level: float = LEVEL, seed: int = 0) -> Interval:
    """P(X > Y) + 0.5 P(X = Y), X a seed's score in a, Y in b, averaged over tasks (rliable),
    with a stratified bootstrap percentile interval. n = min(len(a), len(b))."""
    ma, mb, n = _two_arms(a, b, level)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    point = float(_poi(ma, mb))
    if n < 2:
        return Interval(point, math.nan, math.nan, n, level)
    rng = np.random.default_rng(seed)
    boot_a, boot_b = _resample(ma, reps, rng), _resample(mb, reps, rng)
    chunk = max(1, _POI_CHUNK_CELLS // (ma.shape[0] * mb.shape[0] * ma.shape[1]))
    boot = np.concatenate([_poi(boot_a[i:i + chunk], boot_b[i:i + chunk])
                           for i in range(0, reps, chunk)])
    lo, hi = _percentile_bounds(boot, level)
    return Interval(point, lo, hi, n, level)


# --- t intervals over seeds ----------------------------------------------------------------------

def _t_interval(mean: float, sd: float, n: int, level: float) -> Interval:
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, level)
    half = t_ppf((1.0 + level) / 2.0, n - 1) * sd / math.sqrt(n) if sd > 0 else 0.0
    return Interval(mean, mean - half, mean + half, n, level)


def _finite(x: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(x, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def paired_t_interval(d: npt.ArrayLike, level: float = LEVEL) -> Interval:
    """Mean of per-seed differences with a Student t interval (n - 1 df); NaN entries are left
    out. Fewer than two seeds: lo = hi = NaN."""
    _check_level(level)
    v = _finite(d)
    sd = float(v.std(ddof=1)) if v.size >= 2 else math.nan
    return _t_interval(float(v.mean()) if v.size else math.nan, sd, int(v.size), level)


def per_round_gap(a: npt.ArrayLike, b: npt.ArrayLike, level: float = LEVEL) -> list[Interval]:
    """Per round, the paired t interval of a[:, r] - b[:, r] (seeds x rounds, the same seeds
    in both arms); a seed without that round (NaN in either arm) is left out of that round."""
    _check_level(level)
    ma, mb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if ma.ndim != 2 or ma.shape != mb.shape:
        raise ValueError(f"a and b must be seeds x rounds of one shape, got {ma.shape} and "
                         f"{mb.shape}")
    d = ma - mb
    finite = np.isfinite(d)
    count = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, d, 0.0).sum(axis=0) / count
        dev = np.where(finite, d - mean[None, :], 0.0)
        sd = np.sqrt((dev * dev).sum(axis=0) / (count - 1))
    return [_t_interval(float(m), float(s), int(c), level) for m, s, c in zip(mean, sd, count)]


# --- equivalence (gap closure) --------------------------------------------------------------------

@dataclass(frozen=True)
class Equivalence:
    """Two one-sided t tests that the mean per-seed difference lies within +-margin."""

    margin: float
    mean: float
    lo: float  # the (1 - 2 alpha) t interval of the mean difference
    hi: float
    p_lower: float  # H0: mean <= -margin
    p_upper: float  # H0: mean >= +margin
    p: float  # max of the two
    equivalent: bool  # p < alpha
    alpha: float
    n: int

    def to_json(self) -> dict[str, Any]:
        return {"margin": self.margin, "mean": _json_float(self.mean),
                "lo": _json_float(self.lo), "hi": _json_float(self.hi),
                "p_lower": _json_float(self.p_lower), "p_upper": _json_float(self.p_upper),
                "p": _json_float(self.p), "equivalent": self.equivalent, "alpha": self.alpha,
                "n": self.n}


def tost(d: npt.ArrayLike, margin: float, alpha: float = 0.05) -> Equivalence:
    """TOST on per-seed differences d (NaN left out): equivalent when both one-sided nulls
    (mean <= -margin, mean >= +margin) are rejected at alpha, i.e. the (1 - 2 alpha) interval
    lies inside (-margin, +margin). Fewer than two seeds: nothing can be shown (p NaN)."""
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    v = _finite(d)
    n = int(v.size)
    mean = float(v.mean()) if n else math.nan
    if n < 2:
        return Equivalence(margin, mean, math.nan, math.nan, math.nan, math.nan, math.nan,
                           False, alpha, n)
    se = float(v.std(ddof=1)) / math.sqrt(n)
    if se == 0.0:
        # No spread: the mean is the difference of every seed, known exactly.
        p_lower = 0.0 if mean > -margin else 1.0
        p_upper = 0.0 if mean < margin else 1.0
        lo = hi = mean
    else:
        df = n - 1
        p_lower = 1.0 - t_cdf((mean + margin) / se, df)
        p_upper = t_cdf((mean - margin) / se, df)
        half = t_ppf(1.0 - alpha, df) * se
        lo, hi = mean - half, mean + half
    p = max(p_lower, p_upper)
    return Equivalence(margin, mean, lo, hi, p_lower, p_upper, p, p < alpha, alpha, n)


# --- drift detectors: false alarms and delays -----------------------------------------------------

@dataclass(frozen=True)
class AlarmRate:
    """Empirical false alarms per 1000 rounds with an exact Poisson interval, next to the
    rate the detector's ARL0 states."""

    alarms: int
    rounds: int
    per_1000: float  # alarms / rounds * 1000
    lo: float  # exact (Garwood) Poisson interval, per 1000 rounds
    hi: float
    stated_per_1000: float  # 1000 / arl0
    consistent: bool  # stated rate within [lo, hi]
    level: float

    def to_json(self) -> dict[str, Any]:
        return {"alarms": self.alarms, "rounds": self.rounds,
                "per_1000": _json_float(self.per_1000), "lo": _json_float(self.lo),
                "hi": _json_float(self.hi), "stated_per_1000": _json_float(self.stated_per_1000),
                "consistent": self.consistent, "level": self.level}


def _log_factorials(k: int) -> np.ndarray:
    """log(j!) for j = 0..k."""
    return np.concatenate(([0.0], np.cumsum(np.log(np.arange(1.0, k + 1.0)))))


def _poisson_cdf(log_fact: np.ndarray, mu: float) -> float:
    """P(X <= k), X ~ Poisson(mu), k = len(log_fact) - 1, summed in log space (no underflow
    for large k or mu)."""
    if mu <= 0.0:
        return 1.0
    logs = -mu + np.arange(log_fact.size) * math.log(mu) - log_fact
    top = float(logs.max())
    return min(1.0, math.exp(top) * float(np.exp(logs - top).sum()))


def _solve_mu(f: Callable[[float], float], target: float, hi: float) -> float:
    """mu in (0, hi] with f(mu) = target for f decreasing in mu, by bisection."""
    while f(hi) > target:
        hi *= 2.0
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def poisson_interval(k: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Garwood 1936) interval for a Poisson mean from k events: lo with
    P(X >= k) = (1-level)/2, hi with P(X <= k) = (1-level)/2; lo = 0 for k = 0."""
    _check_level(level)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    tail = (1.0 - level) / 2.0
    start = k + 10.0 + 10.0 * math.sqrt(k + 1.0)
    log_fact = _log_factorials(k)
    hi = _solve_mu(lambda mu: _poisson_cdf(log_fact, mu), tail, start)
    if k == 0:
        return 0.0, hi
    # P(X >= k) = 1 - P(X <= k - 1) grows with mu: solve its complement, which decreases.
    lo = _solve_mu(lambda mu: _poisson_cdf(log_fact[:-1], mu), 1.0 - tail, start)
    return lo, hi


def alarm_rate(alarms: int, rounds: int, arl0: float, level: float = LEVEL) -> AlarmRate:
    """False alarms per 1000 rounds with a Garwood interval; `consistent` says whether the
    stated 1000 / arl0 lies within it. No rounds: the rate and interval are NaN."""
    if alarms < 0 or rounds < 0:
        raise ValueError(f"need alarms >= 0 and rounds >= 0, got {alarms} and {rounds}")
    if not arl0 > 0:
        raise ValueError(f"arl0 must be > 0, got {arl0}")
    stated = 1000.0 / arl0
    if rounds == 0:
        return AlarmRate(alarms, 0, math.nan, math.nan, math.nan, stated, False, level)
    lo, hi = poisson_interval(alarms, level)
    scale = 1000.0 / rounds
    return AlarmRate(alarms, rounds, alarms * scale, lo * scale, hi * scale, stated,
                     lo * scale <= stated <= hi * scale, level)


def cusum_alarms(x: npt.ArrayLike, n: npt.ArrayLike, *, ratio: float = DEFAULT_RATIO,
                 arl0: float = DEFAULT_ARL0_ROUNDS, warmup: int = DEFAULT_WARMUP_ROUNDS,
                 rounds: Sequence[int] | npt.ArrayLike | None = None) -> list[int]:
    """The rounds at which the default rules' binomial CUSUM (adherence_drift, evasion_drift:
    p0 learnt from the warm-up, `ratio`, `arl0`, cap 2x the threshold) alarms, restarting after
    each alarm so that a long in-control run yields its false-alarm count.

    x, n: per-round counts (x events of n trials); `rounds`: the round numbers (default
    0..len-1). As the rules do, x is clipped to n.
    """
    xs, ns = np.asarray(x, dtype=float).ravel(), np.asarray(n, dtype=float).ravel()
    rs = (np.arange(xs.size) if rounds is None
          else np.asarray(rounds, dtype=np.int64).ravel())
    if not xs.size == ns.size == rs.size:
        raise ValueError(f"x, n and rounds differ in length: {xs.size}, {ns.size}, {rs.size}")
    det = BinomialCusum(ratio=ratio, arl0=arl0, warmup=warmup, reset=True, cap_factor=2.0)
    out: list[int] = []
    for r, xi, ni in zip(rs, xs, ns):
        n_int = int(ni)
        if det.update(min(int(xi), n_int), n_int, int(r)).alarm:
            out.append(int(r))
    return out


@dataclass(frozen=True)
class Delays:
    """Detection delays of detected changes (sorted) and the number never detected."""

    detected: int
    missed: int
    delays: tuple[int, ...]
    quantiles: dict[str, float | None]  # "p10", "p50", "p90", "max" (None when none detected)

    def to_json(self) -> dict[str, Any]:
        return {"detected": self.detected, "missed": self.missed, "delays": list(self.delays),
                "quantiles": dict(self.quantiles)}


def detection_delays(delays: Sequence[int | None]) -> Delays:
    """Quantiles (linear interpolation) of the delays; None = the change was never detected."""
    found = tuple(sorted(int(d) for d in delays if d is not None))
    missed = sum(1 for d in delays if d is None)
    if not found:
        return Delays(0, missed, (), {"p10": None, "p50": None, "p90": None, "max": None})
    q = percentiles(np.array(found, dtype=float), (10.0, 50.0, 90.0))
    return Delays(len(found), missed, found, {"p10": q[10.0], "p50": q[50.0], "p90": q[90.0],
                                              "max": float(found[-1])})


# --- trends ---------------------------------------------------------------------------------------

def slope_ci(x: npt.ArrayLike, y: npt.ArrayLike, level: float = LEVEL) -> Interval:
    """Ordinary least squares slope of y on x with its t interval (n - 2 df); pairs with a NaN
    are left out. Fewer than three points (or no spread in x): NaN bounds."""
    _check_level(level)
    xs, ys = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if xs.size != ys.size:
        raise ValueError(f"x and y differ in length: {xs.size} and {ys.size}")
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    n = int(xs.size)
    if n < 2:
        return Interval(math.nan, math.nan, math.nan, n, level)
    dx = xs - xs.mean()
    sxx = float(dx @ dx)
    if sxx == 0.0:
        return Interval(math.nan, math.nan, math.nan, n, level)
    slope = float(dx @ (ys - ys.mean())) / sxx
    if n < 3:
        return Interval(slope, math.nan, math.nan, n, level)
    resid = ys - ys.mean() - slope * dx
    se = math.sqrt(float(resid @ resid) / (n - 2) / sxx)
    half = t_ppf((1.0 + level) / 2.0, n - 2) * se if se > 0 else 0.0
    return Interval(slope, slope - half, slope + half, n, level)


__all__ = [
    "AlarmRate", "Delays", "Equivalence", "Interval", "LEVEL", "REPS", "alarm_rate",
    "bootstrap_ci", "bootstrap_difference", "cusum_alarms", "detection_delays", "iqm",
    "paired_t_interval", "per_round_gap", "poisson_interval", "probability_of_improvement",
    "slope_ci", "tost",
]
