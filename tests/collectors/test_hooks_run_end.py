"""A trainer that uses only the hooks file marks its run ended when its process exits (Agent
Lightning 1.0.2 hooks have no shutdown callback): one `run` record in the spool's last segment,
stored in run_events by the collector. So `check` after training passes, also judged long
after, and `runs` shows `ended_at`; the same spool without that record leaves the run open and
a later `check` fires GovernanceNoData. Real parts: the real gateway, Agent Lightning's own
AglRolloutManager (in this process and in a trainer subprocess that exits normally), real spool
folders, real DuckDB files, real `tractatus-watch` processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agentlightning.hooks import load_hooks
from agentlightning.verl.agl_rollout_manager import AglRolloutManager
from tractatus_watch.collectors.sink import writer_sink
from tractatus_watch.collectors.spool_reader import SpoolReader
from tractatus_watch.governance import hooks_path
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer

from ..test_cli_storage import tw
from .test_hooks_tap import Agents

TRAINER = Path(__file__).with_name("hooks_trainer.py")
RUN = "hooks-exit-run"
END = {"run_id": RUN, "event": "ended", "source": "trainer hooks",
       "detail": "the trainer process exited"}


def records(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """(segment name, record) of every published line, in segment order."""
    return [(seg.name, json.loads(line)) for seg in sorted(folder.glob("seg-*.ndjson"))
            for line in seg.read_text().splitlines()]


def ends(folder: Path) -> list[dict[str, Any]]:
    return [r["data"] for _, r in records(folder) if r["type"] == "run"]


def without_ts(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "ts"}


def play(url: str, key: str) -> Agents:
    agents = Agents(url, key)
    agents.thread.start()
    return agents


def collect(spool: Path, db: Path) -> None:
    """What `collect --spool` does with a spool, through the collector API: without the
    session's own end at stop, so only the trainer's record can end the run."""
    with Store.open(db) as store:
        writer = Writer(store)
        try:
            SpoolReader(spool, settle_s=0).poll_once(writer_sink(writer, "spool-run"))
        finally:
            writer.close()


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with Store.open(db, read_only=True) as store:
        return store.cursor().execute(sql).fetchall()


def last_data(db: Path) -> datetime:
    last = query(db, f"SELECT max(ts) FROM decisions WHERE run_id = '{RUN}'")[0][0]
    return last.replace(tzinfo=timezone.utc)


def run_row(db: Path) -> dict[str, Any]:
    result = tw("runs", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    return next(r for r in json.loads(result.stdout) if r["run_id"] == RUN)


def check(db: Path, at: datetime | None = None) -> tuple[int, list[dict[str, Any]]]:
    args = ["check", "--run", RUN, "--format", "json"]
    if at is not None:
        args += ["--at", at.isoformat()]
    result = tw(*args, db=db)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)["firing"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, agl_gateway: Any) -> Path:
    """The spool of a trainer process that trained one step of two rollouts and exited."""
    spool = tmp_path_factory.mktemp("trainer") / "spool"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACTATUS_WATCH", "AGL_"))}
    env.update(TRACTATUS_WATCH_SPOOL=str(spool), TRACTATUS_WATCH_RUN_ID=RUN,
               AGL_KEY=agl_gateway.key)
    agents = play(agl_gateway.url, agl_gateway.key)
    try:
        result = subprocess.run([sys.executable, str(TRAINER), agl_gateway.url, "2"], env=env,
                                capture_output=True, text=True, timeout=120)
    finally:
        agents.stop.set()
        agents.thread.join(10)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "completed 2 errors 0" in result.stdout, result.stdout[-3000:]
    return spool


def test_close_records_the_run_end_in_the_last_segment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agl_gateway: Any) -> None:
    spool = tmp_path / "spool"
    monkeypatch.setenv("TRACTATUS_WATCH_SPOOL", str(spool))
    monkeypatch.setenv("TRACTATUS_WATCH_RUN_ID", RUN)
    monkeypatch.delenv("TRACTATUS_WATCH_USER_HOOKS", raising=False)
    hooks = load_hooks(str(hooks_path()))  # exactly what the trainer does
    hooks.on_startup()
    agents = play(agl_gateway.url, agl_gateway.key)
    try:
        manager = AglRolloutManager(agl_base_url=agl_gateway.url, agl_key=agl_gateway.key,
                                    model="qwen", step=4, train_rollout_n=2,
                                    poll_interval_seconds=0.05, hooks=hooks)
        done = manager.enqueue_and_wait_until_completed({"prompt": ["p0"]}, is_train=True)
    finally:
        agents.stop.set()
        agents.thread.join(10)
    assert len(done) == 2
    assert ends(spool) == []  # training still goes on: nothing ended yet
    hooks.close()  # what atexit runs at the trainer's exit
    lines = records(spool)
    last_segment = max(name for name, _ in lines)
    name, last = lines[-1]
    assert name == last_segment and last["type"] == "run"
    assert without_ts(last["data"]) == END
    data_ts = [r["data"]["ts"] for _, r in lines if r["type"] in ("decision", "rollout")]
    assert len(data_ts) == 2 * 3 + 2 * 2  # 3 decisions and 2 transitions per rollout
    assert last["data"]["ts"] >= max(data_ts)  # at or after the last data: it ends the run
    hooks.close()  # atexit runs it again: no second end
    assert len(ends(spool)) == 1 and hooks.counts["errors"] == 0


# The spool writer's rotation thread is running: fork warns about threads, harmless here (the
# child only closes the hooks and leaves by os._exit).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_a_forked_child_that_exits_ends_nothing(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    spool = tmp_path / "spool"
    monkeypatch.setenv("TRACTATUS_WATCH_SPOOL", str(spool))
    monkeypatch.setenv("TRACTATUS_WATCH_RUN_ID", RUN)
    monkeypatch.delenv("TRACTATUS_WATCH_USER_HOOKS", raising=False)
    hooks = load_hooks(str(hooks_path()))
    hooks.on_startup()
    pid = os.fork()
    if pid == 0:  # a worker the trainer forked, leaving through its atexit handlers
        try:
            hooks.close()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ends(spool) == []
    hooks.close()  # the trainer itself exits
    assert [without_ts(e) for e in ends(spool)] == [END]


def test_a_trainer_process_that_exits_records_its_run_end(trained: Path) -> None:
    lines = records(trained)
    assert [without_ts(d) for d in ends(trained)] == [END]
    name, last = lines[-1]
    assert last["type"] == "run" and name == max(n for n, _ in lines)
    assert sum(1 for _, r in lines if r["type"] == "decision") == 2 * 3


def test_the_collected_run_is_ended_and_check_passes(trained: Path, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    collect(trained, db)
    assert query(db, "SELECT run_id, event, source, detail FROM run_events") == [
        (RUN, "ended", "trainer hooks", "the trainer process exited")]
    assert run_row(db)["ended_at"] is not None
    last = last_data(db)
    # Right after training and half an hour later (no-data fires 5 minutes to 6 hours after
    # the last data of a run that did not end).
    for at in (None, last + timedelta(minutes=30)):
        assert check(db, at) == (0, []), at


def test_without_the_run_record_the_run_stays_open(trained: Path, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    shutil.copytree(trained, spool)
    removed = 0
    for seg in spool.glob("seg-*.ndjson"):
        kept = [line for line in seg.read_text().splitlines()
                if json.loads(line)["type"] != "run"]
        removed += len(seg.read_text().splitlines()) - len(kept)
        seg.write_text("".join(line + "\n" for line in kept))
    assert removed == 1
    db = tmp_path / "w.duckdb"
    collect(spool, db)
    assert query(db, "SELECT count(*) FROM run_events") == [(0,)]
    assert query(db, f"SELECT count(*) FROM decisions WHERE run_id = '{RUN}'") == [(6,)]
    assert run_row(db)["ended_at"] is None
    code, firing = check(db, last_data(db) + timedelta(minutes=30))
    assert code == 1
    assert [(f["alertname"], f["run_id"]) for f in firing] == [("GovernanceNoData", RUN)]


def test_collect_command_stores_the_trainer_end_beside_its_own(trained: Path,
                                                               tmp_path: Path) -> None:
    db = tmp_path / "c.duckdb"
    # The collector reads a segment once it is 3 s old (settle time): wait for that.
    newest = max(p.stat().st_ctime for p in trained.glob("seg-*.ndjson"))
    deadline = time.monotonic() + 30
    while time.time() < newest + 3.5:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_WATCH")}
    proc = subprocess.Popen([sys.executable, "-m", "tractatus_watch", "collect", "--spool",
                             str(trained), "--db", str(db)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    started = threading.Event()
    err: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            if "source started" in line:
                started.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        # SIGTERM only once its handler is in place; the last pass reads the settled spool.
        assert started.wait(60), "".join(err)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        reader.join(10)
    assert proc.returncode == 0, "".join(err)
    rows = query(db, "SELECT source, detail, ts FROM run_events WHERE run_id = "
                     f"'{RUN}' ORDER BY ts")
    assert [(s, d) for s, d, _ in rows] == [("trainer hooks", "the trainer process exited"),
                                            ("collector stopped", None)]
    # The run ended when the trainer exited; the collector's stop came later.
    assert rows[0][2].replace(tzinfo=timezone.utc) >= last_data(db)
