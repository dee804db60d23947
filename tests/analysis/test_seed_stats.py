"""Statistics across seeds: coverage on synthetic seeds with a known gap, and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tractatus_watch.analysis.alerts import evaluate_detector
from tractatus_watch.analysis.seed_stats import (LEVEL, AlarmRate, Interval, alarm_rate,
                                                   bootstrap_ci, bootstrap_difference,
                                                   cusum_alarms, detection_delays, iqm,
                                                   paired_t_interval, per_round_gap,
                                                   poisson_interval,
                                                   probability_of_improvement, slope_ci, tost)
from tractatus_watch.analysis.stats import gap_ci, t_cdf, t_ppf

# --- the must-show: coverage over seeds vs Welch over rollouts ------------------------------------

SEEDS, ROLLOUTS, SD_SEED, SD_ROLLOUT, TRUE_GAP, REPETITIONS = 10, 20, 1.0, 1.0, -0.5, 200


def _synthetic_arms(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rewards (seeds x rollouts) of both arms: each (arm, seed) run has its own effect, shared
    by its rollouts, so rollouts within a seed are correlated; the arms differ by TRUE_GAP."""
    effect_g = TRUE_GAP + SD_SEED * rng.standard_normal(SEEDS)
    effect_u = SD_SEED * rng.standard_normal(SEEDS)
    governed = effect_g[:, None] + SD_ROLLOUT * rng.standard_normal((SEEDS, ROLLOUTS))
    ungoverned = effect_u[:, None] + SD_ROLLOUT * rng.standard_normal((SEEDS, ROLLOUTS))
    return governed, ungoverned


def _welch_over_rollouts(g: np.ndarray, u: np.ndarray) -> tuple[float, float]:
    """The interval the report gives today: all rollouts of an arm pooled into (n, sum, sum sq)."""
    gap = gap_ci(g.size, float(g.sum()), float((g * g).sum()),
                 u.size, float(u.sum()), float((u * u).sum()))
    return gap.lo, gap.hi


def test_seed_intervals_cover_the_true_gap_and_welch_over_rollouts_does_not() -> None:
    rng = np.random.default_rng(16)
    methods = ("bootstrap_iqm", "bootstrap_mean", "paired_t", "welch_rollouts")
    covered = dict.fromkeys(methods, 0)
    width = dict.fromkeys(methods, 0.0)
    for rep in range(REPETITIONS):
        g, u = _synthetic_arms(rng)
        per_seed_g, per_seed_u = g.mean(axis=1), u.mean(axis=1)
        bounds = {
            "bootstrap_iqm": bootstrap_difference(per_seed_g, per_seed_u, "iqm", seed=rep),
            "bootstrap_mean": bootstrap_difference(per_seed_g, per_seed_u, "mean", seed=rep),
            "paired_t": paired_t_interval(per_seed_g - per_seed_u),
        }
        spans = {k: (iv.lo, iv.hi) for k, iv in bounds.items()}
        spans["welch_rollouts"] = _welch_over_rollouts(g, u)
        for k, (lo, hi) in spans.items():
            covered[k] += lo <= TRUE_GAP <= hi
            width[k] += (hi - lo) / REPETITIONS
    coverage = {k: covered[k] / REPETITIONS for k in methods}
    print("coverage", coverage, "mean width", {k: round(w, 3) for k, w in width.items()})
    # Nominal 95%: the seed-level intervals are honest.
    assert 0.90 <= coverage["bootstrap_iqm"] <= 0.99
    assert 0.90 <= coverage["paired_t"] <= 0.99
    # The percentile bootstrap of a mean of 10 values is known to run a little narrow (its
    # spread is the plug-in one, sqrt(9/10) of the sample's, with normal quantiles): ~92%.
    assert 0.86 <= coverage["bootstrap_mean"] <= 0.99
    # Pooling correlated rollouts as if independent: far too narrow, far below nominal.
    assert coverage["welch_rollouts"] < 0.70
    assert width["welch_rollouts"] < 0.4 * min(width["bootstrap_iqm"], width["paired_t"])


# --- IQM and the bootstrap ------------------------------------------------------------------------

def test_iqm_known_answers() -> None:
    assert iqm(np.arange(100)) == pytest.approx(49.5)
    # Skewed: the mean of k^2 for k = 25..74, (S(74) - S(24)) / 50 with S(n) = n(n+1)(2n+1)/6.
    assert iqm(np.arange(100) ** 2) == pytest.approx((137825 - 4900) / 50)
    # 4 values: one trimmed at each end (trim_mean(x, 0.25)), not the plain mean 4.
    assert iqm([10, 1, 3, 2]) == pytest.approx(2.5)
    # 8 values: floor(8/4) = 2 trimmed at each end, the mean of 3, 4, 5, 6.
    assert iqm([100, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    # 10 values: 2 trimmed at each end (floor(2.5)), the mean of the six in the middle.
    assert iqm([-50, 9, 1, 8, 2, 7, 3, 6, 4, 500]) == pytest.approx((2 + 3 + 4 + 6 + 7 + 8) / 6)
    # All values of a seeds x tasks matrix count; NaN (a seed without data) is left out.
    assert iqm(np.arange(100).reshape(25, 4)) == pytest.approx(49.5)
    assert iqm([1.0, 2.0, math.nan, 3.0]) == pytest.approx(2.0)
    assert math.isnan(iqm([]))


def test_bootstrap_ci_point_interval_and_stratification() -> None:
    scores = np.array([0.61, 0.72, 0.55, 0.80, 0.66, 0.70, 0.58, 0.75, 0.69, 0.63])
    iv = bootstrap_ci(scores, "iqm", seed=3)
    assert iv.point == pytest.approx(iqm(scores)) and iv.n == 10 and iv.level == LEVEL
    assert scores.min() <= iv.lo < iv.point < iv.hi <= scores.max()
    assert bootstrap_ci(scores, "iqm", seed=3) == iv  # seeded
    mean = bootstrap_ci(scores, "mean", seed=3)
    assert mean.point == pytest.approx(scores.mean())
    # Stratified: each task keeps its own seeds, so a task always at 0 and one always at 100
    # give a mean of exactly 50 in every resample; resampling the pooled values would not.
    two_tasks = np.column_stack([np.zeros(5), np.full(5, 100.0)])
    strat = bootstrap_ci(two_tasks, "mean", seed=0)
    assert (strat.point, strat.lo, strat.hi, strat.n) == (50.0, 50.0, 50.0, 5)
    one = bootstrap_ci([0.5], "iqm")
    assert one.point == 0.5 and math.isnan(one.lo) and math.isnan(one.hi)
    assert one.to_json() == {"point": 0.5, "lo": None, "hi": None, "n": 1, "level": 0.95}


def test_bootstrap_difference_of_two_arms() -> None:
    a = np.array([1.0, 1.2, 0.9, 1.1, 1.05])
    b = a - 1.0
    iv = bootstrap_difference(a, b, "mean", seed=1)
    assert iv.point == pytest.approx(1.0) and iv.n == 5
    assert iv.lo < 1.0 < iv.hi and iv.lo > 0.6 and iv.hi < 1.4
    with pytest.raises(ValueError, match="tasks"):
        bootstrap_difference(np.zeros((3, 2)), np.zeros((3, 1)))


# --- probability of improvement -------------------------------------------------------------------

def test_probability_of_improvement_known_answers() -> None:
    high, low = np.arange(10.0, 20.0), np.arange(0.0, 10.0)
    assert probability_of_improvement(high, low) == Interval(1.0, 1.0, 1.0, 10)
    assert probability_of_improvement(low, high) == Interval(0.0, 0.0, 0.0, 10)
    same = probability_of_improvement(low, low, seed=2)
    assert same.point == 0.5 and same.lo < 0.5 < same.hi
    # By hand: 3>1, 3<4, 4>1, 4=4 (half), 5>1, 5>4: 4.5 of 6 pairs.
    assert probability_of_improvement([3, 4, 5], [1, 4]).point == pytest.approx(0.75)
    # Tasks are averaged: 0.75 on the first, 1.0 on the second.
    two = probability_of_improvement([[3, 10], [4, 11], [5, 12]], [[1, 0], [4, 1]])
    assert two.point == pytest.approx(0.875) and two.n == 2


# --- t intervals over seeds -----------------------------------------------------------------------

def test_paired_t_interval_known_answer() -> None:
    iv = paired_t_interval([1.0, 2.0, 3.0, 4.0])
    half = t_ppf(0.975, 3) * math.sqrt(5.0 / 3.0) / 2.0  # sd^2 = 5/3, n = 4
    assert (iv.point, iv.n) == (2.5, 4)
    assert iv.lo == pytest.approx(2.5 - half) and iv.hi == pytest.approx(2.5 + half)
    assert half == pytest.approx(2.05426, abs=1e-5)
    one = paired_t_interval([0.3, math.nan])
    assert one.point == 0.3 and one.n == 1 and math.isnan(one.lo) and math.isnan(one.hi)


def test_per_round_gap_is_a_paired_t_interval_per_round() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.8, 0.1, (6, 4)), rng.normal(0.9, 0.1, (6, 4))
    a[2, 3] = math.nan  # seed 2 has no round 3
    gaps = per_round_gap(a, b)
    assert len(gaps) == 4
    for r, iv in enumerate(gaps):
        expected = paired_t_interval((a[:, r] - b[:, r])[~np.isnan(a[:, r])])
        assert iv.n == expected.n
        assert (iv.point, iv.lo, iv.hi) == pytest.approx((expected.point, expected.lo,
                                                          expected.hi))
    assert [iv.n for iv in gaps] == [6, 6, 6, 5]
    with pytest.raises(ValueError, match="one shape"):
        per_round_gap(a, b[:, :3])


# --- equivalence ----------------------------------------------------------------------------------

def test_tost_known_answers() -> None:
    d = np.array([0.01, -0.02, 0.015, 0.0, -0.005, 0.02, -0.01, 0.005])
    eq = tost(d, margin=0.05)
    mean, se, df = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(d.size), d.size - 1
    assert eq.p_lower == pytest.approx(1.0 - t_cdf((mean + 0.05) / se, df))
    assert eq.p_upper == pytest.approx(t_cdf((mean - 0.05) / se, df))
    assert eq.p == max(eq.p_lower, eq.p_upper) and eq.p < 0.001
    assert eq.equivalent and eq.n == 8 and eq.alpha == 0.05
    assert eq.lo == pytest.approx(mean - t_ppf(0.95, df) * se)
    assert -0.05 < eq.lo < eq.mean < eq.hi < 0.05
    # A gap of ~0.1 against a margin of 0.05: clearly not closed.
    far = tost(d + 0.1, margin=0.05)
    assert not far.equivalent and far.p_upper > 0.99 and far.p == far.p_upper
    # Centred but too noisy for 3 seeds: the interval spills over the margin.
    noisy = tost([0.2, -0.2, 0.0], margin=0.1)
    assert not noisy.equivalent and noisy.hi > 0.1 and noisy.lo < -0.1
    assert tost([0.1], margin=0.5).to_json()["p"] is None
    with pytest.raises(ValueError, match="margin"):
        tost(d, margin=0.0)


# --- false alarm rates ----------------------------------------------------------------------------

def test_alarm_rate_poisson_interval_known_values() -> None:
    zero = alarm_rate(0, 5000, arl0=2000.0)
    assert zero.per_1000 == 0.0 and zero.lo == 0.0
    # No alarms: P(X = 0) = exp(-mu) = 2.5% at the upper bound.
    assert zero.hi == pytest.approx(-math.log(0.025) * 1000 / 5000, rel=1e-9)
    assert zero.stated_per_1000 == 0.5 and zero.consistent
    # Garwood's table (chi-square quantiles: chi2(0.025; 20) / 2, chi2(0.975; 22) / 2).
    assert poisson_interval(10) == pytest.approx((4.795389, 18.390356), abs=1e-5)
    assert poisson_interval(1) == pytest.approx((0.025318, 5.571643), abs=1e-5)
    too_many = alarm_rate(20, 5000, arl0=2000.0)
    assert too_many.per_1000 == 4.0 and not too_many.consistent
    assert too_many.lo == pytest.approx(poisson_interval(20)[0] / 5.0)
    assert isinstance(too_many, AlarmRate) and too_many.to_json()["consistent"] is False
    assert alarm_rate(0, 0, 2000.0).to_json()["per_1000"] is None


def test_poisson_interval_covers_at_least_nominally() -> None:
    # Exactly: the Garwood interval is conservative for every mean.
    for mu in (0.5, 1.0, 3.0, 7.5, 20.0):
        ks = np.arange(0, int(mu + 12 * math.sqrt(mu) + 15))
        log_pmf = -mu + ks * math.log(mu) - np.array([math.lgamma(k + 1.0) for k in ks])
        hit = np.array([lo <= mu <= hi for lo, hi in map(poisson_interval, ks)])
        assert 0.95 <= float(np.exp(log_pmf)[hit].sum()) <= 0.995
    # And in a simulation of alarm counts over 4000-round runs at 1 alarm per 1000 rounds.
    draws = np.random.default_rng(9).poisson(4.0, size=2000)
    rates = {int(k): alarm_rate(int(k), 4000, arl0=1000.0) for k in np.unique(draws)}
    share = float(np.mean([rates[int(k)].consistent for k in draws]))
    assert 0.95 <= share <= 0.995


# --- CUSUM alarms and detection delays ------------------------------------------------------------

def test_cusum_false_alarm_rate_matches_its_arl0() -> None:
    rng = np.random.default_rng(11)
    alarms, scored, runs, rounds = 0, 0, 20, 1000
    for _ in range(runs):
        x = rng.binomial(100, 0.05, size=rounds)
        alarms += len(cusum_alarms(x, np.full(rounds, 100), arl0=50.0))
        scored += rounds - 10  # the 10 warm-up rounds are never scored
    rate = alarm_rate(alarms, scored, arl0=50.0)
    print("in-control alarms per 1000 rounds", rate)
    # Stated 20 per 1000. The chart's ARL steps sit at or above the target, and each run
    # learns its own p0 (so runs differ a lot: 0 to 50 alarms): over 30-run batches the rate
    # measured 12-22, ~17 on average. The right order, and far from arl0=2000's 0.5.
    assert 0.5 * rate.stated_per_1000 <= rate.per_1000 <= 1.5 * rate.stated_per_1000


def test_cusum_detects_a_step_change_fast_and_like_the_alert_rule() -> None:
    rng = np.random.default_rng(60)
    change, rounds, delays, early = 60, 80, [], 0
    for _ in range(20):
        x = rng.binomial(500, np.where(np.arange(rounds) < change, 0.03, 0.06))
        alarms = cusum_alarms(x, np.full(rounds, 500))
        early += any(r < change for r in alarms)
        after = [r for r in alarms if r >= change]
        delays.append(after[0] - change + 1 if after else None)
    found = detection_delays(delays)
    assert found.missed == 0 and found.detected == 20 and early <= 2
    assert found.quantiles["p50"] is not None and found.quantiles["p50"] <= 3

    # The first alarm is the round at which the default adherence_drift rule starts firing.
    x = rng.binomial(500, np.where(np.arange(rounds) < change, 0.03, 0.06))
    n = np.full(rounds, 500)
    first = cusum_alarms(x, n)[0]
    params = {"x": "attempted", "n": "covered", "ratio": 2.0, "arl0": 2000.0, "warmup": 10}
    firing = [r for r in range(rounds) if evaluate_detector("adherence_drift", params, {
        "round": np.arange(r + 1), "attempted": x[:r + 1], "covered": n[:r + 1]})]
    assert firing and firing[0] == first
    # Round numbers are the caller's.
    assert cusum_alarms(x, n, rounds=np.arange(rounds) + 1000)[0] == first + 1000
    with pytest.raises(ValueError, match="length"):
        cusum_alarms(x, n[:-1])


def test_detection_delays_quantiles_and_missed() -> None:
    d = detection_delays([3, None, 1, 2, None, 10])
    assert (d.detected, d.missed, d.delays) == (4, 2, (1, 2, 3, 10))
    # Linear interpolation over 1, 2, 3, 10: p10 at position 0.3, p90 at 2.7.
    assert d.quantiles == pytest.approx({"p10": 1.3, "p50": 2.5, "p90": 7.9, "max": 10.0})
    none = detection_delays([None, None])
    assert (none.detected, none.missed) == (0, 2)
    assert none.to_json()["quantiles"] == {"p10": None, "p50": None, "p90": None, "max": None}


# --- slopes ---------------------------------------------------------------------------------------

def test_slope_ci_known_lines() -> None:
    exact = slope_ci([1, 10, 100, 1000], [3, 21, 201, 2001])
    assert (exact.point, exact.lo, exact.hi, exact.n) == (2.0, 2.0, 2.0, 4)
    # By hand: Sxy = 4.5, Sxx = 5, slope 0.9; residuals 0.1, 0.2, -0.7, 0.4, SSR 0.7.
    iv = slope_ci([0, 1, 2, 3], [0, 1, 1, 3])
    half = t_ppf(0.975, 2) * math.sqrt(0.7 / 2 / 5)
    assert iv.point == pytest.approx(0.9)
    assert (iv.lo, iv.hi) == pytest.approx((0.9 - half, 0.9 + half))
    assert half == pytest.approx(1.138375, abs=1e-6)
    two = slope_ci([0, 1], [0, 5])
    assert two.point == pytest.approx(5.0) and math.isnan(two.lo) and math.isnan(two.hi)
