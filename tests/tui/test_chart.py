"""The chart widget, read from the strips it paints: where a line, a gap and a marker land,
the axes' labels, the dots without colour, the draw order, and one build per draw."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from rich.style import Style
from textual.app import App, ComposeResult

from tractatus_watch.tui.chart import BRAILLE, HALF, QUADRANT, Chart

ROUNDS = [float(r) for r in range(11)]
BRAILLE_DOTS = set(BRAILLE.chars[1:])
QUADRANT_DOTS = set(QUADRANT.chars[1:]) - {"▀", "▄", "█"}  # the blocks it shares with HALF
HALF_DOTS = set(HALF.chars[1:])


class OneChart(App[None]):
    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self.chart_size = (width, height)

    def compose(self) -> ComposeResult:
        chart = Chart("test", id="chart")
        chart.styles.width, chart.styles.height = self.chart_size
        yield chart


async def painted(draw: Callable[[Chart], None], size: tuple[int, int] = (40, 15),
                  check: Callable[[Chart], Any] | None = None) -> list[str]:
    """The chart's content lines (inside its border) after `draw(chart)`."""
    app = OneChart(*size)
    async with app.run_test(size=(size[0] + 4, size[1] + 2)) as pilot:
        chart = app.query_one(Chart)
        draw(chart)
        await pilot.pause()
        lines = [chart.render_line(y).text for y in range(chart.size.height)]
        if check is not None:
            check(chart)
    return lines


def plot_rows(lines: list[str]) -> list[str]:
    """The plot area's rows: between the frame's top and bottom, inside its sides."""
    return [line[8:-1] for line in lines[1:-2]]


def y_labels(lines: list[str]) -> list[str]:
    return [line[:6].strip() for line in lines[1:-2] if line[:6].strip()]


async def test_rates_at_100_and_0_percent_draw_on_the_top_and_bottom_rows() -> None:
    lines = await painted(lambda c: c.draw([(ROUNDS, [1.0] * 11, "green", "coverage"),
                                            (ROUNDS, [0.0] * 11, "red", "blocked")],
                                           scale="rate"))
    rows = plot_rows(lines)
    assert set(rows[0]) == {"⠉"}       # the top dots of the top row, every column
    assert set(rows[-1]) == {"⣀"}      # the bottom dots of the bottom row
    assert all(not row.strip() for row in rows[1:-1])
    # The labels are level with the lines they name.
    assert lines[1].startswith("  100% ┫") and lines[-3].startswith("    0% ┫")
    assert y_labels(lines) == ["100%", "75%", "50%", "25%", "0%"]


async def test_a_rate_axis_with_little_room_reads_0_50_100() -> None:
    lines = await painted(lambda c: c.draw([(ROUNDS, [0.5] * 11, "green", "c")], scale="rate"),
                          size=(40, 10))
    assert y_labels(lines) == ["100%", "50%", "0%"]


async def test_a_nan_leaves_a_gap_in_the_line() -> None:
    ys = [0.5] * 11
    whole = plot_rows(await painted(lambda c: c.draw([(ROUNDS, ys, "green", "c")],
                                                     scale="rate")))
    ys[5] = math.nan
    gapped = plot_rows(await painted(lambda c: c.draw([(ROUNDS, ys, "green", "c")],
                                                      scale="rate")))
    (line,) = [row for row in whole if row.strip()]
    (broken,) = [row for row in gapped if row.strip()]
    assert " " not in line  # one line from the first round to the last
    gap = [i for i, ch in enumerate(broken) if ch == " "]
    assert gap and broken[0] != " " and broken[-1] != " "
    # The gap is the cells of rounds 4 to 6, around the middle of the plot.
    columns = len(broken)
    assert gap[0] > columns * 0.3 and gap[-1] < columns * 0.7 and len(gap) >= columns // 10


async def test_a_point_alone_between_gaps_is_a_dot() -> None:
    ys = [math.nan] * 11
    ys[3] = 0.5
    rows = plot_rows(await painted(lambda c: c.draw([(ROUNDS, ys, "green", "c")],
                                                    scale="rate")))
    drawn = [(r, i) for r, row in enumerate(rows) for i, ch in enumerate(row) if ch != " "]
    assert len(drawn) == 1


async def test_a_vertical_marker_is_in_the_column_of_its_round() -> None:
    lines = await painted(lambda c: c.draw([(ROUNDS, [0.5] * 11, "green", "c")], vlines=[4.0],
                                           scale="rate"))
    labels = lines[-1]
    column = labels.index(" 4 ") + 1  # the x label of round 4 sits under its tick
    assert lines[0][column] == "╋" and lines[-2][column] == "╋"  # tick and marker meet
    for row in lines[1:-2]:
        # The marker in every row but the line's (drawn over it).
        assert row[column] == "│" or row[column] in BRAILLE_DOTS
    assert sum(row[column] == "│" for row in lines[1:-2]) == len(lines) - 4
    assert all(row.count("│") == 1 for row in lines[1:-2] if not set(row) & BRAILLE_DOTS)


async def test_axis_labels() -> None:
    lines = await painted(lambda c: c.draw([(ROUNDS, [float(r) for r in range(11)], "cyan",
                                             "evasions")], scale="count"), size=(40, 17))
    assert lines[-1].split() == ["0", "2", "4", "6", "8", "10"]
    assert y_labels(lines) == ["10", "8", "6", "4", "2", "0"]
    lines = await painted(lambda c: c.draw([([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], "cyan", "p50")],
                                           xlog=(0.0, 2.0), scale="log"))
    assert lines[-1].split() == ["1", "10", "100"]
    assert y_labels(lines) == ["1000", "100", "10"]
    lines = await painted(lambda c: c.draw([(ROUNDS, [2_000_000.0 + r for r in ROUNDS], "cyan",
                                             "µs")]))
    # Too long for the margin: shortened, never cut into another number.
    assert all(label.endswith("M") for label in y_labels(lines))


async def test_without_colour_the_series_differ_by_their_dots(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    lines = await painted(lambda c: c.draw([(ROUNDS, [1.0] * 11, "green", "a"),
                                            (ROUNDS, [0.5] * 11, "red", "b"),
                                            (ROUNDS, [0.0] * 11, "yellow", "c")],
                                           scale="rate"))
    rows = [set(row) - {" "} for row in plot_rows(lines)]
    drawn = [row for row in rows if row]
    assert len(drawn) == 3
    assert drawn[0] <= BRAILLE_DOTS
    assert drawn[1] <= set(QUADRANT.chars[1:]) and drawn[1] - HALF_DOTS <= QUADRANT_DOTS
    assert drawn[2] <= HALF_DOTS and drawn[2] == {"▄"}
    assert drawn[1] != drawn[2]


async def test_a_later_series_is_drawn_over_an_earlier_one() -> None:
    def check(chart: Chart) -> None:
        (row,) = [y for y in range(1, chart.size.height - 2)
                  if chart.render_line(y).text[8:-1].strip()]
        line = [s for s in chart.render_line(row) if set(s.text) & BRAILLE_DOTS]
        assert line and all(s.style and s.style.color and s.style.color.name == "red"
                            for s in line)

    await painted(lambda c: c.draw([(ROUNDS, [0.5] * 11, "green", "first"),
                                    (ROUNDS, [0.5] * 11, "red", "second")], scale="rate"),
                  size=(40, 13), check=check)


async def test_one_refresh_and_one_build_per_draw() -> None:
    counts = {"refresh": 0, "build": 0}

    def draw(chart: Chart) -> None:
        refresh, build = chart.refresh, chart.build

        def counted_refresh(*args: Any, **kwargs: Any) -> Any:
            counts["refresh"] += 1
            return refresh(*args, **kwargs)

        def counted_build(*args: Any) -> Any:
            counts["build"] += 1
            return build(*args)

        chart.refresh = counted_refresh  # type: ignore[method-assign]
        chart.build = counted_build  # type: ignore[method-assign, assignment]
        chart.draw([(ROUNDS, [0.5] * 11, "green", "c")], scale="rate", subtitle="new")

    def check(chart: Chart) -> None:
        first = [chart.render_line(y) for y in range(chart.size.height)]
        again = [chart.render_line(y) for y in range(chart.size.height)]
        assert all(a is b for a, b in zip(first, again))  # the cached strips
        assert all(s.style is not None for strip in first for s in strip)
        assert all(isinstance(s.style, Style) for strip in first for s in strip)

    await painted(draw, check=check)
    assert counts == {"refresh": 1, "build": 1}
    counts.update(refresh=0, build=0)

    def draw_twice(chart: Chart) -> None:
        chart.draw([(ROUNDS, [0.5] * 11, "green", "c")], scale="rate", subtitle="new")
        draw(chart)  # the same subtitle again: a plain refresh

    await painted(draw_twice)
    assert counts == {"refresh": 1, "build": 1}


async def test_values_off_the_scale_are_cut_at_the_edge_and_long_series_fit() -> None:
    xs = [i / 100 for i in range(10_000)]
    ys = [0.5 + 0.6 * math.sin(x) for x in xs]  # beyond 0-100% at the peaks
    rows = plot_rows(await painted(lambda c: c.draw([(xs, ys, "green", "c")], scale="rate")))
    assert rows[0].strip() and rows[-1].strip()  # reaches both edges
    assert all(set(row) <= BRAILLE_DOTS | {" "} for row in rows)
