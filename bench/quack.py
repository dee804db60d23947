"""Median latency of each dashboard query over Quack (`open --remote`) against the same query on
the file, over a database of N stored checks.

The database is served by its own store (as `collect --serve` does) and read by a client
DuckDB instance in this process through `Store.open("quack:127.0.0.1:PORT")`: the HTTP round
trip and the server-side execution are real, only the process boundary is not.
Usage: bench/quack.py [--rows N checks] [--repeat K] [--db PATH] [--rebuild]
"""

from __future__ import annotations

import argparse
import secrets
import socket
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import checks_db, last_line, median_ms  # noqa: E402
from queries import dashboard_queries  # noqa: E402

from tractatus_watch.storage.serve import serve  # noqa: E402
from tractatus_watch.storage.store import Store  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000, help="stored checks")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--db", type=Path, default=None, help="reuse/keep the database here")
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    path = checks_db(args.db, args.rows, rebuild=args.rebuild, prefix="tw-bench-quack-")
    token = secrets.token_urlsafe(32)
    figures: dict[str, float] = {}
    with Store.open(path) as store:
        server = serve(store, "127.0.0.1", free_port(), token)
        try:
            with Store.open(f"quack:127.0.0.1:{server.port}", token=token) as remote:
                local_con, remote_con = store.cursor(), remote.cursor()
                n = local_con.execute("SELECT count(*) FROM checks").fetchall()[0][0]
                print(f"{n:,} checks, served at {server.uri}")
                local_q, remote_q = dashboard_queries(local_con), dashboard_queries(remote_con)
                for name in local_q:
                    local_q[name]()  # warm
                    remote_q[name]()
                    figures[f"{name}_local_ms"] = median_ms(local_q[name], args.repeat)
                    figures[f"{name}_remote_ms"] = median_ms(remote_q[name], args.repeat)
                local_con.close()
                remote_con.close()
        finally:
            server.stop()
    for name in dashboard_queries(None):
        local, remote = figures[f"{name}_local_ms"], figures[f"{name}_remote_ms"]
        print(f"{name:20s} local {local:8.2f} ms   remote {remote:8.2f} ms   "
              f"+{remote - local:6.2f} ms")
    figures["median_local_ms"] = statistics.median(
        v for k, v in figures.items() if k.endswith("_local_ms"))
    figures["median_remote_ms"] = statistics.median(
        v for k, v in figures.items() if k.endswith("_remote_ms"))
    print(f"median over the queries: local {figures['median_local_ms']:.2f} ms, "
          f"remote {figures['median_remote_ms']:.2f} ms")
    last_line(figures)


if __name__ == "__main__":
    main()
