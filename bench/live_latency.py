"""Event-to-screen latency of `live --gateway --interval 0.25 --view events` in a real terminal.

Starts the real program in tmux, posts decisions to its gateway one at a time and times each
from just before its POST until its row is on the pane (read every 10 ms; a read takes a few
ms, so the figures are a little high). Target: every decision on screen within 500 ms.
Usage: bench/live_latency.py [--decisions N] [--interval S] [--repeat K]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import last_line  # noqa: E402  (puts tests/ on the path: test support)

from support.tmux import TMUX, live_event_to_screen  # noqa: E402

TARGET_MS = 500.0


def program() -> list[str]:
    return [str(Path(sys.executable).with_name("tractatus-watch"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--decisions", type=int, default=15)
    ap.add_argument("--interval", type=float, default=0.25, help="the dashboard's --interval")
    ap.add_argument("--repeat", type=int, default=1, help="sessions (a new program each)")
    args = ap.parse_args()
    if TMUX is None:
        sys.exit("error: tmux is not installed (apt-get install tmux)")
    seconds: list[float] = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="tw-bench-live-") as tmp:
            seconds += live_event_to_screen(Path(tmp), program(), decisions=args.decisions,
                                            interval=args.interval).seconds
    p50 = statistics.median(seconds) * 1000
    worst = max(seconds) * 1000
    print(f"{len(seconds)} decisions, --interval {args.interval}: event-to-screen p50 "
          f"{p50:.0f} ms, max {worst:.0f} ms (target <= {TARGET_MS:.0f} ms: p50 at "
          f"{p50 / TARGET_MS:.2f}x, max at {worst / TARGET_MS:.2f}x of it)")
    last_line({"decisions": len(seconds), "p50_ms": p50, "max_ms": worst,
               "p50_ratio": p50 / TARGET_MS, "max_ratio": worst / TARGET_MS})


if __name__ == "__main__":
    main()
