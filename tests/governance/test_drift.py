"""Drift detectors and statistics: the must-show detection figures, seeded, plus exact checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tractatus_watch.analysis.drift import (DEFAULT_ARL0_ROUNDS, BernoulliCusum, BinomialCusum,
                                              CoverageDrop, GapTrend, TrendDetector,
                                              block_bootstrap_mean_ci, block_length, cusum_arl,
                                              design_bernoulli_cusum, design_binomial_cusum,
                                              mann_kendall, theil_sen)
from tractatus_watch.analysis.stats import (betainc, binom_pmf, binom_sf, gap_ci, mean_ci,
                                              norm_cdf, norm_ppf, percentile, percentiles, t_cdf,
                                              t_ppf, welch_gaps)

ROUNDS, CHANGE, CHECKS, P0, P1 = 80, 60, 500, 0.03, 0.06


def _make(p0_given: bool) -> BinomialCusum:
    if p0_given:
        return BinomialCusum(p0=P0, n_typical=CHECKS)
    return BinomialCusum()  # p0 estimated from a 10-round warm-up


def detection_run(p0_given: bool, runs: int = 100, seed: int = 60) -> tuple[int, list[int]]:
    """Blocked rate 3% -> 6% at round 60 (rounds 60.. drifted); delay = drifted rounds seen."""
    rng = np.random.default_rng(seed)
    detected, delays = 0, []
    for _ in range(runs):
        det = _make(p0_given)
        for t in range(ROUNDS):
            x = int(rng.binomial(CHECKS, P0 if t < CHANGE else P1))
            state = det.update(x, CHECKS, t)
            if state.alarm and t >= CHANGE:
                detected += 1
                delays.append(t - CHANGE + 1)
                break
    return detected, delays


def false_alarms_per_run(p0_given: bool, runs: int = 200, seed: int = 7) -> float:
    rng = np.random.default_rng(seed)
    total = 0
    for _ in range(runs):
        det = _make(p0_given)
        xs = rng.binomial(CHECKS, P0, size=ROUNDS)
        total += sum(det.update(int(x), CHECKS, t).alarm for t, x in enumerate(xs))
    return total / runs


# --- the must-show figures ------------------------------------------------------------------------

@pytest.mark.parametrize("p0_given", [True, False], ids=["p0-given", "p0-warmup"])
def test_doubling_of_blocked_rate_is_caught_fast(p0_given: bool) -> None:
    detected, delays = detection_run(p0_given)
    print(f"\n{'given' if p0_given else 'warm-up'}: detected {detected}/100, "
          f"median delay {np.median(delays)} rounds (round 60 = 1)")
    assert detected >= 95
    assert np.median(delays) <= 3


@pytest.mark.parametrize("p0_given", [True, False], ids=["p0-given", "p0-warmup"])
def test_false_alarms_stay_rare_at_default_arl0(p0_given: bool) -> None:
    rate = false_alarms_per_run(p0_given)
    print(f"\n{'given' if p0_given else 'warm-up'}: {rate:.3f} false alarms per 80 rounds")
    assert rate <= 0.1


# --- CUSUM calibration ----------------------------------------------------------------------------

def _simulate_lattice(design, n: int, p: float, runs: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    drain = design.drain_for(n)
    stat = np.zeros(runs)
    alive = np.ones(runs, bool)
    length = np.zeros(runs)
    t = 0
    while alive.any():
        t += 1
        stat = np.maximum(0, stat + design.units * rng.binomial(n, p, size=runs) - drain)
        hit = alive & (stat > design.top)
        length[hit] = t
        alive &= ~hit
    return float(length.mean()), float(length.std() / math.sqrt(runs))


def test_lattice_arl_is_exact_for_the_chart_that_runs() -> None:
    design = design_binomial_cusum(P0, P1, CHECKS, 300.0)
    assert design.method == "lattice"
    assert 300.0 <= design.arl < 345.0  # never below target, close above
    mean, se = _simulate_lattice(design, CHECKS, P0, runs=3000, seed=1)
    assert abs(mean - design.arl) < 4 * se


def test_default_design_and_out_of_control_arl() -> None:
    design = design_binomial_cusum(P0, P1, CHECKS, DEFAULT_ARL0_ROUNDS)
    # Counts move the statistic in steps, so the ARL is a step function of the threshold: the
    # design takes the first step at or above the target.
    assert DEFAULT_ARL0_ROUNDS <= design.arl < 1.25 * DEFAULT_ARL0_ROUNDS
    assert cusum_arl(design, P1) < 2.0  # a doubled rate is seen within ~2 rounds on average


def test_estimated_p0_raises_the_threshold() -> None:
    given = design_binomial_cusum(P0, P1, CHECKS, DEFAULT_ARL0_ROUNDS)
    est = design_binomial_cusum(P0, P1, CHECKS, DEFAULT_ARL0_ROUNDS, (150, 5000))
    assert est.h > given.h
    # At the estimate itself the ARL is above target: the extra is the price of not knowing p0.
    assert cusum_arl(est) > DEFAULT_ARL0_ROUNDS


def test_bernoulli_arl_matches_simulation() -> None:
    design = design_bernoulli_cusum(0.05, 0.10, 1500.0)
    assert design.method == "embedded"
    a, c = math.log(2.0), math.log(0.90 / 0.95)
    rng = np.random.default_rng(3)
    runs = 1500
    stat, alive, length, t = np.zeros(runs), np.ones(runs, bool), np.zeros(runs), 0
    while alive.any():
        t += 1
        stat = np.maximum(0.0, stat + np.where(rng.random(runs) < 0.05, a, c))
        hit = alive & (stat > design.h)
        length[hit] = t
        alive &= ~hit
    se = length.std() / math.sqrt(runs)
    assert abs(length.mean() - design.arl) < max(4 * se, 0.05 * design.arl)


def test_bernoulli_cusum_catches_a_doubling_in_a_stream() -> None:
    rng = np.random.default_rng(5)
    det = BernoulliCusum(p0=0.03, arl0=50_000)
    bits = np.concatenate([rng.random(20_000) < 0.03, rng.random(5_000) < 0.06])
    alarms = det.feed(bool(b) for b in bits)
    assert alarms, "the doubling after action 20000 was missed"
    first_after = [s.round for s in alarms if s.round >= 20_000]
    assert first_after and first_after[0] - 20_000 < 2_500
    assert alarms[0].change_round is not None


def test_bernoulli_warmup_estimates_p0() -> None:
    det = BernoulliCusum(warmup=1000)
    rng = np.random.default_rng(2)
    states = [det.update(bool(b)) for b in rng.random(1500) < 0.05]
    assert states[0].warming_up and not states[-1].warming_up
    assert det.p0 is not None and 0.03 < det.p0 < 0.07
    assert math.isfinite(det.threshold)


def test_change_round_estimate_points_at_the_change() -> None:
    rng = np.random.default_rng(11)
    det = BinomialCusum(p0=P0, n_typical=CHECKS)
    for t in range(ROUNDS):
        s = det.update(int(rng.binomial(CHECKS, P0 if t < CHANGE else 0.09)), CHECKS, t)
        if s.alarm and t >= CHANGE:
            assert s.change_round is not None and CHANGE - 3 <= s.change_round <= t
            return
    pytest.fail("no alarm")


def test_warmup_without_events_falls_back_to_the_floor() -> None:
    det = BinomialCusum(p_floor=1e-3)
    states = [det.update(0, 1000, t) for t in range(12)]
    assert states[3].warming_up and not states[-1].warming_up
    assert det.p0 == pytest.approx(1e-3)
    # 1% evasions from then on is far above a doubling of the floor: caught.
    s = det.update(10, 1000, 12)
    s = det.update(10, 1000, 13) if not s.alarm else s
    assert s.alarm


def test_rounds_without_checks_change_nothing() -> None:
    det = BinomialCusum(p0=P0, n_typical=CHECKS)
    det.update(40, 500, 0)
    before = det.statistic
    s = det.update(0, 0, 1)
    assert s.statistic == before and not s.alarm and math.isnan(s.rate)


def test_cap_lets_an_alarm_clear_after_the_rate_returns() -> None:
    det = BinomialCusum(p0=P0, n_typical=CHECKS, reset=False, cap_factor=2.0)
    for t in range(30):
        det.update(45, 500, t)  # 9%: deep in alarm, statistic capped
    assert det.statistic == pytest.approx(2 * det.threshold)
    cleared = None
    for t in range(30, 60):
        if not det.update(15, 500, t).alarm:
            cleared = t
            break
    assert cleared is not None and cleared - 30 <= 5


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        BinomialCusum(p0=0.03, ratio=1.0)
    with pytest.raises(ValueError):
        BinomialCusum(p0=0.03).update(5, 3)
    with pytest.raises(ValueError):
        design_binomial_cusum(0.06, 0.03, 500)


def test_coverage_drop() -> None:
    det = CoverageDrop()
    assert not det.update(500, 500, 0).alarm
    assert not det.update(0, 0, 1).alarm  # no data: no verdict
    s = det.update(499, 500, 2)
    assert s.alarm and s.statistic == pytest.approx(0.998)
    assert not CoverageDrop(threshold=0.99).update(499, 500).alarm


# --- trends ---------------------------------------------------------------------------------------

def test_mann_kendall_hand_computed() -> None:
    mk = mann_kendall([1, 2, 3, 4, 5])
    # S = 10 pairs all rising; var = 5*4*15/18; z = (S - 1)/sqrt(var).
    assert mk.s == 10
    assert mk.var_s == pytest.approx(50 / 3)
    assert mk.z == pytest.approx(9 / math.sqrt(50 / 3))
    assert mk.p == pytest.approx(2 * (1 - norm_cdf(9 / math.sqrt(50 / 3))))
    assert mk.tau == pytest.approx(1.0)
    # With a tie: pairs of [1, 2, 2, 3] give +,+,+,0,+,+ -> S = 5; the tied pair removes
    # 2*1*9 from n(n-1)(2n+5) = 156, so var = 138/18.
    tied = mann_kendall([1, 2, 2, 3])
    assert tied.s == 5
    assert tied.var_s == pytest.approx(138 / 18)
    assert tied.z == pytest.approx(4 / math.sqrt(138 / 18))
    falling = mann_kendall([5, 3, 4, 1])
    assert falling.s == -4 and falling.z == pytest.approx(-3 / math.sqrt(4 * 3 * 13 / 18))
    assert mann_kendall([2, 2, 2]).p == 1.0


def test_theil_sen_hand_computed() -> None:
    ts = theil_sen([1, 3, 5, 7, 9])
    assert ts.slope == pytest.approx(2.0) and ts.intercept == pytest.approx(1.0)
    # Pairwise slopes of [1, 2, 2, 3] at t = 0..3: 1, 1/2, 2/3, 0, 1/2, 1 -> median 7/12.
    ts2 = theil_sen([1, 2, 2, 3])
    assert ts2.slope == pytest.approx(7 / 12)
    # An outlier barely moves it: the six slopes among 0, 1, 2, 3 are 1, the four to (4, 40)
    # are 10, 13, 19, 37 -> the median of ten is 1 (least squares would give 7.6).
    assert theil_sen([0, 1, 2, 3, 40]).slope == pytest.approx(1.0)
    # Uneven times are honoured.
    assert theil_sen([0, 2, 6], t=[0, 1, 3]).slope == pytest.approx(2.0)
    big = theil_sen(np.arange(40) * 0.5 + np.random.default_rng(0).normal(0, 0.1, 40))
    assert big.lo < 0.5 < big.hi


def test_block_bootstrap_is_seeded_and_sensible() -> None:
    assert block_length(8) == 2 and block_length(1000) == 10
    y = np.random.default_rng(4).normal(1.0, 0.5, 64)
    lo, hi = block_bootstrap_mean_ci(y, 0.9, 2000, np.random.default_rng(9))
    assert lo < y.mean() < hi and hi - lo < 0.5
    again = block_bootstrap_mean_ci(y, 0.9, 2000, np.random.default_rng(9))
    assert (lo, hi) == again


def _gaps(kind: str, seed: int, rounds: int = 100) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(rounds)
    noise = rng.normal(0.0, 0.02, rounds)
    if kind == "closing":
        return -0.10 * np.clip(1.0 - t / 60.0, 0.0, 1.0) + noise
    return -0.05 + noise


def test_gap_closure_declared_for_a_closing_gap_only() -> None:
    for seed in range(12):
        closing = GapTrend(seed=seed)
        states = [closing.update(float(g), t) for t, g in enumerate(_gaps("closing", seed))]
        closed_at = next((s.round for s in states if s.closed), None)
        assert closed_at is not None and closed_at >= 50, (seed, closed_at)
        persistent = GapTrend(seed=seed)
        assert not any(persistent.update(float(g), t).closed
                       for t, g in enumerate(_gaps("persistent", seed))), seed


def test_gap_widening_trend() -> None:
    rng = np.random.default_rng(8)
    det = TrendDetector(-1, window=30, alpha=0.01)
    states = [det.update(-0.02 - 0.003 * t + rng.normal(0, 0.01), t) for t in range(40)]
    assert states[-1].alarm and states[-1].slope < 0
    flat = TrendDetector(-1, window=30, alpha=0.01)
    assert not any(flat.update(-0.05 + rng.normal(0, 0.01), t).alarm for t in range(40))


def test_latency_trend_needs_a_material_rise() -> None:
    rng = np.random.default_rng(3)
    rising = TrendDetector(1, min_growth=0.1)
    assert rising.update(0) and any(
        rising.update(400 + 5 * t + rng.normal(0, 5), t).alarm for t in range(1, 30))
    # Significant but tiny (0.1% per round over 30 rounds = 3%): no alarm with min_growth 10%.
    tiny = TrendDetector(1, min_growth=0.1)
    assert not any(tiny.update(400 + 0.4 * t + rng.normal(0, 0.05), t).alarm
                   for t in range(30))


# --- stats ---------------------------------------------------------------------------------------

def test_quantiles_against_table_values() -> None:
    assert norm_ppf(0.975) == pytest.approx(1.959963984540054, abs=1e-12)
    assert norm_ppf(0.001) == pytest.approx(-3.090232306167813, abs=1e-10)
    assert t_ppf(0.975, 1) == pytest.approx(12.706204736, abs=1e-6)
    assert t_ppf(0.975, 10) == pytest.approx(2.228138852, abs=1e-8)
    assert t_ppf(0.995, 30) == pytest.approx(2.749995652, abs=1e-7)
    assert t_cdf(2.228138852, 10) == pytest.approx(0.975, abs=1e-9)
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-12)  # 1 - (1-x)^3 (1+3x)


def test_binomial_helpers() -> None:
    assert binom_pmf(4, 0.5) == pytest.approx([1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16])
    assert binom_sf(3, 10, 0.5) == pytest.approx(1 - (1 + 10 + 45) / 1024)
    assert binom_pmf(100_000, 0.03).sum() == pytest.approx(1.0)


def test_mean_and_gap_ci_from_sums() -> None:
    values = np.array([0.9, 0.85, 0.95, 0.8, 0.92])
    m = mean_ci(5, values.sum(), (values ** 2).sum())
    half = t_ppf(0.975, 4) * values.std(ddof=1) / math.sqrt(5)
    assert m.mean == pytest.approx(values.mean())
    assert (m.lo, m.hi) == pytest.approx((values.mean() - half, values.mean() + half))
    g = np.array([0.88, 0.90, 0.86, 0.91, 0.89, 0.87])
    u = np.array([0.95, 0.93, 0.96, 0.92, 0.94])
    gap = gap_ci(len(g), g.sum(), (g ** 2).sum(), len(u), u.sum(), (u ** 2).sum())
    vg, vu = g.var(ddof=1) / len(g), u.var(ddof=1) / len(u)
    df = (vg + vu) ** 2 / (vg ** 2 / (len(g) - 1) + vu ** 2 / (len(u) - 1))
    diff = g.mean() - u.mean()
    assert gap.absolute == pytest.approx(diff)
    assert gap.relative == pytest.approx(diff / u.mean())
    assert gap.df == pytest.approx(df)
    assert gap.hi - gap.absolute == pytest.approx(t_ppf(0.975, df) * math.sqrt(vg + vu))
    assert gap.hi < 0  # governed is clearly lower here
    one = gap_ci(1, 0.9, 0.81, 5, u.sum(), (u ** 2).sum())
    assert one.lo == -math.inf and one.hi == math.inf


def test_welch_gaps_per_round_equal_the_scalar_gap() -> None:
    """The Overview's band (one interval per round) and the report's gap: one formula, also
    at the edges: no values, one value, no spread."""
    rounds = [(6, 5.31, 4.70, 5, 4.70, 4.42), (0, 0.0, 0.0, 5, 4.7, 4.42),
              (1, 0.9, 0.81, 5, 4.7, 4.42), (3, 1.5, 0.75, 4, 2.0, 1.0),
              (4, 3.0, 2.5, 0, 0.0, 0.0), (2, 1.0, 0.5, 2, 1.8, 1.62)]
    cols = np.array(rounds, dtype=float).T
    diff, lo, hi, se, df = welch_gaps(*cols)
    for i, r in enumerate(rounds):
        g = gap_ci(*r)
        assert [g.absolute, g.lo, g.hi, g.se, g.df] == pytest.approx(
            [diff[i], lo[i], hi[i], se[i], df[i]], nan_ok=True)
    assert math.isnan(diff[1]) and lo[2] == -math.inf and lo[3] == hi[3] == diff[3]
    assert lo[0] < diff[0] < hi[0] and se[3] == 0.0 and df[3] == math.inf


def test_percentiles() -> None:
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert math.isnan(percentile([], 50))
    assert percentiles([1, 2, 3, 4, float("nan")], [0, 100]) == {0: 1.0, 100: 4.0}
