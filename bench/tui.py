"""Dashboard refresh cost over a database of N stored checks.

Builds (or reuses) a database through the writer like bench/queries.py, runs the real app
headless, and for each view times full refreshes: the worker's queries, the message back and
the render on the main thread, until the screen is idle again (the "nothing changed" shortcut
is disabled, so every refresh fetches), the worker's share of it, and the CPU time of the
process meanwhile (every thread; less noisy than wall time where the machine is shared). Work
the views push to the background lane (build_report, latency percentiles) is timed
separately. Meanwhile a task on the main loop sleeps 1 ms at a time and records how late it
wakes up (in a second series of refreshes, untimed: its wake-ups would slow the timed ones):
the longest such gap is the longest stall the user would feel while refreshing.
Targets (issue 13): each view <= 50 ms per refresh at 10M checks and <= 100 ms at 100M, the
background lane <= 100 ms at 10M, longest main-thread stall <= 50 ms.
Usage: bench/tui.py [--rows N checks] [--repeat K] [--db PATH] [--rebuild] [--size WxH]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # test support
from _common import built_as, checks_db, last_line  # noqa: E402

from tractatus_watch.storage.store import Store  # noqa: E402
from support.synthetic import BASE_TS_US  # noqa: E402
from tractatus_watch.tui.app import Dashboard  # noqa: E402
from tractatus_watch.tui.views import VIEWS  # noqa: E402

class StallMeter:
    """How late a 1 ms sleep on the main loop wakes up: time the loop could not run."""

    def __init__(self) -> None:
        self.max_s = 0.0
        self.running = True

    async def run(self) -> None:
        while self.running:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.max_s = max(self.max_s, time.perf_counter() - t - 0.001)


async def painted(app: Dashboard) -> None:
    """Until the screen has been refreshed after everything queued so far (charts draw their
    canvases while the screen paints, so this includes them)."""
    done = asyncio.get_running_loop().create_future()
    app.call_after_refresh(lambda: done.done() or done.set_result(None))
    await done


async def idle(app: Dashboard) -> None:
    while not app.idle:
        await asyncio.sleep(0.0005)
    await painted(app)


async def measure(path: Path, repeat: int, size: tuple[int, int]) -> dict[str, float]:
    store = Store.open(path, read_only=True)
    # A fixed clock: nothing in the bench depends on wall time.
    app = Dashboard(store, clock=lambda: BASE_TS_US / 1e6 + 3600, interval=3600)
    figures: dict[str, float] = {}
    async with app.run_test(size=size):
        await idle(app)
        for i, view in enumerate(VIEWS):
            name = view.TITLE.lower()
            app.switch_view(i)
            await idle(app)  # first load, background lane included (warm-up)
            times, cpus, shows, queries = [], [], [], []
            for _ in range(repeat):
                app.refresher.forget_shown()
                t, c = time.perf_counter(), time.process_time()
                app.refresh_view()
                await idle(app)  # the worker and the render
                times.append(time.perf_counter() - t)
                cpus.append(time.process_time() - c)
                shows.append(app.last_show_s)
                queries.append(app.refresher.last_refresh_s)
            # The stall meter wakes 1,000 times a second and takes the GIL each time: it runs in
            # a second series of the same refreshes, so that it does not slow the timed ones.
            meter = StallMeter()
            task = asyncio.create_task(meter.run())
            for _ in range(repeat):
                app.refresher.forget_shown()
                app.refresh_view()
                await idle(app)
            meter.running = False
            await task
            figures[f"{name}_refresh_ms"] = statistics.median(times) * 1000
            figures[f"{name}_cpu_ms"] = statistics.median(cpus) * 1000
            figures[f"{name}_render_ms"] = statistics.median(shows) * 1000
            figures[f"{name}_queries_ms"] = statistics.median(queries) * 1000
            figures[f"{name}_stall_ms"] = meter.max_s * 1000
            request = app.current_view.slow(app.scope.run_id or "")
            if request is not None:
                con = store.cursor()
                fn = request[1]
                bg = []
                for _ in range(max(1, repeat // 5)):
                    t = time.perf_counter()
                    fn(con, app.scope.run_id or "")
                    bg.append(time.perf_counter() - t)
                con.close()
                figures[f"{name}_background_ms"] = statistics.median(bg) * 1000
    store.close()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000, help="stored checks")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--db", type=Path, default=None, help="reuse/keep the database here")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--base-db", type=Path, default=None,
                    help="above 20M checks: copy this database of 10M checks for the raw "
                         "tables instead of building one")
    ap.add_argument("--size", default="120x40", help="terminal size WxH")
    args = ap.parse_args()
    path = checks_db(args.db, args.rows, rebuild=args.rebuild, prefix="tw-bench-tui-",
                     base=args.base_db)
    width, height = (int(v) for v in args.size.split("x"))
    target = 50 if args.rows <= 10_000_000 else 100
    figures = asyncio.run(measure(path, args.repeat, (width, height)))
    print(f"{args.rows:,} checks ({built_as(args.rows)}), terminal {width}x{height}, "
          f"median of {args.repeat}")
    for view in VIEWS:
        name = view.TITLE.lower()
        refresh = figures[f"{name}_refresh_ms"]
        f = {k.removeprefix(f"{name}_"): v for k, v in figures.items()}
        line = (f"{name:10s} refresh {refresh:6.1f} ms (CPU {f['cpu_ms']:5.1f} ms, worker "
                f"{f['queries_ms']:5.1f} ms, view update {f['render_ms']:4.1f} ms, longest stall "
                f"{f['stall_ms']:5.1f} ms)")
        if f"{name}_background_ms" in figures:
            line += f"  background lane {figures[f'{name}_background_ms']:7.1f} ms"
        print(line + ("" if refresh <= target else f"  (over the {target} ms target)"))
    out = {f"{v.TITLE.lower()}_refresh_ms": figures[f"{v.TITLE.lower()}_refresh_ms"]
           for v in VIEWS}
    out.update({k: v for k, v in figures.items() if k.endswith("_background_ms")})
    # CPU time (every thread: the main loop, the worker, DuckDB's) varies less than wall time
    # on a shared machine: a second view of the same refreshes.
    out.update({k: v for k, v in figures.items() if k.endswith("_cpu_ms")})
    # The slowest view's background lane (the target is per lane): one figure to compare.
    out["background_ms"] = max(v for k, v in out.items() if k.endswith("_background_ms"))
    out["max_stall_ms"] = max(v for k, v in figures.items() if k.endswith("_stall_ms"))
    print(f"longest main-thread stall: {out['max_stall_ms']:.1f} ms (target <= 50)")
    last_line(out)


if __name__ == "__main__":
    main()
