"""Serving a live DuckDB file store over Quack, so another process can watch it read-only.

DuckDB allows one process per database file, so while a collector runs, nobody else can open
its file. Quack (DuckDB's client-server extension) lets the collector's own DuckDB instance
answer queries from other DuckDB clients over HTTP; `Store.open("quack:HOST:PORT", token=...)`
is the client side. Every query a client sends reads a committed snapshot, so the writer keeps
committing undisturbed.

Quack exposes the whole SQL surface of the instance to anyone holding the token, writes
included: a client's `READ_ONLY` attach is enforced by the client alone. The server therefore
installs its own authorization check (see `_AUTHORIZE`): single SELECT statements over tables,
no table functions but the catalog listings the Quack client needs, no file paths.

Quack's server speaks plain HTTP. Loopback is the default; another address is refused unless the
caller asks for it explicitly (put a TLS-terminating reverse proxy in front: the token travels
in every connection request).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from . import extensions
from .errors import StoreError
from .store import Store
from .target import StoreTarget

log = logging.getLogger("tractatus_watch.storage.serve")

DEFAULT_HOST = "127.0.0.1"
MIN_TOKEN_CHARS = 16
TOKEN_SUFFIX = ".quack-token"

# The authorization macro lives in a private in-memory catalog: a macro in the served file
# would be stored in the user's database, and a TEMP macro is invisible to the fresh
# connection Quack authorizes each query on.
_GUARD_CATALOG = "tw_quack_guard"
_AUTHORIZE = f"{_GUARD_CATALOG}.main.tw_read_only"
# Table functions the Quack client itself sends (catalog listings); anything else could read
# files (read_text, glob) or act (quack_serve, checkpoint) from inside a SELECT.
_ALLOWED_TABLE_FUNCTIONS = ("duckdb_tables", "duckdb_views", "duckdb_schemas",
                            "duckdb_columns")
# json_serialize_sql parses the text with DuckDB's own parser and refuses anything that is
# not a SELECT (INSERT, COPY, CALL, PRAGMA, SET, several statements with one not a SELECT),
# which a regular expression over the raw text cannot do reliably. Over its JSON: every table
# function must be an allowed one, and no table name may look like a file path (a replacement
# scan would read the file).
_AUTHORIZE_SQL = f"""
CREATE OR REPLACE MACRO {_AUTHORIZE}(sid, query) AS (
    WITH parsed AS (SELECT json_serialize_sql(query::VARCHAR) AS js)
    SELECT coalesce(
        (js::JSON ->> 'error') = 'false'
        AND json_array_length(js::JSON -> 'statements') = 1
        AND len(list_filter(
            regexp_extract_all(js, '"type":"TABLE_FUNCTION".*?"function_name":"([^"]*)"', 1),
            f -> f NOT IN {_ALLOWED_TABLE_FUNCTIONS})) = 0
        AND len(list_filter(
            regexp_extract_all(js, '"type":"BASE_TABLE".*?"table_name":"([^"]*)"', 1),
            t -> regexp_matches(t, '[./\\\\:~]'))) = 0,
        false)
    FROM parsed)
"""


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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return token


@dataclass
class Server:
    """A running Quack server on a store; `stop()` before closing the store."""

    store: Store
    uri: str
    host: str
    port: int
    token_file: Path | None = None  # set when we wrote it (removed again on stop)
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
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


def serve(store: Store, host: str, port: int, token: str, *, public: bool = False) -> Server:
    """Serve `store` (a DuckDB file store) over Quack at host:port, read-only for clients.

    A non-loopback host needs `public=True`. Raises StoreError with one line on any failure;
    the token never appears in a message."""
    check_servable(store.target, host, port, public=public)
    check_token(token)
    uri = quack_uri(host, port)
    cur = store.cursor()
    try:
        extensions.load(cur, "quack", "httpfs")  # without httpfs clients get HTTP 500
        try:
            # READ_ONLY false: a store opened read-only opens everything read-only by default.
            cur.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {_GUARD_CATALOG} (READ_ONLY false)")
            cur.execute(_AUTHORIZE_SQL)
            cur.execute(f"SET GLOBAL quack_authorization_function = '{_AUTHORIZE}'")
            cur.execute("CALL quack_serve(?, token := ?, allow_other_hostname := ?)",
                        [uri, token, public]).fetchall()
        except duckdb.Error as exc:
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreError(f"cannot serve {store.target.label} on {uri}: "
                             f"{line.replace(token, '***')}") from None
    finally:
        cur.close()
    return Server(store=store, uri=uri, host=host, port=port)


def serve_with_token_file(store: Store, host: str, port: int, token: str | None = None, *,
                          public: bool = False) -> Server:
    """`serve` with the given token, or with a new one written (0600) next to the database
    file for viewers to read; that file is removed again when the server stops."""
    if token is not None:
        return serve(store, host, port, token, public=public)
    check_servable(store.target, host, port, public=public)
    assert store.path is not None
    path = token_path(store.path)
    try:
        token = write_new_token(path)
    except OSError as exc:
        raise StoreError(f"cannot write the Quack token file {path}: "
                         f"{exc.strerror or exc}") from None
    try:
        server = serve(store, host, port, token, public=public)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    server.token_file = path
    return server
