"""The `collect` runner: several sources into one writer, a clean stop on SIGTERM/SIGINT,
JSON log lines, and a key that is read but never shown."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
from pathlib import Path

import pytest

from tractatus_watch.governance import hooks_path
from tractatus_watch.collectors.runner import (
    AuditSource, KeyFileError, load_key, run_sources, setup_logging,
)
from tractatus_watch.collectors.spool_reader import SpoolReader
from tractatus_watch.governance.spool_writer import SpoolWriter


class Failing:
    source = "broken:1"

    def run(self, sink, stop, get_cursor=None) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("cannot reach it")


def test_sources_run_together_until_sigterm(tmp_path: Path, store, writer, q) -> None:
    spool = tmp_path / "spool"
    with SpoolWriter(spool, fsync=False) as w:
        for i in range(3):
            w.write("decision", {"schema": "tractatus.decision/1", "decision_id": f"s-{i}",
                                 "agent_id": "a", "round": 1, "arm": "governed",
                                 "mode": "enforce", "action": {"kind": "k"},
                                 "checks": [{"service": "S", "rule_id": "R", "verdict": "allow"}],
                                 "executed": True, "ts": 1_790_000_000.0 + i})
    audit = tmp_path / "decisions-2025-01-01.jsonl"
    audit.write_text(json.dumps({"timestamp": "2025-01-01T00:00:00Z", "sessionId": "s",
                                 "action": "boundary_enforcement", "allowed": True,
                                 "rulesChecked": ["inst_016"]}) + "\n")
    stream = io.StringIO()
    setup_logging(stream=stream)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    before = signal.getsignal(signal.SIGTERM)
    result = run_sources([SpoolReader(spool, settle_s=0, poll_s=0.05), AuditSource([str(audit)])],
                         writer, run_id="collect-run", get_cursor=store.get_cursor)
    timer.join()
    assert result.ok and result.interrupted
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored
    assert q("SELECT count(*) FROM decisions WHERE run_id = 'collect-run'")[0][0] == 4
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {"source started", "source stopped", "stopping", "collect finished"} <= \
        {line["msg"] for line in lines}
    assert any(line["msg"].startswith("audit: total: 1 files") for line in lines)
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    logging.getLogger("tractatus_watch").handlers.clear()


def test_a_failing_source_stops_the_rest_with_its_error(tmp_path: Path) -> None:
    stream = io.StringIO()
    setup_logging(stream=stream)
    result = run_sources([Failing(), SpoolReader(tmp_path, settle_s=0, poll_s=0.05)],
                         lambda records: None, handle_signals=False)
    assert result.errors == {"broken:1": "cannot reach it"} and not result.ok
    assert '"error": "cannot reach it"' in stream.getvalue()
    logging.getLogger("tractatus_watch").handlers.clear()


def test_key_from_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cret-key-value"
    key_file = tmp_path / "key"
    key_file.write_text(secret + "\n")
    key_file.chmod(0o600)
    monkeypatch.setenv("AGL_KEY", "from-env")
    assert load_key(key_file) == secret
    assert load_key() == "from-env"
    monkeypatch.delenv("AGL_KEY")
    assert load_key() is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(KeyFileError, match="is empty"):
        load_key(tmp_path / "empty")
    with pytest.raises(KeyFileError, match="cannot read key file") as info:
        load_key(tmp_path / "missing")
    assert secret not in str(info.value)


def test_hooks_path_names_the_shipped_hooks_file() -> None:
    path = hooks_path()
    assert path.name == "agl_hooks.py" and path.is_file()
    assert "class TractatusWatchHooks(RolloutHooks)" in path.read_text()
