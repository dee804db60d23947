"""Median latency of every dashboard query over a database of N stored checks.

Builds (or reuses) a database through the writer, then times each query in storage/queries.py,
first on the rollups as the writer leaves them (partial aggregates appended per commit: the live
case) and again after `compact_rollups`. Target: <= 30 ms each.
Usage: bench/queries.py [--rows N checks] [--repeat K] [--db PATH] [--rebuild]
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # test support
from _common import checks_db, last_line, median_ms  # noqa: E402

from tractatus_watch.storage import queries as Q  # noqa: E402
from tractatus_watch.storage.schema import compact_rollups  # noqa: E402
from tractatus_watch.storage.store import Store  # noqa: E402
from support.synthetic import BASE_TS_US  # noqa: E402

def dashboard_queries(con) -> dict[str, object]:
    mid = datetime.fromtimestamp(BASE_TS_US / 1e6 + 1800)
    return {
        "runs": lambda: Q.runs(con),
        "per_round": lambda: Q.per_round(con, "bench"),
        "totals": lambda: Q.totals(con, "bench"),
        "per_rule_rounds": lambda: Q.per_rule(con, "bench", rounds=(100, 200)),
        "per_rule_time": lambda: Q.per_rule(con, "bench", since=mid),
        "rule_trend": lambda: Q.rule_counts(con, "bench", by_round=True),
        "reward_gap": lambda: Q.reward_gap(con, "bench"),
        "per_agent": lambda: Q.per_agent(con, "bench"),
        "alert_state": lambda: Q.alert_state(con, "bench"),
        "decisions_page": lambda: Q.decisions_page(con, "bench", limit=100, offset=1000),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000, help="stored checks")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--db", type=Path, default=None, help="reuse/keep the database here")
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    path = checks_db(args.db, args.rows, rebuild=args.rebuild, prefix="tw-bench-q-")
    figures: dict[str, float] = {}
    with Store.open(path) as store:
        con = store.cursor()
        n = con.execute("SELECT count(*) FROM checks").fetchall()[0][0]
        parts = con.execute("SELECT count(*) FROM rollup_agent").fetchall()[0][0]
        print(f"{n:,} checks; rollup_agent holds {parts:,} partial rows")
        for name, fn in dashboard_queries(con).items():
            fn()  # warm
            figures[f"{name}_ms"] = median_ms(fn, args.repeat)
        compact_rollups(store.con)
        for name, fn in dashboard_queries(con).items():
            fn()
            figures[f"{name}_compacted_ms"] = median_ms(fn, args.repeat)
    worst = max(v for k, v in figures.items() if not k.endswith("_compacted_ms"))
    for key, value in figures.items():
        flag = "" if value <= 30 else "  (over the 30 ms target)"
        print(f"{key:32s} {value:8.2f} ms{flag}")
    print(f"slowest live query: {worst:.1f} ms (target <= 30)")
    last_line(figures)


if __name__ == "__main__":
    main()
