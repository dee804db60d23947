"""Ingest throughput of the writer against a bare DuckDB INSERT of the same Arrow data.

The writer does everything the collectors rely on (validation, natural-key anti-join, rollups,
cursor in the same transaction); the bare path only inserts. Target: writer >= 0.5 x bare, and
peak RSS under 1 GiB at 10M rows. `--preload N` first stores N decisions (another run, untimed)
through the writer, to show what de-duplication by decision_id costs once the table is large.
Usage: bench/ingest.py [--rows N] [--batch N] [--preload N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # test support
from _common import last_line, peak_rss_mb  # noqa: E402

from tractatus_watch.storage.schema import migrate  # noqa: E402
from tractatus_watch.storage.store import Store  # noqa: E402
from support.synthetic import decisions_batch  # noqa: E402
from tractatus_watch.storage.writer import Cursor, Writer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=2_000_000, help="decisions (each with 2 checks)")
    ap.add_argument("--batch", type=int, default=122_880,
                    help="decisions per batch (one DuckDB row group)")
    ap.add_argument("--preload", type=int, default=0,
                    help="decisions stored (untimed, run 'preload') before the timed run")
    ap.add_argument("--dir", type=Path, default=None, help="where to put the database files")
    args = ap.parse_args()
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="tw-bench-ingest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, args.rows, args.batch))

    def batch(start: int):
        return decisions_batch(start, min(args.batch, args.rows - start), total=args.rows)

    # Writer: everything a collector gets. Only submit+flush is timed, not data generation.
    store = Store.open(workdir / "writer.duckdb")
    if args.preload:
        loader = Writer(store, max_queue=2)
        for start in range(0, args.preload, args.batch):
            loader.submit(decisions_batch(start, min(args.batch, args.preload - start),
                                          run_id="preload", total=args.preload))
        loader.close()
        print(f"preloaded {args.preload:,} decisions", flush=True)
    writer = Writer(store, max_queue=2)
    writer_s = 0.0
    rows = 0
    for start in starts:
        b = batch(start)
        rows += b.rows
        t0 = time.perf_counter()
        writer.submit(b, Cursor("bench", str(start)))
        writer.flush()
        writer_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    writer.close()
    writer_s += time.perf_counter() - t0
    store.close()
    writer_peak = peak_rss_mb()

    # Bare: the same Arrow tables, INSERT ... SELECT, one transaction per batch, nothing else.
    con = duckdb.connect(str(workdir / "bare.duckdb"), config={"memory_limit": "256MB"})
    migrate(con)
    bare_s = 0.0
    for start in starts:
        b = batch(start)
        t0 = time.perf_counter()
        con.execute("BEGIN TRANSACTION")
        for name, table in b.tables.items():
            con.register("_t", table)
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _t")
            con.unregister("_t")
        con.execute("COMMIT")
        bare_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    con.execute("CHECKPOINT")
    con.close()
    bare_s += time.perf_counter() - t0

    writer_rate = rows / writer_s
    bare_rate = rows / bare_s
    print(f"rows (decisions + checks + rewards): {rows:,} in {len(starts)} batches, dir {workdir}")
    print(f"writer: {writer_rate:,.0f} rows/s ({writer_s:.1f} s)")
    print(f"bare:   {bare_rate:,.0f} rows/s ({bare_s:.1f} s)")
    print(f"ratio writer/bare: {writer_rate / bare_rate:.2f} (target >= 0.5)")
    print(f"peak RSS during the writer run: {writer_peak:,.0f} MB (target < 1024 at 10M rows)")
    last_line({"preloaded_decisions": args.preload, "writer_rows_per_s": round(writer_rate),
               "bare_rows_per_s": round(bare_rate),
               "ratio": writer_rate / bare_rate, "peak_rss_mb": round(writer_peak)})


if __name__ == "__main__":
    main()
