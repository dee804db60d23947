"""Files we write are 0600 and folders 0700 under a permissive umask (022), the DuckDB .wal
included (checked while it exists: a writer still open), unless TRACTATUS_WATCH_UMASK asks
for other modes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tractatus_watch.records.files import UMASK_ENV
from tractatus_watch.storage.store import Store
from support.synthetic import decisions_batch
from tractatus_watch.storage.writer import Writer


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def umask_022(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A user's usual umask; put back afterwards (opening a store tightens it)."""
    monkeypatch.delenv(UMASK_ENV, raising=False)
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def write_with_wal(db: Path) -> dict[str, int]:
    """Open, commit through the writer, and read the modes while the .wal still exists."""
    store = Store.open(db)
    writer = Writer(store)
    try:
        writer.submit(decisions_batch(0, 500, run_id="r", total=500))
        writer.flush()
        wal = db.with_name(db.name + ".wal")
        assert wal.exists()  # the final checkpoint (at close) removes it
        return {"db": mode(db), "wal": mode(wal), "folder": mode(db.parent),
                "parent": mode(db.parent.parent)}
    finally:
        writer.close()
        store.close()


def test_a_library_store_and_its_wal_are_private(tmp_path: Path, umask_022: None) -> None:
    db = tmp_path / "made" / "for-it" / "watch.duckdb"
    assert write_with_wal(db) == {"db": 0o600, "wal": 0o600, "folder": 0o700, "parent": 0o700}


def test_the_user_can_ask_for_group_readable_files(tmp_path: Path, umask_022: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(UMASK_ENV, "027")
    db = tmp_path / "shared" / "watch.duckdb"
    modes = write_with_wal(db)
    assert (modes["db"], modes["wal"], modes["folder"]) == (0o640, 0o640, 0o750)


def test_a_collect_run_writes_private_files_and_folders(tmp_path: Path) -> None:
    from tractatus_watch.governance.governor import Governor
    from tractatus_watch.governance.spool_writer import SpoolWriter

    spool = tmp_path / "spool"
    sw = SpoolWriter(spool)
    gov = Governor(mode="enforce", agent_id="a", arm="governed", run_id="m", sink=sw)
    for i in range(50):
        gov.check({"kind": "publish", "text": f"Item {i}"}, round=0)
    sw.close()
    db = tmp_path / "store" / "deep" / "watch.duckdb"
    alert_log = tmp_path / "logs" / "alerts" / "alerts.jsonl"
    wal = db.with_name(db.name + ".wal")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_WATCH")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tractatus_watch", "collect", "--spool", str(spool),
         "--alert-log", str(alert_log), "--alert-interval", "0.5", "--db", str(db)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, umask=0o022)
    try:
        deadline = time.monotonic() + 60
        while not (wal.exists() and alert_log.exists()):
            assert time.monotonic() < deadline and proc.poll() is None, "no .wal or alert log"
            time.sleep(0.05)
        running = {"wal": mode(wal), "db": mode(db), "alert_log": mode(alert_log)}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert running == {"wal": 0o600, "db": 0o600, "alert_log": 0o600}
    assert [mode(p) for p in (db.parent, db.parent.parent, alert_log.parent,
                              alert_log.parent.parent)] == [0o700] * 4
    assert mode(db) == 0o600 and mode(alert_log) == 0o600
