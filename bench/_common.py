"""Shared helpers for the benchmarks (not part of the package)."""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # test support: synthetic data

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


def checks_db(db: Path | None, rows: int, *, rebuild: bool, prefix: str) -> Path:
    """The benchmark database: `db` (kept between runs) or a new temporary one, built with
    `rows` checks if it does not exist yet (or `rebuild`)."""
    import tempfile

    path = db or Path(tempfile.mkdtemp(prefix=prefix)) / f"checks{rows}.duckdb"
    if rebuild and path.exists():
        path.unlink()
    if not path.exists():
        print(f"building {path} with {rows:,} checks ...", flush=True)
        build_checks_db(path, rows)
    return path
