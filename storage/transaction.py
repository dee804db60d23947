"""One DuckDB transaction as a `with` block: committed at the end, rolled back on any error."""

from __future__ import annotations

import contextlib
from typing import Iterator

import duckdb


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:  # a failed COMMIT (a lost lake commit race) already ended it
            pass
        raise
