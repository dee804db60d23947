"""Reading a Quack-served store: each read query runs whole on the server.

The Quack client in duckdb-extension-quack 1.5.5 executes a query over an attached remote
catalog on the client, streaming one scan per remote table from the server, and refuses a
query with two such scans ("Multiple streaming scans ... are not currently supported",
duckdb/duckdb-quack#154): every join, subquery or UNION over the stored tables fails, which is
most dashboard queries. The catalog's `query()` table macro instead runs SQL on the server
and streams back only the result (also several times faster than shipping the scanned rows).

`RemoteCursor` wraps a client cursor so the queries written for a local file run unchanged:
a single read statement (SELECT, WITH, FROM, VALUES, TABLE) goes through `<catalog>.query(...)`
with its `?` parameters inlined as typed literals; anything else runs as before on the client.
"""

from __future__ import annotations

from typing import Any

import duckdb

_READ_KEYWORDS = ("select", "with", "from", "values", "table")


def _after_comment(sql: str, i: int) -> int | None:
    """Where a comment starting at `i` ends, or None if none starts there."""
    if sql.startswith("--", i):
        end = sql.find("\n", i)
        return len(sql) if end < 0 else end + 1
    if sql.startswith("/*", i):
        end = sql.find("*/", i + 2)
        return len(sql) if end < 0 else end + 2
    return None


def _skip_space_and_comments(sql: str, i: int) -> int:
    while i < len(sql):
        if sql[i].isspace() or sql[i] == "(":
            i += 1
        elif (after := _after_comment(sql, i)) is not None:
            i = after
        else:
            break
    return i


def first_keyword(sql: str) -> str:
    """The first word of `sql` (lower-cased), past spaces, comments and opening parentheses;
    "" if it starts with anything else."""
    i = _skip_space_and_comments(sql, 0)
    start = i
    while i < len(sql) and (sql[i].isalpha() or sql[i] == "_"):
        i += 1
    return sql[start:i].lower()


def is_read_query(sql: str) -> bool:
    """Whether `sql` starts like a query that only reads (its first keyword)."""
    return first_keyword(sql) in _READ_KEYWORDS


def placeholders(sql: str) -> list[int]:
    """Offsets of the `?` parameters in `sql`, outside string literals, quoted names,
    comments and dollar-quoted strings."""
    found: list[int] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in ("'", '"'):
            i += 1
            while i < n:
                if sql[i] == c:
                    if i + 1 < n and sql[i + 1] == c:  # a doubled quote is the quote itself
                        i += 2
                        continue
                    break
                i += 1
            i += 1
        elif (after := _after_comment(sql, i)) is not None:
            i = after
        elif sql.startswith("$$", i):
            end = sql.find("$$", i + 2)
            i = n if end < 0 else end + 2
        else:
            if c == "?":
                found.append(i)
            i += 1
    return found


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def inline(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | tuple[Any, ...]) -> str:
    """`sql` with each `?` replaced by its parameter as a typed literal.

    DuckDB itself renders each value (as VARCHAR) and names its type, so every value the Python
    client accepts (text, numbers, times, lists, structs, decimals) comes back exactly as
    `'<text>'::<type>`, with no rendering rules of our own to get wrong."""
    spots = placeholders(sql)
    if len(spots) != len(params):
        raise duckdb.InvalidInputException(
            f"the query has {len(spots)} parameters, {len(params)} were given")
    if not spots:
        return sql
    cols = ", ".join(f"CAST(${k} AS VARCHAR), typeof(${k})" for k in range(1, len(params) + 1))
    row = con.execute(f"SELECT {cols}", list(params)).fetchall()[0]
    out, last = [], 0
    for k, at in enumerate(spots):
        text, type_name = row[2 * k], row[2 * k + 1]
        literal = "NULL" if text is None else f"{_quote(text)}::{type_name}"
        out += [sql[last:at], literal]
        last = at + 1
    out.append(sql[last:])
    return "".join(out)


class RemoteCursor:
    """A client cursor whose read queries run on the Quack server (see the module docstring).

    `execute` returns the wrapper, so `cur.execute(...).fetchall()` and `.description` work as
    on a DuckDB connection; everything else is the client cursor's own."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, catalog: str) -> None:
        self._cur = cur
        self._catalog = catalog

    def _remote(self, sql: str, params: Any) -> str | None:
        """The SQL to run on the server, or None to run `sql` on the client as it is."""
        if not is_read_query(sql) or isinstance(params, dict):
            return None
        return inline(self._cur, sql, list(params or []))

    def execute(self, sql: str, parameters: Any = None) -> RemoteCursor:
        remote = self._remote(sql, parameters)
        if remote is None:
            self._cur.execute(sql, parameters)
        else:
            self._cur.execute(f"FROM {self._catalog}.query(?)", [remote])
        return self

    def sql(self, query: str, *, alias: str = "", params: Any = None) -> Any:
        remote = self._remote(query, params)
        if remote is None:
            return self._cur.sql(query, alias=alias, params=params)
        return self._cur.sql(f"FROM {self._catalog}.query({_quote(remote)})", alias=alias)

    def cursor(self) -> RemoteCursor:
        return RemoteCursor(self._cur.cursor(), self._catalog)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)

    def __enter__(self) -> RemoteCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cur.close()
