"""The charts' scales and ticks, the fixed-scale sparklines, and how tables and the KPI
strip fit their width: values, on plain functions."""

from __future__ import annotations

import math

import polars as pl
import pytest
from rich.text import Text

from tractatus_watch.analysis.stats import gap_ci
from tractatus_watch.tui import fmt
from tractatus_watch.tui.data import reward_rounds
from tractatus_watch.tui.tab_bar import run_label
from tractatus_watch.tui.table import Fit, cut, fit_widths
from tractatus_watch.tui.chart import (_PercentAxis, _RoundAxis, ema, log_ticks, percent_ticks,
                                       round_ticks)
from tractatus_watch.tui.widgets import fit_strip


@pytest.mark.parametrize("lo,hi,max_ticks,expected", [
    (0, 4, 8, [0, 1, 2, 3, 4]),            # 5 rounds: whole numbers, never 0.5 steps
    (-0.2, 4.2, 8, [0, 1, 2, 3, 4]),       # padded range: still the rounds only
    (0, 11, 8, [0, 2, 4, 6, 8, 10]),
    (0, 19, 8, [0, 5, 10, 15]),
    (3, 97, 6, [20, 40, 60, 80]),
    (0, 1000, 6, [0, 200, 400, 600, 800, 1000]),
    (7 - 1e-6, 7 + 1e-6, 8, [7]),          # one round (the axis widens it by 1e-6)
])
def test_round_ticks_are_integers(lo: float, hi: float, max_ticks: int,
                                  expected: list[int]) -> None:
    ticks = round_ticks(lo, hi, max_ticks)
    assert ticks == [float(t) for t in expected]
    assert _RoundAxis().get_labels_for_ticks(ticks) == [str(t) for t in expected]


def test_rate_axis_is_fixed_0_to_100_percent() -> None:
    axis = _PercentAxis()
    # Whatever the data's range, the ticks are the same.
    assert axis.get_ticks(0.08, 0.12) == axis.get_ticks(0.0, 1.0) == [0, 0.25, 0.5, 0.75, 1.0]
    assert axis.get_labels_for_ticks(percent_ticks()) == ["0%", "25%", "50%", "75%", "100%"]
    assert percent_ticks(3) == [0.0, 0.5, 1.0]


def test_log_ticks() -> None:
    assert log_ticks(0, 2) == [0.0, 1.0, 2.0]                       # 1, 10, 100
    assert [round(10 ** t) for t in log_ticks(0, 1)] == [1, 2, 5, 10]


def test_ema_matches_tensorboard() -> None:
    assert ema([1.0, 1.0, 1.0], 0.6) == pytest.approx([1.0, 1.0, 1.0])  # debiased
    assert ema([0.0, 1.0], 0.5) == pytest.approx([0.0, 2 / 3])
    out = ema([0.0, 1.0, math.nan, 1.0], 0.5)
    assert math.isnan(out[2]) and out[3] == pytest.approx(0.75 / 0.875)
    assert ema([0.2, 0.9], 0.0) == [0.2, 0.9]
    with pytest.raises(ValueError):
        ema([1.0], 1.0)


def test_sparkline_scale_is_fixed() -> None:
    assert fmt.spark([1.0, 1.0, 1.0]) == "███"   # a constant 100% is full, not the lowest
    assert fmt.spark([0.0]) == " "               # a lone 0% is empty, not a full bar
    assert fmt.spark([0.0, 0.001, 0.125, 0.126, 0.5, 1.0]) == " ▁▁▂▄█"
    assert fmt.spark([0.5, 0.5]) == fmt.spark([0.5]) * 2   # same level, same bar
    assert fmt.spark([None, 1.0]) == "█"


def test_gap_band_is_the_reports_interval_per_round() -> None:
    def arm(n: int, s: float, sq: float) -> pl.DataFrame:
        return pl.DataFrame({"round": [0, 1], "reward_mean": [s / n, None],
                             "reward_n": [n, 0], "reward_sum": [s, 0.0],
                             "reward_sq_sum": [sq, 0.0]})

    out = reward_rounds(arm(10, 7.0, 5.2), arm(12, 9.6, 7.9))
    ci = gap_ci(10, 7.0, 5.2, 12, 9.6, 7.9)
    assert out["gap"][0] == pytest.approx(0.7 - 0.8)
    assert (out["gap_lo"][0], out["gap_hi"][0]) == pytest.approx((ci.lo, ci.hi))
    assert out["gap_lo"][0] < out["gap"][0] < out["gap_hi"][0]
    assert out["round"].to_list() == [0]  # round 1 has rewards on neither side: left out
    one_sided = reward_rounds(arm(10, 7.0, 5.2), arm(1, 0.8, 0.64))
    assert one_sided.row(0) == pytest.approx((0, 0.7, 0.8, 0.7 - 0.8, None, None))


def test_fit_widths_squeezes_then_drops_secondary_columns() -> None:
    names, widths = ["time", "verdict", "mode", "action"], [8, 7, 7, 11]
    fit = Fit(squeeze={"action": 6}, drop=("mode",))
    assert fit_widths(names, widths, 100, fit) == [8, 7, 7, 11]       # room: as they are
    assert fit_widths(names, widths, 36, fit) == [8, 7, 7, 6]         # the action is cut
    assert fit_widths(names, widths, 30, fit) == [8, 7, None, 9]      # then mode hidden
    # Key columns are never cut: too narrow even then, the table scrolls.
    assert fit_widths(names, widths, 10, fit) == [8, 7, None, 6]
    first = Fit(squeeze={"action": 6}, drop=("mode",), drop_first=True)
    assert fit_widths(names, widths, 36, first) == [8, 7, None, 11]
    assert cut("informative", 6) == "infor…" and cut("▁▂▃▄▅", 3, keep_end=True) == "▃▄▅"


def test_kpi_strip_fits_or_breaks_between_items() -> None:
    items = [(Text("coverage 100.0%"), Text("cov 100.0%")),
             (Text("escaped 0 (baseline 320)"), Text("esc 0 (base 320)"))]
    assert fit_strip(items, 60).plain == "coverage 100.0%  escaped 0 (baseline 320)"
    # The biggest saving first: the other item keeps its full form while it can.
    assert fit_strip(items, 38).plain == "coverage 100.0%  esc 0 (base 320)"
    assert fit_strip(items, 30).plain == "cov 100.0%  esc 0 (base 320)"
    assert fit_strip(items, 25).plain == "coverage 100.0%\nescaped 0 (baseline 320)"


def test_run_label_keeps_both_ends_of_the_ids() -> None:
    run, base = "showcase-s7-20261118-110640", "showcase-s3-20261117-093015"
    assert run_label(run, None, 80) == f"run {run}"
    label = run_label(run, base, 50)
    assert len(label) <= 50 and label.startswith("run showc") and " vs showc" in label
    assert "110640" in label and label.endswith("093015")
    assert fmt.middle(run, 15) == "showcas…-110640"
