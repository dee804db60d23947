"""The demo's `scale` scenario headless at 1, 10 and 100 agents per arm: rounds and events per
second, the share of the process's CPU time the in-process Agent Lightning gateway used (the
rest is our code: agents, Governor, trainer, capture, storage, alerts), and the governance
overhead per action (Governor.check latency) at each size.
Usage: bench/demo.py [--sizes 1,10,100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).parent))
from _common import last_line  # noqa: E402

from tractatus_watch.demo.scenarios import SCENARIOS  # noqa: E402
from tractatus_watch.demo.session import DemoSession  # noqa: E402
from tractatus_watch.storage import queries as Q  # noqa: E402
from tractatus_watch.storage.store import Store  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1,10,100")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # Agent Lightning's proxy logs each call at debug level through structlog (to stdout).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    figures: dict[str, float] = {}
    workdir = Path(tempfile.mkdtemp(prefix="tw-bench-demo-"))
    for n in (int(x) for x in args.sizes.split(",")):
        sc = SCENARIOS["scale"].with_overrides(agents=n, rounds=args.rounds)
        with Store.open(workdir / f"scale-{n}.duckdb") as store:
            marks: dict[str, float] = {}

            def on_round(result: object, marks: dict[str, float] = marks) -> None:
                gw = [t for t in threading.enumerate() if t.name == "tw-gateway"]
                marks["gateway"] = sum(thread_cpu_s(t.native_id or 0) for t in gw)
                marks["process"] = time.process_time()

            session = DemoSession(store, sc, 1, f"bench-scale-{n}", on_round=on_round)
            cpu0, t0 = time.process_time(), time.monotonic()
            session.run()
            seconds = time.monotonic() - t0
            actions = sum(r.decisions for r in session.rounds)
            rollouts = sum(r.rollouts for r in session.rounds)
            lat = Q.latency(store.cursor(), session.run_id)
            # Events at the gateway: one packed decisions event per rollout at least, plus
            # its reward; decisions themselves are what governance produced.
            figures[f"rounds_per_s_{n}"] = len(session.rounds) / seconds
            figures[f"events_per_s_{n}"] = (actions + rollouts) / seconds
            figures[f"overhead_us_{n}"] = float(lat["p50_us"].median() or 0.0)
            figures[f"overhead_p99_us_{n}"] = float(lat["p99_us"].max() or 0.0)
            figures[f"gateway_share_{n}"] = marks.get("gateway", 0.0) / max(
                1e-9, marks.get("process", cpu0) - cpu0)
            print(f"{n:5d} agents/arm: {len(session.rounds)} rounds in {seconds:.1f} s "
                  f"({figures[f'rounds_per_s_{n}']:.2f} rounds/s, "
                  f"{figures[f'events_per_s_{n}']:.0f} decisions+rewards/s), "
                  f"overhead p50 {figures[f'overhead_us_{n}']:.0f} us / p99 "
                  f"{figures[f'overhead_p99_us_{n}']:.0f} us, gateway "
                  f"{figures[f'gateway_share_{n}']:.0%} of CPU", flush=True)
    last_line(figures)


if __name__ == "__main__":
    main()
