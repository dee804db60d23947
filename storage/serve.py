"""Serving a live DuckDB file store over Quack, so another process can watch it read-only.

DuckDB allows one process per database file, so while a collector runs, nobody else can open
its file. Quack (DuckDB's client-server extension) lets the collector's own DuckDB instance
answer queries from other DuckDB clients over HTTP; `Store.open("quack:HOST:PORT", token=...)`
is the client side. Every query a client sends reads a committed snapshot, so the writer keeps
committing undisturbed.

Quack exposes the whole SQL surface of the instance to anyone holding the token, writes
included: a client's `READ_ONLY` attach is enforced by the client alone. Quack 1.5.5 has no
statement timeout and no cancellation: a query runs to its end on the server, even after its
client has gone. So every query goes through our authorization function (`_Guard.authorize`, a
Python function Quack calls before each query, whose text answer is the SQL the server then
runs):

- the read-only rule (`readonly.check`) refuses anything but one SELECT over the stored
  tables, and the instance is sealed (`readonly.seal`: no file, URL, ATTACH or extension);
- a plain scan of one table (columns as stored, a filter of comparisons, a LIMIT) runs as sent:
  it streams, and costs at most one pass over the table per batch the client fetches;
- anything else runs here first, on a cursor of ours, under a deadline (`--serve-timeout`) and
  stopped early when its client's connection closes; its result (at most MAX_RESULT_ROWS rows)
  goes to a table of a private in-memory catalog that the server then reads back in order.
  A refusal, a timeout or an error comes back to the client as one line.

Quack's server speaks plain HTTP. Loopback is the default; another address is refused unless the
caller asks for it explicitly (put a TLS-terminating reverse proxy in front: the token travels
in every connection request).
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import duckdb
import psutil

from ..records.files import FileWriteError, atomic_file
from . import extensions, readonly
from .errors import StoreError
from .store import Store
from .target import StoreTarget

log = logging.getLogger("tractatus_watch.storage.serve")

DEFAULT_HOST = "127.0.0.1"
MIN_TOKEN_CHARS = 16
TOKEN_SUFFIX = ".quack-token"

DEFAULT_TIMEOUT_S: Final = 30.0
# A computed result is held in memory until the client has read it: this bounds that memory.
MAX_RESULT_ROWS: Final = 200_000
# Result tables live in a private in-memory catalog, visible to the connections Quack runs
# queries on (a TEMP table is not) and never stored in the user's file.
_GUARD_CATALOG = "tw_quack_guard"
_ORDER = "__tw_o"  # the row number of a computed result: read back in the order it came
_TICK_S = 0.1  # how often the watchdog looks at deadlines and sockets
# A server socket its client closed while the server is busy on it stays in CLOSE_WAIT; an
# idle one the server reads is closed within milliseconds.
_DEAD_SOCKET_S = 0.3
_WATCH_SOCKETS_AFTER_S = 0.5
# A result nobody released (its client vanished) is dropped after this (or twice the timeout).
_RESULT_TTL_S = 120.0
_names = itertools.count(1)


def parse_address(text: str) -> tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[IPv6]:PORT` -> (host, port); the host defaults to loopback."""
    spec = text.strip()
    host, sep, port_text = spec.rpartition(":")
    if not sep:
        host, port_text = DEFAULT_HOST, spec
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536 \
            or (":" in host and not _is_ip(host)):
        raise StoreError(f"--serve: expected PORT or HOST:PORT (e.g. 9555 or 127.0.0.1:9555), "
                         f"got {text!r}")
    return host, int(port_text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def quack_uri(host: str, port: int) -> str:
    return f"quack:[{host}]:{port}" if ":" in host else f"quack:{host}:{port}"


def token_path(db_path: Path) -> Path:
    """Where a served file's generated token is written: next to the database."""
    return db_path.with_name(db_path.name + TOKEN_SUFFIX)


def check_token(token: str) -> None:
    if len(token) < MIN_TOKEN_CHARS:
        raise StoreError(f"the Quack token must have at least {MIN_TOKEN_CHARS} characters "
                         "(leave out --token-file and one is generated)")


def write_new_token(path: Path) -> str:
    """A fresh random token in `path`, mode 0600 from its creation (never readable by others,
    not even for a moment), replacing any earlier file atomically."""
    token = secrets.token_urlsafe(32)
    with atomic_file(path, force=True) as fh:
        fh.write((token + "\n").encode("ascii"))
    return token


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _refusal(message: str) -> str:
    """The SQL that makes the server answer with `message` as its one-line error."""
    return "SELECT error(" + _sql_str(_one_line(message)) + ")"


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class _Stopped(Exception):
    pass


@dataclass
class _Running:
    """A query we run for a client, and why it was stopped (None while it may go on)."""

    cursor: duckdb.DuckDBPyConnection
    sql: str
    started: float
    deadline: float
    reason: str | None = None

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        try:
            # Again on every tick: an interrupt that comes before DuckDB executes is lost.
            self.cursor.interrupt()
        except duckdb.Error:
            pass  # the query ended and its cursor closed meanwhile


class _Watchdog:
    """Stops the queries we run for clients when their deadline passes or their client's
    connection closes, and drops results nobody released. One thread per server."""

    def __init__(self, port: int, timeout_s: float, results: _Results) -> None:
        self._port = port
        self._timeout_s = timeout_s
        self._results = results
        # Never drop a result its query may still be writing or the server be about to read.
        self._ttl_s = max(_RESULT_TTL_S, 2 * timeout_s)
        self._lock = threading.Lock()
        self._running: dict[int, _Running] = {}
        self._closed_seen: dict[tuple[object, object], float] = {}
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="quack-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def begin(self, cursor: duckdb.DuckDBPyConnection, sql: str) -> _Running:
        now = time.monotonic()
        run = _Running(cursor, sql, now, now + self._timeout_s)
        with self._lock:
            self._running[id(run)] = run
        return run

    def end(self, run: _Running) -> None:
        with self._lock:
            self._running.pop(id(run), None)

    def running(self) -> list[str]:
        with self._lock:
            return [run.sql for run in self._running.values()]

    def stop_all(self, reason: str) -> None:
        with self._lock:
            running = list(self._running.values())
        for run in running:
            run.stop(reason)

    def close(self) -> None:
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        next_sweep = time.monotonic() + self._ttl_s / 4
        while not self._halt.wait(_TICK_S):
            try:
                next_sweep = self._tick(next_sweep)
            except Exception as exc:  # noqa: BLE001 - a watchdog that dies enforces nothing
                log.warning("the Quack query watchdog failed a round",
                            extra={"fields": {"error": _first_line(exc)}})

    def _tick(self, next_sweep: float) -> float:
        """One look at the running queries and the result tables; the next sweep's time."""
        now = time.monotonic()
        with self._lock:
            running = list(self._running.values())
        # Only a query that has run a while is worth the socket scan (milliseconds, holding
        # the GIL): the others end before a vanished client would matter.
        if any(now - run.started >= _WATCH_SOCKETS_AFTER_S for run in running):
            gone = self._client_gone_since(now)
        else:
            gone = None
        if running:
            for run in running:
                if now >= run.deadline:
                    run.stop(f"query stopped after {self._timeout_s:g} s (the collector's "
                             "--serve-timeout)")
                elif gone is not None and run.started <= gone + _TICK_S:
                    run.stop("query stopped: its client disconnected")
                elif run.reason is not None:
                    run.stop(run.reason)
        else:
            self._closed_seen.clear()
        self._results.drop_released()
        if now >= next_sweep:
            next_sweep = now + self._ttl_s / 4
            self._results.sweep(self._ttl_s)
        return next_sweep

    def _client_gone_since(self, now: float) -> float | None:
        """When the first server socket still in CLOSE_WAIT after _DEAD_SOCKET_S was seen so:
        a client that closed its connection while the server was busy answering it. (Quack
        1.5.5 does not say which query a socket carries, so every query of ours that was
        already running then is stopped.)"""
        try:
            sockets = psutil.Process().net_connections(kind="tcp")
        except psutil.Error:
            return None
        closed = {(c.laddr, c.raddr) for c in sockets
                  if c.status == psutil.CONN_CLOSE_WAIT and c.laddr and c.laddr.port == self._port}
        self._closed_seen = {key: self._closed_seen.get(key, now) for key in closed}
        dead = [seen for seen in self._closed_seen.values() if now - seen >= _DEAD_SOCKET_S]
        return min(dead) if dead else None


class _Results:
    """The tables holding computed results, one at a time per Quack connection."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._tables: dict[str, tuple[str, float]] = {}  # name -> (connection id, created)
        self._released: list[str] = []

    def create_name(self, connection_id: str) -> str:
        """A new result table's name, registered before the table exists (so a failed or
        interrupted CREATE is dropped like any other)."""
        name = f"{_GUARD_CATALOG}.main.r{next(_names)}"
        with self._lock:
            self._tables[name] = (connection_id, time.monotonic())
        return name

    def release(self, connection_id: str) -> None:
        """Mark the earlier results of a connection for dropping: it asks for a new one, so
        it is done with them (Quack runs one query at a time per connection). The watchdog
        drops them, off the query's path."""
        with self._lock:
            for name, (cid, _) in list(self._tables.items()):
                if cid == connection_id:
                    del self._tables[name]
                    self._released.append(name)

    def drop_released(self) -> None:
        with self._lock:
            names, self._released = self._released, []
        self.drop(names)

    def sweep(self, ttl_s: float) -> None:
        cutoff = time.monotonic() - ttl_s
        with self._lock:
            names = [n for n, (_, created) in self._tables.items() if created < cutoff]
        self.drop(names)

    def drop_all(self) -> None:
        with self._lock:
            names = list(self._tables) + self._released
            self._released = []
        self.drop(names)

    def drop(self, names: list[str]) -> None:
        for name in names:
            with self._lock:
                self._tables.pop(name, None)
            try:
                # A reader that started before the drop keeps its snapshot of the table.
                self._execute(f"DROP TABLE IF EXISTS {name}")
            except duckdb.Error as exc:
                log.warning("dropping a served result failed",
                            extra={"fields": {"table": name, "error": _first_line(exc)}})

    def _execute(self, sql: str) -> None:
        cur = self._store.cursor()
        try:
            cur.execute(sql)
        finally:
            cur.close()


class _Guard:
    """The authorization function Quack calls before every query: (connection id, SQL) ->
    the SQL the server runs instead (see the module docstring), or NULL to refuse with
    Quack's own "Authorization failed". Called from Quack's threads, several at once; it
    never raises."""

    def __init__(self, store: Store, port: int, timeout_s: float, max_rows: int) -> None:
        self.name = f"tw_quack_authorize_{next(_names)}"
        self._store = store
        self._max_rows = max_rows
        cur = store.cursor()
        try:
            self._relations = readonly.Relations.of(cur)
        finally:
            cur.close()
        self.results = _Results(store)
        self.watchdog = _Watchdog(port, timeout_s, self.results)

    def authorize(self, connection_id: str, sql: str) -> str | None:
        try:
            verdict = readonly.check(sql, self._relations)
        except readonly.ReadOnlyError as exc:
            if exc.statement == "INSERT":
                # Quack also asks before appending rows a client sends (as the text `INSERT
                # INTO t VALUES (NULL)`), and there it only heeds false or NULL, not SQL.
                return None
            return _refusal(str(exc))
        except duckdb.Error as exc:
            return _refusal(_first_line(exc))
        try:
            self.results.release(connection_id)
            if verdict.plain_scan:
                return sql
            return self._computed(connection_id, sql)
        except Exception as exc:  # noqa: BLE001 - the client gets it as its one-line error
            return _refusal(f"query failed on the collector: {_first_line(exc)}")

    def _computed(self, connection_id: str, sql: str) -> str:
        """Run `sql` here under the watchdog into a result table; the SQL that reads it back.

        One statement, in DuckDB alone: `row_number() OVER ()` numbers the rows in the order
        the query yields them (a streaming window keeps its input's order, ORDER BY included,
        whatever preserve_insertion_order says), and the LIMIT bounds what is kept."""
        cur = self._store.cursor()
        cur.execute("SET enable_progress_bar = false")  # never on the collector's terminal
        run = self.watchdog.begin(cur, sql)
        table: str | None = None
        try:
            rel = cur.sql(sql)
            if rel is None:
                return _refusal("the query returns no rows")
            names = rel.columns
            table = self.results.create_name(connection_id)
            positions = ", ".join(f"c{i}" for i in range(len(names)))
            # On lines of its own: a trailing `-- comment` in the query ends with its line.
            ctas = (f"CREATE TABLE {table} AS SELECT row_number() OVER () AS {_ORDER}, * "
                    f"FROM (\n{sql}\n) AS q({positions}) LIMIT {self._max_rows + 1}")
            if readonly.statement_types(ctas) != ["CREATE"]:
                return _refusal("the query cannot be computed on the collector")
            rows = cur.execute(ctas).fetchall()[0][0]
            if rows > self._max_rows:
                raise _Stopped(
                    f"the result has more than {self._max_rows:,} rows: add a LIMIT (a plain "
                    "SELECT of one table's columns streams without this bound)")
            columns = ", ".join(f"c{i} AS {_ident(name)}" for i, name in enumerate(names))
            return f"SELECT {columns} FROM {table} ORDER BY {_ORDER}"
        except (duckdb.Error, _Stopped) as exc:
            if table is not None:
                self.results.drop([table])
            return _refusal(run.reason or (str(exc) if isinstance(exc, _Stopped)
                                           else _first_line(exc)))
        finally:
            self.watchdog.end(run)
            cur.close()

    def close(self) -> None:
        self.watchdog.stop_all("query stopped: the collector stops serving")
        self.watchdog.close()
        self.results.drop_all()


@dataclass
class Server:
    """A running Quack server on a store; `stop()` before closing the store."""

    store: Store
    uri: str
    host: str
    port: int
    timeout_s: float = DEFAULT_TIMEOUT_S
    token_file: Path | None = None  # set when we wrote it (removed again on stop)
    _guard: _Guard | None = field(default=None, repr=False)
    _con: duckdb.DuckDBPyConnection | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def queries_running(self) -> list[str]:
        """The SQL of the client queries being computed here right now."""
        return self._guard.watchdog.running() if self._guard is not None else []

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._guard is not None:
            self._guard.watchdog.stop_all("query stopped: the collector stops serving")
        try:
            cur = self.store.cursor()
            try:
                cur.execute("CALL quack_stop(?)", [self.uri]).fetchall()
            finally:
                cur.close()
        except duckdb.Error as exc:  # closing anyway: say why, never raise out of shutdown
            log.warning("stopping the Quack server failed",
                        extra={"fields": {"address": self.uri,
                                          "error": str(exc).splitlines()[0]}})
        if self._guard is not None:
            self._guard.close()
            if self._con is not None:
                _remove_function(self._con, self._guard.name)
        if self._con is not None:
            self._con.close()
        if self.token_file is not None:
            # The token is worthless once the server is gone; do not leave it lying around.
            self.token_file.unlink(missing_ok=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def check_servable(target: StoreTarget, host: str, port: int, *, public: bool = False) -> None:
    """Refuse, in one line, what cannot or should not be served (before anything is opened)."""
    if target.kind != "duckdb" or target.path is None:
        hint = (", which viewers open directly with --store (many processes may read a "
                "DuckLake at once)") if target.kind == "ducklake" else ""
        raise StoreError(f"--serve serves a DuckDB file; {target.label} is a {target.kind} "
                         f"store{hint}")
    if not is_loopback(host) and not public:
        raise StoreError(f"--serve {quack_uri(host, port)[len('quack:'):]}: {host} is not a "
                         "loopback address and Quack speaks plain HTTP; add --serve-public to "
                         "serve it anyway (behind a TLS reverse proxy)")


def _remove_function(cur: duckdb.DuckDBPyConnection, name: str) -> None:
    """Unregister a Python function before its connection closes: DuckDB 1.5.5 crashes the
    process when a function outlives the connection that registered it."""
    try:
        cur.remove_function(name)
    except duckdb.Error:
        pass  # never registered (serve failed before)


def _load(cur: duckdb.DuckDBPyConnection, *names: str) -> None:
    """Load the extensions, unless an earlier server sealed the instance (then they are
    loaded, and installing from the package's files would be refused)."""
    sealed = cur.execute("SELECT current_setting('enable_external_access')").fetchall()
    if sealed and sealed[0][0] is False:
        return
    extensions.load(cur, *names)


def serve(store: Store, host: str, port: int, token: str, *, public: bool = False,
          timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = MAX_RESULT_ROWS) -> Server:
    """Serve `store` (a DuckDB file store) over Quack at host:port, read-only for clients;
    a query runs at most `timeout_s` seconds (see the module docstring).

    A non-loopback host needs `public=True`. Raises StoreError with one line on any failure;
    the token never appears in a message. Seals the store's instance for good (no external
    access from SQL: see readonly.seal)."""
    check_servable(store.target, host, port, public=public)
    check_token(token)
    if not timeout_s > 0:
        raise StoreError(f"--serve-timeout must be a positive number of seconds, got {timeout_s}")
    uri = quack_uri(host, port)
    cur = store.cursor()
    guard: _Guard | None = None
    try:
        _load(cur, "quack", "httpfs")  # without httpfs clients get HTTP 500
        # READ_ONLY false: a store opened read-only opens everything read-only by default.
        cur.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {_GUARD_CATALOG} (READ_ONLY false)")
        guard = _Guard(store, port, timeout_s, max_rows)
        # A Python function is visible to every connection of the instance, among them the
        # fresh one Quack authorizes each query on; it must not outlive `cur`.
        cur.create_function(guard.name, guard.authorize, [duckdb.sqltype("VARCHAR")] * 2,
                            duckdb.sqltype("VARCHAR"), side_effects=True)
        cur.execute(f"SET GLOBAL quack_authorization_function = '{guard.name}'")
        readonly.seal(cur, lock=False)
        guard.watchdog.start()
        cur.execute("CALL quack_serve(?, token := ?, allow_other_hostname := ?)",
                    [uri, token, public]).fetchall()
    except (duckdb.Error, StoreError) as exc:
        if guard is not None:
            guard.close()
            _remove_function(cur, guard.name)
        cur.close()
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"cannot serve {store.target.label} on {uri}: "
                         f"{_first_line(exc).replace(token, '***')}") from None
    return Server(store=store, uri=uri, host=host, port=port, timeout_s=timeout_s,
                  _guard=guard, _con=cur)


def serve_with_token_file(store: Store, host: str, port: int, token: str | None = None, *,
                          public: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S) -> Server:
    """`serve` with the given token, or with a new one written (0600) next to the database
    file for viewers to read; that file is removed again when the server stops."""
    if token is not None:
        return serve(store, host, port, token, public=public, timeout_s=timeout_s)
    check_servable(store.target, host, port, public=public)
    assert store.path is not None
    path = token_path(store.path)
    try:
        token = write_new_token(path)
    except FileWriteError as exc:
        raise StoreError(f"cannot write the Quack token file: {exc}") from None
    try:
        server = serve(store, host, port, token, public=public, timeout_s=timeout_s)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    server.token_file = path
    return server
