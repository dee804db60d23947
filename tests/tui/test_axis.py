"""The charts' numeric axis never crashes on a degenerate range (one x value, or a range
narrower than float spacing at its magnitude), and labels normal ranges with round ticks."""

from __future__ import annotations

import pytest

from tractatus_watch.tui.chart import _SafeAxis, nice_ticks


@pytest.mark.parametrize("centre", [0.0, 3.0, 12.0, 1.8e9, 4.2e12])
def test_a_degenerate_range_gives_distinct_labelled_ticks(centre: float) -> None:
    axis = _SafeAxis()
    ticks = axis.get_ticks(centre - 1e-6, centre + 1e-6)
    assert ticks and len(set(ticks)) == len(ticks)
    assert len(axis.get_labels_for_ticks(ticks)) == len(ticks)


def test_a_range_narrower_than_float_spacing_is_one_tick_at_its_middle() -> None:
    # textual-plot's axis took log10(0) here ("math domain error"): ticks 4e-7 apart round to
    # the same float at 4.2e12.
    axis = _SafeAxis()
    ticks = axis.get_ticks(4.2e12 - 1e-6, 4.2e12 + 1e-6)
    assert ticks == [4.2e12] and axis.get_labels_for_ticks(ticks) == ["4.2e+12"]


@pytest.mark.parametrize("lo,hi,max_ticks,ticks,labels", [
    (0, 5, 8, [0, 1, 2, 3, 4, 5], ["0", "1", "2", "3", "4", "5"]),
    (0.5, 4.5, 8, [1, 2, 3, 4], ["1", "2", "3", "4"]),      # at most 8: not nine 0.5 steps
    (0.5, 4.5, 9, [0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5],
     ["0.5", "1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0", "4.5"]),
    (0, 1, 8, [0, 0.2, 0.4, 0.6, 0.8, 1.0], ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]),
    (-3, 250, 8, [0, 50, 100, 150, 200, 250], ["0", "50", "100", "150", "200", "250"]),
    (0.74, 0.81, 5, [0.74, 0.76, 0.78, 0.8], ["0.74", "0.76", "0.78", "0.80"]),
    (-0.08, -0.035, 6, [-0.08, -0.07, -0.06, -0.05, -0.04],
     ["-0.08", "-0.07", "-0.06", "-0.05", "-0.04"]),
])
def test_ordinary_ranges_get_round_ticks(lo: float, hi: float, max_ticks: int,
                                         ticks: list[float], labels: list[str]) -> None:
    axis = _SafeAxis()
    assert axis.get_ticks(lo, hi, max_ticks) == ticks
    assert axis.get_labels_for_ticks(ticks) == labels
    assert nice_ticks(lo, hi, max_ticks) == ticks
