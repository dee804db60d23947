"""CPU cost of drawing one chart: `Chart.draw` and painting it, on the main thread.

A headless app shows one chart of 40x12 cells; each repetition draws 3 series of 60 points
(alternating between two data sets, so nothing is reused) with two alert markers, and waits
until the screen has been painted twice (a chart whose render dirties child widgets needs a
second frame). The figure is the main thread's CPU time (`time.thread_time`) per repetition;
the same wait after a plain `refresh()` (repaint, no draw) is printed for reference, and the
chart's own share: `draw` and rendering the lines of the chart and of any widgets inside it
(`render_lines`, borders included), without the rest of the frame. To calibrate the machine,
the same for a Static of the same size and border given a new text: Textual's own cost of
painting a box that size, which no chart can go below.
Target (issue 13, item 8): draw + paint well under 2 ms.
Usage: bench/chart.py [--repeat K] [--size WxH]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import last_line  # noqa: E402

from textual.app import App, ComposeResult  # noqa: E402
from textual.geometry import Region  # noqa: E402
from textual.widget import Widget  # noqa: E402
from textual.widgets import Static  # noqa: E402

from tractatus_watch.tui.widgets import Chart  # noqa: E402


def data_sets(points: int = 60) -> list[list[tuple[list[float], list[float], str, str]]]:
    """Two different sets of three noisy rate series."""
    out = []
    for phase in (0.0, 1.3):
        xs = [float(i) for i in range(points)]
        out.append([(xs, [0.5 + 0.45 * math.sin(i / 5 + phase + k) for i in range(points)],
                     style, label)
                    for k, (style, label) in enumerate((("green", "coverage"),
                                                        ("red", "blocked"),
                                                        ("yellow", "evasions")))])
    return out


class OneChart(App[None]):
    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.chart_size = size

    def compose(self) -> ComposeResult:
        chart = Chart("bench", id="chart")
        static = Static("", id="static")
        for widget in (chart, static):
            widget.styles.width, widget.styles.height = self.chart_size
        static.styles.border = ("round", "white")
        yield chart
        yield static


async def frames(app: App[Any], n: int = 2) -> None:
    for _ in range(n):
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def finish(done: asyncio.Future[None] = done) -> None:
            if not done.done():
                done.set_result(None)

        app.call_after_refresh(finish)
        await done


def paint(chart: Widget) -> None:
    """Render every line of the chart and of the widgets inside it, as a frame would."""
    for widget in (chart, *chart.query("*")):
        if widget.size.area:
            widget.render_lines(Region(0, 0, *widget.outer_size))


async def measure(repeat: int, size: tuple[int, int]) -> dict[str, float]:
    app = OneChart(size)
    sets = data_sets()
    draw_ms, repaint_ms, own_ms, static_ms = [], [], [], []
    texts = ["\n".join("x" * (size[0] - 2) for _ in range(size[1] - 2)),
             "\n".join("y" * (size[0] - 2) for _ in range(size[1] - 2))]
    async with app.run_test(size=(size[0] + 10, 2 * size[1] + 4)):
        chart, static = app.query_one(Chart), app.query_one(Static)
        await frames(app)
        for i in range(repeat + 5):  # the first five warm up
            t = time.thread_time()
            chart.draw(sets[i % 2], vlines=[12.0, 40.0], scale="rate", subtitle="bench")
            await frames(app)
            drawn = time.thread_time() - t
            t = time.thread_time()
            chart.refresh()
            await frames(app)
            repainted = time.thread_time() - t
            t = time.thread_time()
            chart.draw(sets[(i + 1) % 2], vlines=[12.0, 40.0], scale="rate", subtitle="bench")
            paint(chart)
            own = time.thread_time() - t
            t = time.thread_time()
            static.update(texts[i % 2])
            paint(static)
            box = time.thread_time() - t
            await frames(app)
            if i >= 5:
                draw_ms.append(drawn * 1000)
                repaint_ms.append(repainted * 1000)
                own_ms.append(own * 1000)
                static_ms.append(box * 1000)
    return {"draw_paint_cpu_ms": statistics.median(draw_ms),
            "repaint_cpu_ms": statistics.median(repaint_ms),
            "chart_only_cpu_ms": statistics.median(own_ms),
            "static_same_size_cpu_ms": statistics.median(static_ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--size", default="40x12", help="the chart's size WxH")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    figures = asyncio.run(measure(args.repeat, (width, height)))
    print(f"chart {width}x{height}, 3 series of 60 points, median of {args.repeat}: "
          f"draw + paint {figures['draw_paint_cpu_ms']:.2f} ms CPU (repaint alone "
          f"{figures['repaint_cpu_ms']:.2f} ms); the chart's own share: draw and its lines "
          f"{figures['chart_only_cpu_ms']:.2f} ms (target: well under 2 ms; a Static of that "
          f"size, updated and painted: {figures['static_same_size_cpu_ms']:.2f} ms)")
    last_line(figures)


if __name__ == "__main__":
    main()
