"""Watching a running collector from another process: `collect --serve` and `open --remote`.

A real `agl-server` is fed governed rollouts while `tractatus-watch collect --agl URL --serve
PORT` polls it into its DuckDB file and serves that file over Quack on 127.0.0.1; the dashboard
(the real Textual app) attaches to it as `open --remote` does and follows the ingest. Then the
refusals: a wrong token, a non-loopback address without --serve-public, a store that cannot be
served, and writes through the server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from textual.widgets import Static

from tractatus_watch.cli.app import open_store
from tractatus_watch.cli.commands.collect import serve_plan
from tractatus_watch.monitor.session import ServePlan
from tractatus_watch.cli.config import CliError
from tractatus_watch.storage import extensions, queries
from tractatus_watch.storage.errors import StoreError
from tractatus_watch.storage.remote import inline
from tractatus_watch.storage.serve import serve, serve_with_token_file, token_path
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.target import StoreTarget
from support.synthetic import decisions_batch
from tractatus_watch.storage.writer import Writer
from tractatus_watch.tui.app import Dashboard

from .collectors.conftest import AglServer, Training, free_port
from .test_cli_storage import tw
from .tui.helpers import screen_text

RUN = "quack-run"
PER_ROUND = 6  # rollouts per round; each makes Training.decisions (4) governed decisions


def governed(con: Any) -> int:
    return int(con.execute("SELECT count(*) FROM decisions WHERE run_id = ? AND arm = ?",
                           [RUN, "governed"]).fetchall()[0][0])


def start_collector(db: Path, agl: AglServer, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_WATCH")}
    env["AGL_KEY"] = agl.key
    return subprocess.Popen(
        [sys.executable, "-m", "tractatus_watch", "collect", "--agl", agl.url, "--run", RUN,
         "--serve", str(port), "--store", f"duckdb:{db}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def attach(port: int, token_file: Path, proc: subprocess.Popen[str]) -> Store:
    """The store `open --remote quack:127.0.0.1:PORT --token-file FILE` opens, once the
    collector serves."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if token_file.exists():
                return open_store(f"quack:127.0.0.1:{port}", read_only=True,
                                  token_file=token_file)
        except StoreError:
            pass
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the collector did not start serving"
        time.sleep(0.1)


def test_dashboard_follows_a_served_collector(tmp_path: Path) -> None:
    agl = AglServer(tmp_path, key="agl-" + os.urandom(8).hex())
    agl.start()
    db, port = tmp_path / "served.duckdb", free_port()
    proc = start_collector(db, agl, port)
    sim = Training(agl.url, agl.key, run_id=RUN, delete_after_s=None, step_s=0.005)
    token_file = token_path(db)
    remote: Store | None = None
    try:
        remote = attach(port, token_file, proc)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()

        # A wrong token is refused in one line, by `runs` and by `open --remote` itself.
        for args in (("runs", "--store", f"quack:127.0.0.1:{port}"),
                     ("open", "--remote", f"quack:127.0.0.1:{port}")):
            wrong = tw(*args, env={"TRACTATUS_WATCH_TOKEN": "not-the-token-0123456789"})
            assert wrong.returncode == 2, wrong.stderr
            assert wrong.stderr.startswith("error: ") and "refused the token" in wrong.stderr
            assert wrong.stderr.count("\n") == 1 and "Traceback" not in wrong.stderr

        shown: list[int] = []
        remote_counts: list[int] = []
        asyncio.run(watch(remote, port, sim, shown, remote_counts))
        per_round = PER_ROUND * sim.decisions
        assert shown == sorted(shown)  # every value the dashboard showed: only growing
        assert shown[-1] == 2 * per_round and per_round in shown
        # What a remote query returned when the dashboard had caught up with each round.
        assert remote_counts == [per_round, 2 * per_round]

        remote.close()
        remote = None
    finally:
        if remote is not None:
            remote.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        agl.stop()
    assert proc.returncode == 0, err
    assert token not in err and agl.key not in err  # the log names the file, not the token
    assert f'"token_file": "{token_file}"' in err and f"quack:127.0.0.1:{port}" in err
    assert not token_file.exists()  # worthless once the server stopped: removed
    with Store.open(db, read_only=True) as store:
        cur = store.cursor()
        assert governed(cur) == shown[-1]  # the file holds what the dashboard showed last
        cur.close()


async def watch(store: Store, port: int, sim: Training, shown: list[int],
                remote_counts: list[int]) -> None:
    """The dashboard over the served store while two rounds of training are collected."""
    app = Dashboard(store, interval=0.2, title=f"tractatus-watch · {store.target.short}",
                    export_dir=Path.cwd())

    def actions() -> int | None:
        kpis = app.query_one("#kpis", Static).render()
        words = str(kpis).split()
        if "actions" not in words or words[words.index("actions") + 1] == "…":
            return None
        return int(words[words.index("actions") + 1].replace(",", ""))

    async def until(n: int, pilot: Any) -> None:
        """Wait for the KPI strip to show n actions, noting each value shown on the way."""
        # Bounded, and generous: at load 14 in CI a round took over 30 s from the trainer's
        # posts to the served collector's commit and the dashboard's next report.
        deadline = asyncio.get_running_loop().time() + 90
        while True:
            value = actions()
            if value is not None and (not shown or shown[-1] != value):
                shown.append(value)
            if value == n:
                return
            assert asyncio.get_running_loop().time() < deadline, screen_text(app)
            await pilot.pause(0.05)

    async with app.run_test(size=(120, 40)) as pilot:
        per_round = PER_ROUND * sim.decisions
        await asyncio.to_thread(sim.round, 0, PER_ROUND)
        await until(per_round, pilot)
        cur = store.cursor()
        try:
            remote_counts.append(governed(cur))
            status = str(app.query_one("#status").render())
            assert f"quack:127.0.0.1:{port} read-only" in status
            refreshes = app.refreshes
            await asyncio.to_thread(sim.round, 1, PER_ROUND)
            await until(2 * per_round, pilot)
            assert app.refreshes > refreshes
            remote_counts.append(governed(cur))
        finally:
            cur.close()
        assert f"run {RUN}" in screen_text(app)


def test_serve_refuses_what_it_should(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    db = tmp_path / "never.duckdb"
    public = tw("collect", "--spool", str(spool), "--serve", f"0.0.0.0:{free_port()}", db=db)
    assert public.returncode == 2
    assert public.stderr.startswith("error: --serve 0.0.0.0:") and "--serve-public" in \
        public.stderr and public.stderr.count("\n") == 1
    assert not db.exists()  # refused before anything was opened
    lake = tw("collect", "--spool", str(spool), "--serve", "9555", "--store",
              "ducklake:postgres:host=127.0.0.1 dbname=nowhere")
    assert lake.returncode == 2 and "open directly with --store" in lake.stderr
    assert lake.stderr.count("\n") == 1 and "Traceback" not in lake.stderr
    # The same checks, in process, for the other mistakes.
    short = tmp_path / "short-token"
    short.write_text("abc\n")
    file_store = StoreTarget("duckdb", path=db)
    for args, says in (
            (("not-a-port", False, None), "expected PORT or HOST:PORT"),
            (("127.0.0.1:99999", False, None), "expected PORT or HOST:PORT"),
            (("10.1.2.3:9555", False, None), "--serve-public"),
            ((None, True, None), "go with --serve"),
            (("9555", False, tmp_path / "missing"), "cannot read the token file"),
            (("9555", False, short), "at least 16 characters")):
        with pytest.raises((CliError, StoreError), match=says):
            serve_plan(*args, file_store)
    for serve_at, timeout in (("9555", 0.0), ("9555", -1.0), ("9555", float("nan")),
                              ("9555", 1e9), (None, 5.0)):
        with pytest.raises(CliError, match="--serve-timeout"):
            serve_plan(serve_at, False, None, file_store, timeout_s=timeout)
    timed = serve_plan("9555", False, None, file_store, timeout_s=2.5)
    assert timed is not None and timed.timeout_s == 2.5
    plan = serve_plan("[::1]:9555", False, None, file_store)
    assert plan is not None and (plan.host, plan.port, plan.token) == ("::1", 9555, None)
    plan = serve_plan("0.0.0.0:9555", True, None, file_store)
    assert plan is not None and plan.public and plan.host == "0.0.0.0"
    assert serve_plan("9555", False, None, file_store) == ServePlan("127.0.0.1", 9555, False,
                                                                    None)
    assert not db.exists()


def test_the_server_answers_reads_only(tmp_path: Path) -> None:
    """Whatever a client asks: the collector's own instance refuses writes, file reads and
    server functions, while the dashboard's queries (joins included) answer as on the file."""
    path = tmp_path / "guarded.duckdb"
    with Store.open(path) as store:
        writer = Writer(store)
        writer.submit(decisions_batch(0, 2_000, run_id="guard-run", rounds=4))
        writer.close()
        server = serve(store, "127.0.0.1", free_port(), "guard-token-0123456789")
        try:
            local = store.cursor()
            with open_store(f"quack:127.0.0.1:{server.port}", read_only=True,
                            token_file=_token(tmp_path, "guard-token-0123456789")) as remote:
                cur = remote.cursor()
                assert queries.runs(cur).equals(queries.runs(local))
                assert queries.per_round(cur, "guard-run").equals(
                    queries.per_round(local, "guard-run"))
                assert queries.freshness(cur, "guard-run") == queries.freshness(local,
                                                                                "guard-run")
                cur.close()
            # A client that attaches without READ_ONLY, or sends SQL of its own.
            client = duckdb.connect(config={"autoinstall_known_extensions": False,
                                            "autoload_known_extensions": False})
            extensions.load(client, "quack", "httpfs")
            client.execute(f"ATTACH '{server.uri}' AS r (TOKEN 'guard-token-0123456789')")
            for sql, what in (("DELETE FROM decisions", "DELETE is not allowed"),
                              ("CREATE TABLE x (i INT)", "CREATE is not allowed"),
                              ("SELECT * FROM read_text('/etc/hostname')",
                               "table function read_text is not allowed"),
                              ("SELECT * FROM 'elsewhere.csv'",
                               "'elsewhere.csv' is not a stored table"),
                              (f"CALL quack_stop('{server.uri}')", "CALL is not allowed"),
                              ("SELECT 1; DROP TABLE runs", "2 statements")):
                with pytest.raises(duckdb.Error, match=f"query refused: {what}"):
                    client.execute("FROM r.query(?)", [sql]).fetchall()
            # Rows a client appends are refused too (Quack says only "Authorization failed").
            with pytest.raises(duckdb.Error, match="Authorization failed"):
                client.execute("INSERT INTO r.runs VALUES ('x', NULL, TIMESTAMP '2026-01-01', "
                               "NULL, NULL)")
            client.close()
            assert local.execute("SELECT count(*) FROM decisions").fetchall() == [(2_000,)]
            assert local.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]
            local.close()
        finally:
            server.stop()
        with pytest.raises(StoreError, match="not a loopback address"):
            serve(store, "0.0.0.0", free_port(), "guard-token-0123456789")
        with pytest.raises(StoreError, match="at least 16"):
            serve(store, "127.0.0.1", free_port(), "short")
        # A generated token file is removed when the server stops; another port is free again.
        again = serve_with_token_file(store, "127.0.0.1", free_port())
        assert again.token_file is not None and again.token_file.exists()
        again.stop()
        assert not again.token_file.exists()


def _token(folder: Path, token: str) -> Path:
    path = folder / "viewer.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("value", [
    "it's a ? here", 7, 2**70, 1.1, None, True, [1, 2], ["a, b", "c'd", 'e"f'],
    {"a": 1, "b": "x"}, b"\x00\xff"])
def test_parameters_reach_the_server_unchanged(value: Any) -> None:
    con = duckdb.connect()
    sql = inline(con, "SELECT ? AS v, '?' AS q -- ?", [value])
    assert con.execute(sql).fetchall() == con.execute("SELECT ? AS v, '?' AS q",
                                                     [value]).fetchall()
