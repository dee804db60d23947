"""Exactly once: a SIGKILLed ingest resumed from its cursor, and any order/duplication of batches,
end in the same tables as a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tractatus_watch.storage.store import Store
from support.synthetic import decisions_batch
from tractatus_watch.storage.writer import Cursor, Writer

from .tables import fingerprint

WORKER = Path(__file__).with_name("ingest_worker.py")
BATCHES, SIZE = 30, 500


def run_worker(db: Path, kill_after: int | None = None) -> int:
    """Run the worker; with kill_after, SIGKILL it once it reports that many commits."""
    proc = subprocess.Popen([sys.executable, str(WORKER), str(db), str(BATCHES), str(SIZE)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        if line.startswith("committed"):
            seen += 1
            if kill_after is not None and seen >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.wait(timeout=120)
    return proc.returncode


def test_sigkill_mid_stream_then_resume_equals_clean_run(tmp_path: Path) -> None:
    clean = tmp_path / "clean.duckdb"
    assert run_worker(clean) == 0

    crashed = tmp_path / "crashed.duckdb"
    assert run_worker(crashed, kill_after=7) == -signal.SIGKILL
    with Store.open(crashed) as store:
        resumed_from = int(store.get_cursor("crash-test") or -1)
    assert 6 <= resumed_from < BATCHES - 1  # killed mid-stream, not at the end
    assert run_worker(crashed) == 0

    with Store.open(clean) as a, Store.open(crashed) as b:
        fa, fb = fingerprint(a.cursor()), fingerprint(b.cursor())
        assert fa["decisions"][0] == BATCHES * SIZE
        assert fa["checks"][0] == 2 * BATCHES * SIZE
        assert fa == fb


def _ingest(db: Path, order: list[int], size: int) -> dict[str, tuple[int, int]]:
    with Store.open(db) as store:
        writer = Writer(store, flush_rows=1)
        for n, i in enumerate(order):
            writer.submit(decisions_batch(i * size, size, total=6 * size, rounds=4),
                          Cursor("prop", str(n)))
        writer.close()
        return fingerprint(store.cursor())


_REFERENCE: dict[str, tuple[int, int]] = {}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=5), min_size=6, max_size=14)
       .filter(lambda xs: set(xs) == set(range(6)))
       .flatmap(st.permutations))
def test_any_order_and_redelivery_gives_same_tables(order: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if not _REFERENCE:
            _REFERENCE.update(_ingest(Path(tmp) / "ref.duckdb", list(range(6)), 40))
        got = _ingest(Path(tmp) / "db.duckdb", order, 40)
    assert got == _REFERENCE
    assert got["decisions"][0] == 240
