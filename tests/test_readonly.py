"""Read-only means read-only, on both paths a query can take.

Locally, `tractatus-watch query` (the real CLI, in process through `cli.main`); remotely, a raw
Quack client that attached without READ_ONLY and sends its own SQL to a served store. Every
attempt in ATTEMPTS is refused on both with a one-line error naming what was refused, and
leaves nothing behind; the LEGAL queries answer exactly as DuckDB does on the file. Then the
server's limits: a query stops at --serve-timeout, a query whose client is killed stops within a
bound (the collector's CPU time goes quiet), and a computed result is bounded while a plain
scan streams.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psutil
import pytest

from tractatus_watch.cli import main
from tractatus_watch.storage import extensions, readonly
from tractatus_watch.storage.serve import Server, serve
from tractatus_watch.storage.store import Store
from support.synthetic import decisions_batch
from tractatus_watch.storage.writer import Writer

from .collectors.conftest import free_port
from .test_cli_storage import tw

TOKEN = "readonly-token-0123456789"
DECISIONS = 3_000
SLOW = "SELECT count(*) FROM decisions a, decisions b, decisions c"  # ~2.7e10 rows

# (SQL, what the refusal names). `{dir}` is a folder of the test's own.
ATTEMPTS: list[tuple[str, str]] = [
    ("COPY decisions TO '{dir}/copy.csv'", "COPY is not allowed"),
    ("COPY (SELECT * FROM runs) TO '{dir}/copy.parquet' (FORMAT parquet)", "COPY is not allowed"),
    ("ATTACH '{dir}/other.duckdb' AS other", "ATTACH is not allowed"),
    ("ATTACH '{dir}/other.duckdb' AS other (READ_ONLY)", "ATTACH is not allowed"),
    ("DETACH other", "DETACH is not allowed"),
    ("SELECT 1; DROP TABLE runs", "2 statements"),
    ("SELECT * FROM runs; SELECT * FROM decisions", "2 statements"),
    ("SELECT * FROM read_csv('/etc/passwd')", "table function read_csv is not allowed"),
    ("FROM '/etc/passwd'", "'/etc/passwd' is not a stored table"),
    ("SELECT * FROM 'https://example.com/x.csv'", "'https://example.com/x.csv' is not a stored"),
    ("WITH p AS (FROM '/etc/passwd') SELECT * FROM p", "'/etc/passwd' is not a stored table"),
    # A recursive CTE names itself only in its recursive part: the anchor would read the file.
    ('WITH RECURSIVE "/etc/passwd" AS (FROM "/etc/passwd" UNION ALL FROM "/etc/passwd") '
     'FROM "/etc/passwd"', "'/etc/passwd' is not a stored table"),
    # A CTE is not visible before it is defined, nor outside its own query.
    ('WITH a AS (FROM "/etc/passwd"), "/etc/passwd" AS (SELECT 1) FROM a',
     "'/etc/passwd' is not a stored table"),
    ('SELECT * FROM (WITH "/etc/passwd" AS (SELECT 1) SELECT 2), "/etc/passwd"',
     "'/etc/passwd' is not a stored table"),
    ("SELECT (SELECT count(*) FROM '/etc/passwd') AS n", "'/etc/passwd' is not a stored table"),
    ("DESCRIBE '/etc/passwd'", "'/etc/passwd' is not a stored table"),
    ("SELECT * FROM read_text('/etc/hostname')", "table function read_text is not allowed"),
    ("SELECT * FROM glob('/etc/*')", "table function glob is not allowed"),
    ("SELECT * FROM read_parquet('{dir}/x.parquet')", "table function read_parquet is not"),
    ("FROM range(1000000000)", "table function range is not allowed"),
    ("FROM query('SELECT 1')", "table function query is not allowed"),
    ("INSTALL httpfs", "INSTALL is not allowed"),
    ("LOAD httpfs", "LOAD is not allowed"),
    ("SET memory_limit = '10GB'", "SET is not allowed"),
    ("SET GLOBAL enable_external_access = true", "SET is not allowed"),
    ("RESET memory_limit", "RESET is not allowed"),
    ("PRAGMA enable_profiling", "PRAGMA is not allowed"),
    ("PRAGMA database_list", "PRAGMA is not allowed"),
    ("CALL checkpoint()", "CALL is not allowed"),
    ("CHECKPOINT", "CHECKPOINT is not allowed"),
    ("INSERT INTO runs SELECT * FROM runs", "INSERT is not allowed"),
    ("UPDATE decisions SET verdict = 'allow'", "UPDATE is not allowed"),
    ("DELETE FROM decisions", "DELETE is not allowed"),
    ("CREATE TABLE x (i INTEGER)", "CREATE is not allowed"),
    ("CREATE VIEW v AS SELECT * FROM '/etc/passwd'", "CREATE is not allowed"),
    ("DROP TABLE runs", "DROP is not allowed"),
    ("EXPORT DATABASE '{dir}/dump'", "EXPORT is not allowed"),
    ("SELECT * FROM quack_serve('quack:127.0.0.1:9')", "table function quack_serve is not"),
    ("SELECT * FROM checkpoint()", "table function checkpoint is not allowed"),
    ("SELECT current_setting('memory_limit')", "function current_setting is not allowed"),
    ("SELECT getenv('AGL_KEY')", "function getenv is not allowed"),
    ("SELECT * FROM duckdb_settings()", "table function duckdb_settings is not allowed"),
    ("SELECT * FROM tw_quack_guard.main.r1", "'tw_quack_guard.main.r1' is not a stored"),
    ("BEGIN TRANSACTION", "BEGIN is not allowed"),
]

LEGAL: list[str] = [
    "SELECT arm, count(*) AS n FROM decisions GROUP BY arm ORDER BY arm",
    "SELECT r.run_id, count(d.decision_id) AS n FROM runs r JOIN decisions d USING (run_id) "
    "GROUP BY r.run_id ORDER BY r.run_id",
    "WITH g AS (SELECT * FROM decisions WHERE arm = 'governed'), "
    "b AS (SELECT round, count(*) AS blocked FROM g WHERE NOT executed GROUP BY round) "
    "SELECT round, blocked FROM b ORDER BY round",
    "SELECT decision_id, round, row_number() OVER (PARTITION BY round ORDER BY ts DESC, "
    "decision_id) AS k FROM decisions QUALIFY k <= 2 ORDER BY round, k",
    "SELECT count(*) AS n, sum(n_checks) AS checks FROM decisions d "
    "WHERE EXISTS (SELECT 1 FROM checks c WHERE c.decision_id = d.decision_id)",
    "WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r WHERE i < 4) "
    "SELECT i, (SELECT count(*) FROM decisions WHERE round = i) AS n FROM r ORDER BY i",
    "SELECT decision_id FROM decisions ORDER BY ts DESC, decision_id LIMIT 5",
    "SELECT * FROM runs",
    "DESCRIBE decisions",
]


def _fill(path: Path, rows: int = DECISIONS) -> None:
    with Store.open(path) as store:
        writer = Writer(store)
        writer.submit(decisions_batch(0, rows, run_id="ro-run", rounds=5))
        writer.close()


def _expected(path: Path, sql: str) -> list[tuple]:
    with Store.open(path, read_only=True) as store:
        cur = store.cursor()
        try:
            return cur.execute(sql).fetchall()
        finally:
            cur.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ro") / "watch.duckdb"
    _fill(path)
    return path


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        *args: str) -> tuple[int, str, str]:
    """`tractatus-watch ARGS` in this process, through the entry point users run."""
    monkeypatch.setattr(sys, "argv", ["tractatus-watch", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_local_query_refuses_every_attempt_in_one_line(
        db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACTATUS_WATCH_DB", str(db))
    before = _expected(db, "SELECT (SELECT count(*) FROM decisions), (SELECT count(*) FROM runs)")
    for template, what in ATTEMPTS:
        sql = template.format(dir=tmp_path)
        code, out, err = cli(capsys, monkeypatch, "query", sql)
        assert code == 2, (sql, out, err)
        assert err.startswith(f"error: query refused: {what}"), (sql, err)
        assert err.count("\n") == 1 and "Traceback" not in err and out == ""
    assert list(tmp_path.iterdir()) == []  # no copy, no attached file, no dump
    after = _expected(db, "SELECT (SELECT count(*) FROM decisions), (SELECT count(*) FROM runs)")
    assert after == before == [(DECISIONS, 1)]


def test_local_query_answers_legal_queries(db: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACTATUS_WATCH_DB", str(db))
    for sql in LEGAL:
        code, out, err = cli(capsys, monkeypatch, "query", sql, "--format", "json")
        assert code == 0, (sql, err)
        rows = __import__("json").loads(out)
        expected = _expected(db, sql)
        assert len(rows) == len(expected) and len(rows) > 0, sql
        assert [list(r.values())[0] for r in rows] == [
            e[0].isoformat() if hasattr(e[0], "isoformat") else e[0] for e in expected], sql


def test_the_local_connection_is_sealed_too(db: Path, tmp_path: Path) -> None:
    """What the parse check would miss, the engine refuses: the connection `query` runs on
    has no external access and a locked configuration, and still reads the store."""
    with Store.open(db, read_only=True) as store:
        readonly.seal(store.con, lock=True)
        cur = store.cursor()
        assert cur.execute("SELECT count(*) FROM decisions").fetchall() == [(DECISIONS,)]
        for sql, says in ((f"COPY runs TO '{tmp_path}/x.csv'", "Permission Error"),
                          ("SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
                          (f"ATTACH '{tmp_path}/o.duckdb' AS o", "Permission Error"),
                          ("SET threads = 1", "configuration has been locked"),
                          ("SET GLOBAL enable_external_access = true", "locked")):
            with pytest.raises(duckdb.Error, match=says):
                cur.execute(sql)
        cur.close()
    assert list(tmp_path.iterdir()) == []


# --- the Quack server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Server]]:
    path = tmp_path_factory.mktemp("served") / "served.duckdb"
    _fill(path)
    store = Store.open(path)
    server = serve(store, "127.0.0.1", free_port(), TOKEN, timeout_s=2.0, max_rows=1_000)
    try:
        yield path, server
    finally:
        server.stop()
        store.close()


def _client(server: Server) -> duckdb.DuckDBPyConnection:
    """A DuckDB of anyone holding the token, attached read-write (the server decides)."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    extensions.load(con, "quack", "httpfs")
    con.execute(f"ATTACH '{server.uri}' AS r (TOKEN '{TOKEN}')")
    return con


def _local(server: Server, sql: str) -> list[tuple]:
    cur = server.store.cursor()
    try:
        return cur.execute(sql).fetchall()
    finally:
        cur.close()


def test_the_server_refuses_every_attempt_in_one_line(served: tuple[Path, Server],
                                                      tmp_path: Path) -> None:
    _, server = served
    client = _client(server)
    try:
        for template, what in ATTEMPTS:
            sql = template.format(dir=tmp_path)
            with pytest.raises(duckdb.Error) as caught:
                client.execute("FROM r.query(?)", [sql]).fetchall()
            first = str(caught.value).splitlines()[0]
            if what == "INSERT is not allowed":  # see below
                assert first == "Invalid Input Error: Authorization failed", (sql, first)
            else:
                assert first.startswith(f"Invalid Input Error: query refused: {what}"), \
                    (sql, first)
        # Writes through the attached catalog: Quack asks before appending rows too (where
        # it answers only "Authorization failed"), and wraps DDL in a BEGIN.
        for sql, says in (("INSERT INTO r.runs VALUES ('x', 'x', TIMESTAMP '2026-01-01', "
                           "NULL, NULL)", "Authorization failed"),
                          ("CREATE TABLE r.x (i INTEGER)", "query refused: BEGIN is not allowed"),
                          ("DROP TABLE r.runs", "query refused: BEGIN is not allowed")):
            with pytest.raises(duckdb.Error, match=says):
                client.execute(sql)
    finally:
        client.close()
    assert list(tmp_path.iterdir()) == []
    assert _local(server, "SELECT count(*) FROM decisions") == [(DECISIONS,)]
    assert _local(server, "SELECT count(*) FROM runs") == [(1,)]
    assert server.queries_running() == []


def test_the_server_answers_legal_queries_as_the_file_does(served: tuple[Path, Server]) -> None:
    _, server = served
    client = _client(server)
    try:
        for sql in LEGAL:
            assert client.execute("FROM r.query(?)", [sql]).fetchall() == _local(server, sql), sql
        # The Quack client's own scans of an attached table stream as plain scans.
        assert client.execute("SELECT count(*), max(round) FROM r.decisions").fetchall() == \
            _local(server, "SELECT count(*), max(round) FROM decisions")
    finally:
        client.close()


def test_a_computed_result_is_bounded_and_a_plain_scan_streams(
        served: tuple[Path, Server]) -> None:
    """The server holds a computed result in memory (max_rows 1,000 here): a sorted read of
    every decision is refused in one line, while the same rows unsorted stream as a scan."""
    _, server = served
    client = _client(server)
    try:
        with pytest.raises(duckdb.Error, match="the result has more than 1,000 rows"):
            client.execute("FROM r.query(?)", ["SELECT * FROM decisions ORDER BY ts"]).fetchall()
        rows = client.execute("FROM r.query(?)", [
            "SELECT decision_id, round FROM decisions WHERE run_id = 'ro-run' AND round >= 0"
        ]).fetchall()
        assert sorted(rows) == sorted(_local(server, "SELECT decision_id, round FROM decisions"))
    finally:
        client.close()


def test_a_served_query_stops_at_the_timeout(served: tuple[Path, Server]) -> None:
    _, server = served
    client = _client(server)
    try:
        started = time.monotonic()
        with pytest.raises(duckdb.Error) as caught:
            client.execute("FROM r.query(?)", [SLOW]).fetchall()
        took = time.monotonic() - started
        assert str(caught.value).splitlines()[0] == (
            "Invalid Input Error: query stopped after 2 s (the collector's --serve-timeout)")
        assert 2.0 <= took < 2.0 + 5.0, took
        # The connection serves the next query at once.
        assert client.execute("FROM r.query(?)", ["SELECT count(*) FROM runs"]).fetchall() == \
            [(1,)]
    finally:
        client.close()
    assert server.queries_running() == []


def _cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def _wait_for(condition, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_killed_client_stops_its_query_and_the_collector_goes_quiet(tmp_path: Path) -> None:
    """Quack 1.5.5 keeps running a query whose client is gone (before this fix the collector
    kept a core busy until the query ended). With a 60 s timeout, killing the client stops
    the query within seconds: its connection closed while the server was busy on it."""
    path = tmp_path / "busy.duckdb"
    _fill(path)
    with Store.open(path) as store:
        server = serve(store, "127.0.0.1", free_port(), TOKEN, timeout_s=60.0)
        child = subprocess.Popen([sys.executable, "-c", (
            "import sys, duckdb\n"
            "from tractatus_watch.storage import extensions\n"
            "con = duckdb.connect(config={'autoinstall_known_extensions': False,"
            " 'autoload_known_extensions': False})\n"
            "extensions.load(con, 'quack', 'httpfs')\n"
            f"con.execute(\"ATTACH '{server.uri}' AS r (TOKEN '{TOKEN}')\")\n"
            f"con.execute('FROM r.query(?)', ['{SLOW}']).fetchall()\n")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: SLOW in server.queries_running() or child.poll() is not None)
            assert child.poll() is None, child.communicate()[1]
            busy_from = _cpu_seconds()
            _wait_for(lambda: _cpu_seconds() - busy_from > 0.5)  # computing the cross join
            child.kill()
            child.wait(timeout=10)
            killed = time.monotonic()
            _wait_for(lambda: server.queries_running() == [], timeout_s=10.0)
            assert time.monotonic() - killed < 10.0  # far below the 60 s timeout
            quiet_from = _cpu_seconds()
            time.sleep(1.0)
            assert _cpu_seconds() - quiet_from < 0.2
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            server.stop()


def test_query_over_quack_through_the_cli(served: tuple[Path, Server], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`query --store quack:` refuses before sending (the same line as on a file) and
    answers a join; the refusal through a real `tractatus-watch` process, the answer in
    process."""
    _, server = served
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    store = f"quack:127.0.0.1:{server.port}"
    refused = tw("query", "SELECT * FROM read_csv('/etc/passwd')", "--store", store,
                 "--token-file", str(token))
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: query refused: table function read_csv is not")
    assert refused.stderr.count("\n") == 1
    sql = LEGAL[1]
    code, out, err = cli(capsys, monkeypatch, "query", sql, "--format", "csv", "--store", store,
                         "--token-file", str(token))
    assert code == 0, err
    assert out.splitlines()[1:] == [f"{a},{b}" for a, b in _local(server, sql)]
