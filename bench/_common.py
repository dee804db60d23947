"""Shared helpers for the benchmarks (not part of the package)."""

from __future__ import annotations

import json
import resource
from datetime import timedelta
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # test support: synthetic data

import duckdb  # noqa: E402

from tractatus_watch.storage.store import Store  # noqa: E402
from tractatus_watch.storage.writer import Writer  # noqa: E402

from support.synthetic import decisions_batch  # noqa: E402

BATCH = 40_960


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def last_line(figures: dict[str, Any]) -> None:
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                      for k, v in figures.items()}))


def build_checks_db(path: Path, checks: int) -> None:
    """A database of `checks` synthetic checks (2 per decision, 500 rounds, 20 agents),
    ingested through the writer as a collector would."""
    decisions = checks // 2
    store = Store.open(path)
    writer = Writer(store, max_queue=2)
    for start in range(0, decisions, BATCH):
        writer.submit(decisions_batch(start, min(BATCH, decisions - start), total=decisions,
                                      rounds=500, agents=20))
    writer.close()
    store.close()


# Above this many checks the raw rows are not all written (hours and tens of GB here): the
# database holds RAW_CHECKS raw checks, and rollups as that many checks would leave them.
DIRECT_ROLLUPS_ABOVE = 20_000_000
RAW_CHECKS = 10_000_000


def scale_rollups(path: Path, factor: int) -> None:
    """Make the rollups of `path` those of `factor` times its checks, written directly: every
    partial row again `factor - 1` times (an uncompacted store holds partials per commit), the
    copies shifted back in time by the data's span so each minute bucket stays as full and
    there are `factor` times as many (same rounds, agents and rules). The raw tables are left
    as they are, so raw and rollup figures differ in such a database: it is for timing only."""
    con = duckdb.connect(str(path))
    lo, hi = con.execute("SELECT min(ts_min), max(ts_max) FROM rollup_agent").fetchall()[0]
    span = hi - lo + timedelta(minutes=1)
    for k in range(1, factor):
        shift = f"INTERVAL {int(span.total_seconds() * k)} SECOND"
        for table in ("rollup_agent", "rollup_round"):
            con.execute(f"""INSERT INTO {table} BY NAME SELECT * REPLACE (
                ts_min - {shift} AS ts_min, ts_max - {shift} AS ts_max) FROM {table}
                WHERE ts_min >= ?""", [lo])
        con.execute(f"""INSERT INTO rollup_rule BY NAME SELECT * REPLACE (
            minute - {shift} AS minute) FROM rollup_rule WHERE minute >= date_trunc('minute',
            ?::TIMESTAMP)""", [lo])
    # No time column: the same partials again (an uncompacted store holds one per commit).
    for table in ("rollup_rule_round", "rollup_check_latency", "rollup_latency"):
        con.execute(f"CREATE TEMP TABLE _copy AS SELECT * FROM {table}")
        for _ in range(1, factor):
            con.execute(f"INSERT INTO {table} SELECT * FROM _copy")
        con.execute("DROP TABLE _copy")
    con.execute("CHECKPOINT")
    con.close()


def checks_db(db: Path | None, rows: int, *, rebuild: bool, prefix: str,
              base: Path | None = None) -> Path:
    """The benchmark database: `db` (kept between runs) or a new temporary one, built with
    `rows` checks if it does not exist yet (or `rebuild`). Above
    DIRECT_ROLLUPS_ABOVE checks: RAW_CHECKS raw checks (a copy of `base` when given, a database
    of that many checks) with rollups written directly for `rows` (scale_rollups)."""
    import shutil
    import tempfile

    path = db or Path(tempfile.mkdtemp(prefix=prefix)) / f"checks{rows}.duckdb"
    direct = rows > DIRECT_ROLLUPS_ABOVE
    how = built_as(rows)
    if rebuild and path.exists():
        path.unlink()
    if not path.exists():
        print(f"building {path}: {how} ...", flush=True)
        if not direct:
            build_checks_db(path, rows)
        else:
            if base is not None:
                with Store.open(base):  # migrated to this schema first
                    pass
                shutil.copyfile(base, path)
            else:
                build_checks_db(path, RAW_CHECKS)
            scale_rollups(path, rows // RAW_CHECKS)
    return path


def built_as(rows: int) -> str:
    """How checks_db builds a database of `rows` checks (benchmarks print it)."""
    if rows > DIRECT_ROLLUPS_ABOVE:
        return (f"rollups of {rows:,} checks written directly (scale_rollups), raw tables of "
                f"{RAW_CHECKS:,} checks")
    return f"{rows:,} checks ingested through the writer"
