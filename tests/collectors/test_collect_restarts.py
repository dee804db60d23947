"""`tractatus-watch collect` restarted as a user restarts it (real subprocesses, real `agl-server`,
no `--run`): it continues its run, so nothing it re-reads is stored twice; and a record the
store cannot take is quarantined while capture goes on.

Each collector serves its database over Quack (`--serve`), the way `open --remote` watches a
running collector: DuckDB lets no other process open a file a writer holds, and this is how the
test waits for what has been stored instead of sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx

from tractatus_watch.cli.app import open_store
from tractatus_watch.governance.governor import Governor
from tractatus_watch.governance.spool_writer import SpoolWriter
from tractatus_watch.storage.errors import StoreError
from tractatus_watch.storage.serve import token_path
from tractatus_watch.storage.store import Store

from .conftest import AglServer, decision_payload, free_port


class Collect:
    """`collect ARGS --serve PORT --db DB`, the key in the environment only, stderr appended to
    `collect.err` (JSON lines), watched through its Quack server."""

    def __init__(self, workdir: Path, db: Path, args: list[str], key: str = "") -> None:
        self.db, self.key, self.port = db, key, free_port()
        self.err = workdir / "collect.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_WATCH")}
        if key:
            env["AGL_KEY"] = key
        self.started_at = self.err.stat().st_size if self.err.exists() else 0
        with open(self.err, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tractatus_watch", "collect", *args,
                 "--serve", str(self.port), "--db", str(db)],
                env=env, stdout=subprocess.DEVNULL, stderr=err)
        self.remote = self._attach()

    def _attach(self, timeout_s: float = 60.0) -> Store:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, self.log()
            try:
                if token_path(self.db).exists():
                    return open_store(f"quack:127.0.0.1:{self.port}", read_only=True,
                                      token_file=token_path(self.db))
            except StoreError:
                pass
            assert time.monotonic() < deadline, "collect did not start serving\n" + self.log()
            time.sleep(0.1)

    def value(self, sql: str) -> Any:
        cur = self.remote.cursor()
        try:
            return cur.execute(sql).fetchall()[0][0]
        finally:
            cur.close()

    def wait(self, sql: str, expected: Any, what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                got = self.value(sql)
            except duckdb.Error:  # the server went away: say why once collect has exited
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    raise
                raise AssertionError(f"collect exited waiting for {what}\n"
                                     + self.log()) from None
            if got == expected:
                return
            assert self.proc.poll() is None, f"collect exited waiting for {what}\n" + self.log()
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {got}\n" + \
                self.log()
            time.sleep(0.1)

    def log(self) -> str:
        return self.err.read_text(errors="replace")[self.started_at:][-3000:]

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_all().splitlines() if line.strip()]

    def log_all(self) -> str:
        return self.err.read_text(errors="replace")[self.started_at:]

    def stop(self) -> int:
        self.remote.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired as err:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                "collect did not stop within 60 s of SIGTERM\n" + self.log()) from err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Job:
    """Rollouts of a governed job on a gateway, played step by step by the test; what was
    posted is kept in `posted` (decision ids) and `rewards`."""

    def __init__(self, server: AglServer) -> None:
        self.server = server
        self.posted: set[str] = set()
        self.rewards = 0
        self._next: dict[str, int] = {}

    def _client(self) -> httpx.Client:
        return self.server.client()

    def start(self, n: int) -> list[str]:
        with self._client() as c:
            rids = [r["rollout_id"] for r in c.post("/api/rollouts", json=[
                {"input": {"i": i}} for i in range(n)]).json()]
            for rid in rids:
                c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "running",
                                                                   "last_attempt_id": "a0"}})
        return rids

    def decide(self, rids: list[str], n: int, **payload: Any) -> None:
        with self._client() as c:
            for rid in rids:
                for _ in range(n):
                    k = self._next[rid] = self._next.get(rid, -1) + 1
                    did = f"{rid}-d{k}"
                    c.post(f"/api/rollouts/{rid}/attempt/a0/events", json={
                        "event_type": "tractatus.decision",
                        "data": {**decision_payload(did, "agent-1"), **payload}}
                    ).raise_for_status()
                    self.posted.add(did)

    def finish(self, rids: list[str]) -> None:
        with self._client() as c:
            for rid in rids:
                c.post(f"/api/rollouts/{rid}/attempt/a0/events", json={
                    "event_type": "reward", "data": {"value": 0.5}}).raise_for_status()
                c.patch(f"/api/rollouts/{rid}", json={"status": {"state": "succeeded"}})
                self.rewards += 1


def test_restarting_collect_without_run_continues_its_run_and_stores_nothing_twice(
        tmp_path: Path, agl_server: AglServer, agl_key: str) -> None:
    db = tmp_path / "restart.duckdb"
    job = Job(agl_server)
    running = job.start(4)
    job.decide(running, 3)
    first = Collect(tmp_path, db, ["--agl", agl_server.url], agl_key)
    second: Collect | None = None
    try:
        # Read while they run (the running pass), before any of them ends.
        first.wait("SELECT count(*) FROM decisions", 12, "the running rollouts' decisions")
        job.decide(running, 2)
        first.wait("SELECT count(*) FROM decisions", 20, "more decisions")
        assert first.stop() == 0, first.log()
        # While collect is down the job goes on; two rollouts end.
        job.decide(running, 2)
        job.finish(running[:2])
        second = Collect(tmp_path, db, ["--agl", agl_server.url], agl_key)
        job.decide(running[2:], 2)
        job.finish(running[2:])
        late = job.start(2)
        job.decide(late, 3)
        job.finish(late)
        second.wait("SELECT count(*) FROM rollouts WHERE status = 'succeeded'", 6,
                    "every rollout to end")
        second.wait("SELECT count(DISTINCT decision_id) FROM decisions", len(job.posted),
                    "every decision")
        assert second.stop() == 0, second.log()
    finally:
        first.kill()
        if second is not None:
            second.kill()

    assert len(job.posted) == 4 * 7 + 2 * 2 + 2 * 3
    with Store.open(db, read_only=True) as store:
        cur = store.cursor()
        assert cur.execute("SELECT count(*), count(DISTINCT decision_id) FROM decisions"
                           ).fetchall() == [(len(job.posted), len(job.posted))]
        assert {r[0] for r in cur.execute("SELECT decision_id FROM decisions").fetchall()} == \
            job.posted
        [(run_id,)] = cur.execute("SELECT DISTINCT run_id FROM decisions").fetchall()
        assert run_id.startswith("collect-")
        assert cur.execute("SELECT run_id FROM runs").fetchall() == [(run_id,)]
        assert cur.execute("SELECT count(*), count(DISTINCT reward_id) FROM rewards"
                           ).fetchall() == [(6, 6)]
        assert cur.execute("SELECT count(*) = count(DISTINCT (rollout_id, status)) "
                           "FROM rollouts").fetchall() == [(True,)]
        assert cur.execute("SELECT sum(actions), sum(reward_n) FROM rollup_agent"
                           ).fetchall() == [(len(job.posted), 6)]
    resumed = [ln for ln in second.lines() if ln["msg"].startswith("continuing the run")]
    assert [(ln["run_id"], ln["source"]) for ln in resumed] == [(run_id, f"agl:{agl_server.url}")]
    assert agl_key not in (tmp_path / "collect.err").read_text()


def test_restarting_collect_spool_without_run_continues_its_run(tmp_path: Path) -> None:
    db, spool = tmp_path / "spool.duckdb", tmp_path / "spool"

    def write(n: int, start: int) -> None:
        writer = SpoolWriter(spool)
        gov = Governor(mode="enforce", agent_id="a", arm="governed", sink=writer)  # no run id
        for i in range(start, start + n):
            gov.check({"kind": "publish", "text": f"Item {i} on housing"}, round=0)
        writer.close()

    write(5, 0)
    first = Collect(tmp_path, db, ["--spool", str(spool)])
    try:
        first.wait("SELECT count(*) FROM decisions", 5, "the first segment")
        assert first.stop() == 0, first.log()
    finally:
        first.kill()
    write(3, 5)
    second = Collect(tmp_path, db, ["--spool", str(spool)])
    try:
        second.wait("SELECT count(*) FROM decisions", 8, "the second segment")
        assert second.stop() == 0, second.log()
    finally:
        second.kill()
    with Store.open(db, read_only=True) as store:
        runs = store.cursor().execute("SELECT run_id, count(*) FROM decisions GROUP BY ALL"
                                      ).fetchall()
    assert len(runs) == 1 and runs[0][1] == 8 and runs[0][0].startswith("collect-")


def test_a_poison_record_is_quarantined_and_collect_keeps_running_and_restarts_cleanly(
        tmp_path: Path, agl_server: AglServer, agl_key: str) -> None:
    """A decision Agent Lightning serves but whose `round` (2**40) does not fit the INTEGER
    column, in the middle of a run: quarantined; every other decision stored; collect goes on
    capturing and restarts without storing or quarantining anything twice."""
    db = tmp_path / "poison.duckdb"
    job = Job(agl_server)
    collect = Collect(tmp_path, db, ["--agl", agl_server.url], agl_key)
    second: Collect | None = None
    try:
        before = job.start(2)
        job.decide(before, 2)
        poisoned = job.start(1)
        job.decide(poisoned, 1)
        with agl_server.client() as c:
            c.post(f"/api/rollouts/{poisoned[0]}/attempt/a0/events", json={
                "event_type": "tractatus.decision",
                "data": decision_payload("poison-d", "agent-1", agent_round=2 ** 40)}
            ).raise_for_status()
        job.decide(poisoned, 1)
        job.finish(before + poisoned)
        collect.wait("SELECT count(*) FROM quarantine", 1, "the poison record's quarantine")
        after = job.start(2)  # capture goes on after it
        job.decide(after, 2)
        job.finish(after)
        collect.wait("SELECT count(*) FROM decisions", len(job.posted), "every other decision")
        collect.wait("SELECT count(*) FROM rollouts WHERE status = 'succeeded'", 5,
                     "every rollout")
        assert collect.value("SELECT count(*) FROM quarantine WHERE raw LIKE '%poison-d%'") == 1
        assert collect.stop() == 0, collect.log()
        commits = _commits(db)
        second = Collect(tmp_path, db, ["--agl", agl_server.url], agl_key)
        second.wait(f"SELECT count(*) > {commits} FROM ingest_state", True,
                    "the restarted collector's first pass")
        assert second.stop() == 0, second.log()
    finally:
        collect.kill()
        if second is not None:
            second.kill()
    with Store.open(db, read_only=True) as store:
        cur = store.cursor()
        assert cur.execute("SELECT count(*), count(DISTINCT decision_id) FROM decisions"
                           ).fetchall() == [(len(job.posted), len(job.posted))]
        assert cur.execute("SELECT count(*) FROM quarantine").fetchall() == [(1,)]
        assert cur.execute("SELECT count(*) FROM rewards").fetchall() == [(5,)]


def _commits(db: Path) -> int:
    with Store.open(db, read_only=True) as store:
        return int(store.cursor().execute("SELECT count(*) FROM ingest_state").fetchall()[0][0])
