"""The charts' axis never crashes on a degenerate range (one x value, or a range narrower than
float spacing at its magnitude), and labels normal ranges as textual-plot does."""

from __future__ import annotations

import pytest
from textual_plot.axis_formatter import NumericAxisFormatter

from tractatus_watch.tui.widgets import _SafeAxis


@pytest.mark.parametrize("centre", [0.0, 3.0, 12.0, 1.8e9, 4.2e12])
def test_a_degenerate_range_gives_distinct_labelled_ticks(centre: float) -> None:
    axis = _SafeAxis()
    ticks = axis.get_ticks(centre - 1e-6, centre + 1e-6)
    assert ticks and len(set(ticks)) == len(ticks)
    assert len(axis.get_labels_for_ticks(ticks)) == len(ticks)


def test_the_crash_it_prevents_is_real() -> None:
    plain = NumericAxisFormatter()
    with pytest.raises(ValueError, match="math domain"):
        plain.get_labels_for_ticks(plain.get_ticks(4.2e12 - 1e-6, 4.2e12 + 1e-6))


@pytest.mark.parametrize("lo,hi", [(0, 5), (0.5, 4.5), (0, 1), (-3, 250)])
def test_ordinary_ranges_are_labelled_as_before(lo: float, hi: float) -> None:
    plain, safe = NumericAxisFormatter(), _SafeAxis()
    ticks = plain.get_ticks(lo, hi)
    assert safe.get_ticks(lo, hi) == ticks
    assert safe.get_labels_for_ticks(ticks) == plain.get_labels_for_ticks(ticks)
