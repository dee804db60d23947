"""The dashboard commands' errors: one line, exit code 2, and what to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tractatus_watch.cli.app import app
from tractatus_watch.cli.config import CliError
from tractatus_watch.storage.store import Store

import tractatus_watch.cli.commands.tui  # noqa: F401  (registers open and live)

from .helpers import command


def invoke(*args: str) -> None:
    app([*args], standalone_mode=False)


def test_bad_arguments_are_one_line_errors(tui_db: Path) -> None:
    with pytest.raises(CliError, match="live needs at least one source"):
        invoke("live", "--db", str(tui_db))
    with pytest.raises(CliError, match="--view: no view 'charts'"):
        invoke("open", "--db", str(tui_db), "--view", "charts")
    with pytest.raises(CliError, match="no run 'nosuch'; runs: alpha, beta"):
        invoke("open", "--db", str(tui_db), "--run", "nosuch")


def test_open_on_a_database_held_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "busy.duckdb"
    Store.open(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tractatus_watch.storage.store import "
         "Store; s = Store.open(sys.argv[1]); print('ready', flush=True); time.sleep(60)",
         str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = subprocess.run([*command(), "open", "--db", str(path)], capture_output=True,
                                text=True, timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: database {path} is in use by PID {holder.pid}")
    assert "run the dashboard in the collecting process: `tractatus-watch live`" in lines[0]
