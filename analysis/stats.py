"""Small statistics without scipy: tail functions, means and gaps from rollup sums, percentiles.

Rollups store (n, sum, sum of squares) per key, so every interval here starts from those three
numbers: a mean and its CI never needs the raw rewards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Literal, Sequence

import numpy as np

# --- normal --------------------------------------------------------------------------------------

_SQRT2 = math.sqrt(2.0)


def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT2)


def norm_sf(x: float) -> float:
    """Upper tail; erfc keeps its precision far out where 1 - cdf would round to 0."""
    return 0.5 * math.erfc(x / _SQRT2)


def norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def norm_ppf(p: float) -> float:
    """Inverse normal CDF by Newton steps on erfc, from a closed-form first guess."""
    if not 0.0 < p < 1.0:
        if p == 0.0:
            return -math.inf
        if p == 1.0:
            return math.inf
        raise ValueError(f"probability must be in [0, 1], got {p}")
    if p > 0.5:
        return -norm_ppf(1.0 - p)
    # Lower tail: a logistic-style guess is within ~0.1 everywhere, so a few Newton steps on
    # the exact CDF (computed in the tail through erfc) converge to machine precision.
    t = math.sqrt(-2.0 * math.log(p))
    x = -(t - (2.30753 + 0.27061 * t) / (1.0 + 0.99229 * t + 0.04481 * t * t))
    for _ in range(6):
        step = (norm_cdf(x) - p) / norm_pdf(x)
        x -= step
        if abs(step) < 1e-14 * max(1.0, abs(x)):
            break
    return x


# --- Student t (through the regularised incomplete beta function) --------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function, evaluated with modified Lentz."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = tiny if abs(d) < tiny else d
    d = 1.0 / d
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                + a * math.log(x) + b * math.log1p(-x))
    # The fraction converges fast only on one side of the mean; use the symmetry on the other.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    if math.isinf(df):
        return norm_cdf(t)
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_pdf(t: float, df: float) -> float:
    ln = (math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
          - (df + 1.0) / 2.0 * math.log1p(t * t / df))
    return math.exp(ln)


@lru_cache(maxsize=4096)
def _t_ppf_cached(p: float, df: float) -> float:
    x = norm_ppf(p)
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    x = min(max(x, lo), hi)
    for _ in range(100):
        f = t_cdf(x, df) - p
        if f > 0:
            hi = x
        else:
            lo = x
        step = f / max(t_pdf(x, df), 1e-300)
        if abs(step) < 1e-12 * max(1.0, abs(x)) or hi - lo < 1e-12 * max(1.0, abs(x)):
            return x - step
        nxt = x - step
        # Newton when it stays inside the bracket, bisection otherwise: always converges.
        x = nxt if lo < nxt < hi else 0.5 * (lo + hi)
    return x


def t_ppf(p: float, df: float) -> float:
    """Inverse Student-t CDF (df may be fractional, as Welch's is)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    if math.isinf(df) or df > 1e7:
        return norm_ppf(p)
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    # Welch df is fractional and varies every round: rounding keeps the cache useful and moves
    # the quantile by far less than the sampling error of the variance it came from.
    return _t_ppf_cached(p, round(df, 3))


# --- binomial -------------------------------------------------------------------------------------

def binom_pmf(n: int, p: float) -> np.ndarray:
    """P(X = x) for x = 0..n, X ~ Binomial(n, p), vectorised without a gamma ufunc.

    log pmf(x+1) - log pmf(x) = log((n-x)/(x+1)) + log(p/(1-p)), so a cumulative sum gives the
    whole log pmf; it is then shifted by its maximum to avoid underflow before normalising.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if p <= 0.0 or n == 0:
        out = np.zeros(n + 1)
        out[0] = 1.0
        return out
    if p >= 1.0:
        out = np.zeros(n + 1)
        out[n] = 1.0
        return out
    x = np.arange(n, dtype=float)
    steps = np.log((n - x) / (x + 1.0)) + math.log(p / (1.0 - p))
    logpmf = np.concatenate(([0.0], np.cumsum(steps)))
    logpmf -= logpmf.max()
    pmf = np.exp(logpmf)
    return pmf / pmf.sum()


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return float(binom_pmf(n, p)[k:].sum())


# --- means and gaps from rollup sums -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MeanCI:
    n: int
    mean: float
    sd: float
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class Gap:
    """Governed minus ungoverned mean: absolute, relative to the ungoverned mean, Welch CI."""

    absolute: float
    relative: float | None
    lo: float
    hi: float
    se: float
    df: float


def _var(n: float, total: float, sq_total: float) -> float:
    return float(_variances(np.array([n], dtype=float), np.array([total], dtype=float),
                            np.array([sq_total], dtype=float))[0])


def _variances(n: np.ndarray, total: np.ndarray, sq_total: np.ndarray) -> np.ndarray:
    """Sample variances from rollup sums; NaN below two values."""
    with np.errstate(divide="ignore", invalid="ignore"):
        # Sums of squares lose digits to cancellation when the mean is large: clamp at 0.
        return np.where(n >= 2, np.maximum(0.0, (sq_total - total * total / n) / (n - 1)),
                        np.nan)


def mean_ci(n: float, total: float, sq_total: float, level: float = 0.95,
            method: Literal["t", "normal"] = "t") -> MeanCI:
    """Mean with a t (or normal) interval from rollup sums; fewer than 2 values: infinite CI."""
    if n <= 0:
        return MeanCI(0, math.nan, math.nan, -math.inf, math.inf)
    mean = total / n
    var = _var(n, total, sq_total)
    if math.isnan(var):
        return MeanCI(int(n), mean, math.nan, -math.inf, math.inf)
    q = (t_ppf((1 + level) / 2, n - 1) if method == "t" else norm_ppf((1 + level) / 2))
    half = q * math.sqrt(var / n)
    return MeanCI(int(n), mean, math.sqrt(var), mean - half, mean + half)


def gap_ci(n_g: float, sum_g: float, sq_g: float, n_u: float, sum_u: float, sq_u: float,
           level: float = 0.95) -> Gap:
    """Welch interval for mean_g - mean_u (unequal variances, Welch-Satterthwaite df)."""
    a = np.array([[n_g], [sum_g], [sq_g], [n_u], [sum_u], [sq_u]], dtype=float)
    diff, lo, hi, se, df = (float(v[0]) for v in welch_gaps(a[0], a[1], a[2], a[3], a[4], a[5],
                                                            level=level))
    mean_u = sum_u / n_u if n_u > 0 else 0.0
    relative = diff / abs(mean_u) if n_g > 0 and mean_u != 0 else None
    return Gap(diff, relative, lo, hi, se, df)


def welch_gaps(n_g: np.ndarray, sum_g: np.ndarray, sq_g: np.ndarray, n_u: np.ndarray,
               sum_u: np.ndarray, sq_u: np.ndarray, level: float = 0.95
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """gap_ci over arrays of rollup sums (a chart's band has one per round): the gap, its
    interval's lo and hi, se and df. No values on a side: gap NaN; fewer than two: the
    interval is infinite (se, df NaN); no spread: lo = hi = gap (se 0, df inf)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.where((n_g > 0) & (n_u > 0), sum_g / n_g - sum_u / n_u, np.nan)
        a, b = _variances(n_g, sum_g, sq_g) / n_g, _variances(n_u, sum_u, sq_u) / n_u
        se = np.sqrt(a + b)
        denom = (np.where(a != 0, a * a / (n_g - 1), 0.0)
                 + np.where(b != 0, b * b / (n_u - 1), 0.0))
        df = np.where(se == 0, np.inf, (a + b) ** 2 / denom)
    known = ~np.isnan(se) & ~np.isnan(diff)
    spread = known & (se > 0)
    half = np.zeros(diff.shape)
    half[spread] = np.array([t_ppf((1 + level) / 2, float(d)) for d in df[spread]]) * se[spread]
    return (diff, np.where(known, diff - half, -np.inf), np.where(known, diff + half, np.inf),
            np.where(known, se, np.nan), np.where(known, df, np.nan))

# --- percentiles ----------------------------------------------------------------------------------

def percentile(values: Iterable[float] | np.ndarray, q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) ignoring NaNs; NaN for no values."""
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return math.nan
    return float(np.percentile(arr, q))


def percentiles(values: Iterable[float] | np.ndarray, qs: Sequence[float]) -> dict[float, float]:
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {q: math.nan for q in qs}
    return dict(zip(qs, (float(v) for v in np.percentile(arr, list(qs)))))


def median(values: Sequence[float] | np.ndarray) -> float:
    return percentile(values, 50.0)


__all__ = [
    "Gap", "MeanCI", "betainc", "binom_pmf", "binom_sf", "gap_ci", "mean_ci", "median",
    "norm_cdf", "norm_pdf", "norm_ppf", "norm_sf", "percentile", "percentiles", "t_cdf", "t_pdf",
    "t_ppf",
]
