"""DuckLake (PostgreSQL catalog, local Parquet data) against a DuckDB file: ingest and queries.

Everything runs on a throwaway PostgreSQL on 127.0.0.1 (tests/support/pgtemp.py) and temp
folders, removed at the end (also on an error or Ctrl-C).

Ingest. Each writer is its own process (multiprocessing, spawn) writing its own run through
the real Writer (validation, natural-key check, rollups, a cursor per commit), as a collector
does, with the same rows PER PROCESS: `--rows` decisions (2 checks each, plus rewards) in
batches of `--commit` decisions. At 61,440 decisions a batch holds 122,880 checks, one row
group, so the writer commits each batch as it arrives: what `collect` does at full speed
(slower sources commit about once a second, with fewer rows). Batches are generated before a
barrier; the clock runs from the barrier to the last writer's `close()` (the file's CHECKPOINT
included). Aggregate rows/s = all processes' rows (decisions + checks + rewards, as
bench/ingest.py counts) / (last finish - first start). 1, 2 and 4 writers each get a new lake;
one writer writes a new file.

Queries. A file and a lake get the same `--checks` checks (one run, 500 rounds, 20 agents),
written by the Writer one after the other in the same commits of `--lake-commit` decisions,
each with its cursor, so the lake looks as collectors leave it: a small Parquet file per table
per commit, catalog rows and a snapshot per commit, rollups as appended partials. A bulk
`copy_store` would instead give a lake of a few big files in one snapshot, which flatters it.
At 122,880 checks per commit 10M checks take ~80 commits (~500 files); a slower collector
commits more often with fewer rows: pass a smaller `--lake-commit` to see that.
The dashboard queries of bench/queries.py are timed in a new process with both stores open
read-only (as a viewer opens them): the first call on the new connection ("cold-ish"), then
the median of `--repeat` calls, file and lake taking turns call by call so that load on this
shared machine hits both alike. Then `maintain` (keep=0) runs on both: fold rollups, trim
cursors; on the lake also flush inlined data, merge and rewrite files, expire snapshots and
delete old files; on the file a CHECKPOINT. Everything is timed again, plus the maintained
lake's Parquet files read by plain DuckDB without the catalog (what the catalog costs), and
the statements each lake query sends to PostgreSQL (from the server's log).
`*_query_ms` = median over the queries of each query's median latency.

Targets: one lake writer >= 0.3x the file writer; after maintenance, lake queries within 3x
of the file (judged against the file after the same maintenance; the file as written is shown
too). Machines are noisy: read the ratios; the first line reports how busy this one was.
Usage: bench/lake.py [--rows N] [--commit N] [--writers 1,2,4] [--checks N] [--lake-commit N]
                     [--repeat K] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # test support
from _common import last_line  # noqa: E402
from queries import dashboard_queries  # noqa: E402

from support.pgtemp import TempPostgres  # noqa: E402
from tractatus_watch.storage.maintain import live_files, maintain  # noqa: E402
from tractatus_watch.storage.store import LAKE_CATALOG, Store  # noqa: E402
from support.synthetic import decisions_batch  # noqa: E402
from tractatus_watch.storage.transfer import data_tables  # noqa: E402
from tractatus_watch.storage.writer import ROW_GROUP, Cursor, Writer  # noqa: E402

LAKE = "ducklake:postgres:"
CTX = mp.get_context("spawn")
STATEMENT_LOG = re.compile(r"LOG:  duration: [0-9.]+ ms  statement: ")


def _open(location: str, data_path: str | None, read_only: bool = False) -> Store:
    if location.startswith(LAKE):
        return Store.open(location, data_path=data_path, read_only=read_only)
    return Store.open(Path(location), read_only=read_only)


# --- child processes ---------------------------------------------------------------------------

def _child(fn: Callable[..., Any], out: Any, args: tuple[Any, ...]) -> None:
    try:
        out.put(("ok", fn(*args)))
    except BaseException:
        out.put(("error", traceback.format_exc()))


def _run_children(calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
    """Run each fn(*args) in its own spawned process, concurrently; their results in order."""
    queues = [CTX.Queue() for _ in calls]
    procs = [CTX.Process(target=_child, args=(fn, q, args), daemon=True)
             for (fn, args), q in zip(calls, queues)]
    for p in procs:
        p.start()
    try:
        results = []
        for p, q in zip(procs, queues):
            status, value = q.get()  # before join: a big result would block the child's exit
            p.join()
            if status != "ok":
                raise RuntimeError(f"child process failed:\n{value}")
            results.append(value)
        return results
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()


def _in_child(fn: Callable[..., Any], *args: Any) -> Any:
    return _run_children([(fn, args)])[0]


def ingest_worker(location: str, data_path: str | None, run_id: str, rows: int, commit: int,
                  barrier: Any) -> dict[str, Any]:
    """One collector: open, generate its batches, wait for the others, write them all."""
    batches = [decisions_batch(s, min(commit, rows - s), run_id=run_id, total=rows)
               for s in range(0, rows, commit)]
    store = _open(location, data_path)
    commit_ms: list[float] = []
    writer = Writer(store, flush_rows=ROW_GROUP, flush_interval_s=1.0,
                    on_commit=lambda st: commit_ms.append(st.last_commit_ms))
    barrier.wait()
    start = time.monotonic()  # system-wide on Linux: comparable between processes
    for i, b in enumerate(batches):
        writer.submit(b, Cursor(f"bench-{run_id}", str(i)))
    writer.close()
    end = time.monotonic()
    store.close()
    rows = sum(b.rows for b in batches)
    committed = sum(writer.stats.committed_rows.values())
    if committed != rows:
        raise RuntimeError(f"{run_id}: {committed:,} of {rows:,} rows committed")
    return {"rows": rows, "start": start, "end": end,
            "commits": writer.stats.commits, "commit_ms": statistics.median(commit_ms)}


def build_store(location: str, data_path: str | None, decisions: int, commit: int) -> dict:
    """The query benchmark's data, committed as a collector would (see the docstring)."""
    store = _open(location, data_path)
    writer = Writer(store, max_queue=2, flush_rows=ROW_GROUP, flush_interval_s=1.0)
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, decisions, commit)):
        writer.submit(decisions_batch(start, min(commit, decisions - start), total=decisions,
                                      rounds=500, agents=20), Cursor("bench-build", str(i)))
        writer.flush()
    writer.close()
    seconds = time.perf_counter() - t0
    con = store.cursor()
    info = {"checks": con.execute("SELECT count(*) FROM checks").fetchall()[0][0],
            "rollup_rows": con.execute("SELECT (SELECT count(*) FROM rollup_agent) + "
                                       "(SELECT count(*) FROM rollup_rule)").fetchall()[0][0],
            "commits": writer.stats.commits, "seconds": seconds,
            "files": live_files(con) if store.is_lake else None}
    con.close()
    store.close()
    return info


def _catalog_free(lake: Store) -> Any:
    """A plain DuckDB connection whose tables are views over the lake's current Parquet files:
    the lake's data without its catalog. Tables whose files do not hold exactly their rows
    (rows inlined in the catalog, deletes) are copied instead; they are the small ones."""
    import duckdb

    src = lake.cursor()
    con = duckdb.connect(config={"memory_limit": "256MB", "preserve_insertion_order": False})
    for table in data_tables(src):
        files = src.execute(f"SELECT data_file, delete_file FROM ducklake_list_files("
                            f"'{LAKE_CATALOG}', '{table}')").fetchall()
        rows = src.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        if files and not any(d for _, d in files):
            paths = ", ".join("'" + f.replace("'", "''") + "'" for f, _ in files)
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{paths}])")
            if con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] == rows:
                continue
            con.execute(f"DROP VIEW {table}")
        if rows > 1_000_000:
            raise RuntimeError(f"{table}: {rows:,} rows not all in its files")
        copy = src.execute(f"SELECT * FROM {table}").fetch_arrow_table()
        con.register("_rows", copy)
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM _rows")
        con.unregister("_rows")
    src.close()
    return con


def time_queries(locations: dict[str, str], repeat: int, pg_admin: str,
                 pg_log: str) -> dict[str, Any]:
    """Per store and dashboard query: the first call on a new read-only connection (as a viewer
    opens it), then the median of `repeat` calls, the stores taking turns call by call so that
    load on the machine hits them alike; "parquet" is the lake's files without its catalog.
    Also: every query once in its own transaction vs all in one transaction (a dashboard
    refresh), and the statements each lake query sends to PostgreSQL."""
    stores = {k: _open(loc, None, read_only=True) for k, loc in locations.items()}
    try:
        cons = {k: s.cursor() for k, s in stores.items()}
        cons["parquet"] = _catalog_free(stores["lake"])
        qs = {k: dashboard_queries(c) for k, c in cons.items()}
        names = list(qs["lake"])
        first: dict[str, dict[str, float]] = {k: {} for k in cons}
        for k in cons:
            for q in names:
                t0 = time.perf_counter()
                qs[k][q]()
                first[k][q] = (time.perf_counter() - t0) * 1000
        samples: dict[str, dict[str, list[float]]] = {k: {q: [] for q in names} for k in cons}
        for q in names:
            for _ in range(repeat):
                for k in cons:
                    t0 = time.perf_counter()
                    qs[k][q]()
                    samples[k][q].append((time.perf_counter() - t0) * 1000)
        out: dict[str, Any] = {k: {q: (first[k][q], statistics.median(samples[k][q]))
                                   for q in names} for k in cons}

        def refresh(k: str, one_transaction: bool) -> float:
            t0 = time.perf_counter()
            if one_transaction:
                cons[k].execute("BEGIN TRANSACTION")
            for fn in qs[k].values():
                fn()
            if one_transaction:
                cons[k].execute("COMMIT")
            return (time.perf_counter() - t0) * 1000

        runs: dict[tuple[str, bool], list[float]] = {}
        for _ in range(max(3, repeat // 3)):
            for k in ("file", "lake"):
                for tx in (False, True):
                    runs.setdefault((k, tx), []).append(refresh(k, tx))
        out["refresh"] = {f"{k}{'_tx' if tx else ''}": statistics.median(v)
                          for (k, tx), v in runs.items()}
        out["statements"] = _count_statements(qs["lake"], pg_admin, Path(pg_log))
        for c in cons.values():
            c.close()
        return out
    finally:
        for s in stores.values():
            s.close()


def _count_statements(queries: dict[str, Callable[[], Any]], admin: str,
                      log: Path) -> dict[str, int]:
    """Statements the lake sends its PostgreSQL catalog per query (from the server's log)."""
    import psycopg

    def logging(on: bool) -> None:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f"ALTER SYSTEM SET log_min_duration_statement = {0 if on else -1}")
            c.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)

    counts = {}
    logging(True)
    try:
        for name, fn in queries.items():
            offset = log.stat().st_size
            fn()
            time.sleep(0.2)  # the server writes its log asynchronously
            with log.open("rb") as f:
                f.seek(offset)
                counts[name] = len(STATEMENT_LOG.findall(f.read().decode(errors="replace")))
    finally:
        logging(False)
    return counts


def run_maintain(location: str, data_path: str | None) -> dict[str, Any]:
    with _open(location, data_path) as store:
        r = maintain(store, keep=timedelta(0))
    return {"seconds": r.seconds, "rollup_rows_before": r.rollup_rows_before,
            "rollup_rows_after": r.rollup_rows_after, "files_before": r.files_before,
            "files_after": r.files_after}


# --- the benchmark -----------------------------------------------------------------------------

def ingest(location: str, data_path: str | None, writers: int, rows: int, commit: int) -> dict:
    barrier = CTX.Barrier(writers)
    results = _run_children([(ingest_worker, (location, data_path, f"w{k}", rows, commit,
                                              barrier)) for k in range(writers)])
    total = sum(r["rows"] for r in results)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"rows_per_s": total / wall, "rows": total, "seconds": wall,
            "commits": sum(r["commits"] for r in results),
            "commit_ms": statistics.median(r["commit_ms"] for r in results)}


def summary(times: dict[str, tuple[float, float]]) -> tuple[float, float]:
    """(median over queries of their medians, sum of the medians)."""
    medians = [m for _, m in times.values()]
    return statistics.median(medians), sum(medians)


def machine_noise(pg: TempPostgres) -> str:
    """How busy the machine is: load average and a bare PostgreSQL round trip (the lake's
    queries wait on dozens of them, so a loaded machine hurts the lake more than the file)."""
    import psycopg

    with psycopg.connect(pg.conninfo(), autocommit=True) as con:
        trips = []
        for _ in range(200):
            t0 = time.perf_counter()
            con.execute("SELECT 1").fetchall()
            trips.append((time.perf_counter() - t0) * 1000)
    load = os.getloadavg()[0]
    return (f"load average {load:.1f} on {os.cpu_count()} cores, PostgreSQL round trip "
            f"{statistics.median(trips):.2f} ms median")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=491_520,
                    help="decisions per writer process in the ingest part (2 checks each)")
    ap.add_argument("--commit", type=int, default=61_440,
                    help="decisions per submitted batch in the ingest part")
    ap.add_argument("--writers", default="1,2,4", help="lake writer process counts")
    ap.add_argument("--checks", type=int, default=10_000_000,
                    help="checks in the query part's stores (0 skips the query part)")
    ap.add_argument("--lake-commit", type=int, default=61_440,
                    help="decisions per commit when building the query part's stores")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    writer_counts = [int(n) for n in args.writers.split(",") if n]

    workdir = Path(args.dir or tempfile.mkdtemp(prefix="tw-bench-lake-"))
    workdir.mkdir(parents=True, exist_ok=True)
    pg: TempPostgres | None = None
    figures: dict[str, Any] = {}
    t_start = time.perf_counter()
    try:
        pg = TempPostgres.start()

        def new_lake(name: str) -> tuple[str, str]:
            assert pg is not None
            location, data = LAKE + pg.create_database(name), str(workdir / f"{name}-data")
            Store.open(location, data_path=data).close()  # catalog and schema, untimed
            return location, data

        print(f"machine: {machine_noise(pg)}; work folder {workdir}", flush=True)

        # --- ingest --------------------------------------------------------------------------
        print(f"ingest: {args.rows:,} decisions per writer process (its own run), batches of "
              f"{args.commit:,}; aggregate rows/s (decisions + checks + rewards)", flush=True)

        def show(label: str, res: dict) -> None:
            print(f"  {label:16s}{res['rows_per_s']:>10,.0f} rows/s  ({res['rows']:,} rows in "
                  f"{res['seconds']:.1f} s, {res['commits']} commits, median commit "
                  f"{res['commit_ms']:.0f} ms)", flush=True)

        res = ingest(str(workdir / "ingest.duckdb"), None, 1, args.rows, args.commit)
        file_rate = res["rows_per_s"]
        figures["file_rows_per_s"] = round(file_rate)
        show("file, 1 writer", res)
        for n in writer_counts:
            location, data = new_lake(f"ingest{n}")
            res = ingest(location, data, n, args.rows, args.commit)
            figures[f"lake_rows_per_s_{n}"] = round(res["rows_per_s"])
            show(f"lake, {n} writer{'s' if n > 1 else ''}", res)
        if 1 in writer_counts:
            ratio = figures["lake_rows_per_s_1"] / file_rate
            figures["lake_1_vs_file"] = ratio
            print(f"  lake 1 writer / file: {ratio:.2f} (target >= 0.3): "
                  f"{'met' if ratio >= 0.3 else 'MISSED'}", flush=True)

        # --- queries -------------------------------------------------------------------------
        if args.checks:
            decisions = args.checks // 2
            print(f"queries: a file and a lake with {args.checks:,} checks, one writer each, "
                  f"commits of {args.lake_commit:,} decisions", flush=True)
            file_db = str(workdir / "queries.duckdb")
            lake, lake_data = new_lake("queries")
            for kind, (location, data) in (("file", (file_db, None)), ("lake", (lake, lake_data))):
                info = _in_child(build_store, location, data, decisions, args.lake_commit)
                files = f", {info['files']:,} data files" if info["files"] is not None else ""
                print(f"  {kind}: built in {info['seconds']:.0f} s (data generation included), "
                      f"{info['checks']:,} checks, {info['commits']} commits, "
                      f"{info['rollup_rows']:,} rollup rows{files}", flush=True)
            figures["checks"] = args.checks
            admin, log = pg.conninfo(), str(pg.root / "server.log")
            print(f"  timing (as written) ... {machine_noise(pg)}", flush=True)
            before = _in_child(time_queries, {"file": file_db, "lake": lake}, args.repeat,
                               admin, log)
            m_lake = _in_child(run_maintain, lake, lake_data)
            m_file = _in_child(run_maintain, file_db, None)
            print(f"  maintain: lake {m_lake['seconds']:.1f} s (data files "
                  f"{m_lake['files_before']:,} -> {m_lake['files_after']:,}, rollup rows "
                  f"{m_lake['rollup_rows_before']:,} -> {m_lake['rollup_rows_after']:,}); "
                  f"file {m_file['seconds']:.1f} s (rollup rows "
                  f"{m_file['rollup_rows_before']:,} -> {m_file['rollup_rows_after']:,})",
                  flush=True)
            print(f"  timing (maintained) ... {machine_noise(pg)}", flush=True)
            after = _in_child(time_queries, {"file": file_db, "lake": lake}, args.repeat,
                              admin, log)
            report_queries(args.repeat, before, after, m_lake, figures)
        figures["bench_s"] = round(time.perf_counter() - t_start)
    finally:
        if pg is not None:
            pg.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    last_line(figures)


def report_queries(repeat: int, before: dict, after: dict, m_lake: dict,
                   figures: dict[str, Any]) -> None:
    cols = [("file", before["file"]), ("lake", before["lake"]), ("parquet", before["parquet"]),
            ("file", after["file"]), ("lake", after["lake"]), ("parquet", after["parquet"])]
    names = list(before["file"])
    print(f"\n  median ms of {repeat} calls, stores taking turns; 'parquet': the lake's files "
          "read without its catalog;\n  'stmts': statements the lake query sends to PostgreSQL")
    print(f"  {'':16s}{'as written':>27s}{'':9s}{'maintained':>27s}")
    print(f"  {'query':16s}" + "".join(f"{c:>9s}" for c, _ in cols)
          + f"{'lake/file':>11s}{'maint.':>8s}{'stmts':>9s}")
    for q in names:
        cells = "".join(f"{t[q][1]:>9.1f}" for _, t in cols)
        r0 = before["lake"][q][1] / before["file"][q][1]
        r1 = after["lake"][q][1] / after["file"][q][1]
        st = f"{before['statements'][q]}/{after['statements'][q]}"
        print(f"  {q:16s}{cells}{r0:>11.2f}{r1:>8.2f}{st:>9s}")
    sums = [summary(t) for _, t in cols]
    print(f"  {'median':16s}" + "".join(f"{m:>9.1f}" for m, _ in sums))
    print(f"  {'sum':16s}" + "".join(f"{s:>9.1f}" for _, s in sums))
    firsts = [statistics.median(f for f, _ in t.values()) for _, t in cols]
    print(f"  {'first call, med.':16s}" + "".join(f"{f:>9.1f}" for f in firsts)
          + "   (on a new connection)")
    (f0, _), (l0, _), (p0, _), (f1, f1_sum), (l1, l1_sum), (p1, _) = sums
    worst_q = max(names, key=lambda q: after["lake"][q][1] / after["file"][q][1])
    worst = after["lake"][worst_q][1] / after["file"][worst_q][1]
    print("  a refresh (every query once), median ms: " + "; ".join(
        f"{when} file {r['file']:.0f}, lake {r['lake']:.0f} (in one transaction: file "
        f"{r['file_tx']:.0f}, lake {r['lake_tx']:.0f})"
        for when, r in (("as written", before["refresh"]), ("maintained", after["refresh"]))))
    figures.update({
        "file_query_ms": f0, "lake_query_ms": l0, "lake_query_ms_maintained": l1,
        "file_query_ms_maintained": f1, "parquet_query_ms": p0,
        "parquet_query_ms_maintained": p1,
        "lake_vs_file_query": l0 / f0, "lake_vs_file_query_maintained": l1 / f1,
        "lake_maintained_vs_file_as_written": l1 / f0,
        "lake_vs_file_query_sum_maintained": l1_sum / f1_sum,
        "worst_query_ratio_maintained": worst, "worst_query_maintained": worst_q,
        "lake_refresh_ms_maintained": after["refresh"]["lake"],
        "lake_refresh_ms_maintained_one_tx": after["refresh"]["lake_tx"],
        "file_refresh_ms_maintained": after["refresh"]["file"],
        "lake_statements_per_query": statistics.median(after["statements"].values()),
        "lake_files_before": m_lake["files_before"], "lake_files_after": m_lake["files_after"],
        "lake_maintain_s": m_lake["seconds"]})
    print(f"\n  lake/file, median query: as written {l0 / f0:.2f}; both maintained "
          f"{l1 / f1:.2f} (target <= 3: {'met' if l1 / f1 <= 3 else 'MISSED'}); maintained "
          f"lake vs the file as written {l1 / f0:.2f}; sum of queries {l1_sum / f1_sum:.2f}; "
          f"worst query {worst_q} {worst:.2f}")
    stmts = statistics.median(after["statements"].values())
    print(f"  where the lake's time goes (median query): as written {l0:.1f} ms = Parquet "
          f"files {p0:.1f} + catalog {l0 - p0:.1f}; maintained {l1:.1f} ms = Parquet files "
          f"{p1:.1f} ({p1 / f1:.2f}x the file) + catalog {l1 - p1:.1f} ({stmts:.0f} "
          f"statements, ~{(l1 - p1) / stmts:.1f} ms each)")


if __name__ == "__main__":
    main()
