"""Where a store lives, parsed from `--store` / `TRACTATUS_WATCH_STORE`.

- `duckdb:PATH` (or a bare path): one DuckDB file, one writer process.
- `ducklake:postgres:<libpq conninfo>` with a data path: DuckLake, the catalog in PostgreSQL
  and the data as Parquet files in a shared folder (or object storage), many writers.
- `quack:HOST:PORT`: a running collector's DuckDB served over Quack, read-only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import StoreError

Kind = Literal["duckdb", "ducklake", "quack"]

_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)([^@\s]+)(@)")
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[^:\[\]]+):(?P<port>\d{1,5})$")


def redact(conninfo: str) -> str:
    """The conninfo with any password replaced, for messages and titles."""
    return _URI_PASSWORD.sub(r"\1***\3", _PASSWORD.sub(r"\1***", conninfo))


@dataclass(frozen=True)
class StoreTarget:
    kind: Kind
    path: Path | None = None  # duckdb
    conninfo: str = field(default="", repr=False)  # ducklake catalog (may hold a password)
    data_path: str | None = None  # ducklake
    host: str = ""  # quack
    port: int = 0

    @property
    def label(self) -> str:
        """How to name the store to a person: never shows a password."""
        if self.kind == "duckdb":
            return str(self.path)
        if self.kind == "ducklake":
            return f"ducklake:postgres:{redact(self.conninfo)}"
        return f"quack:{self.host}:{self.port}"

    @property
    def short(self) -> str:
        """A few characters for a title bar."""
        if self.kind == "duckdb" and self.path is not None:
            return self.path.name
        if self.kind == "ducklake":
            db = re.search(r"dbname\s*=\s*(\S+)", self.conninfo)
            return f"ducklake:{db[1] if db else 'postgres'}"
        return self.label


def parse_target(spec: str, *, data_path: str | None = None) -> StoreTarget:
    """Parse a store spec; raise StoreError with a one-line explanation when it is malformed."""
    text = spec.strip()
    if text.startswith("ducklake:"):
        rest = text[len("ducklake:"):]
        if not rest.startswith("postgres:"):
            raise StoreError(f"unsupported DuckLake catalog in {redact(text)!r}: use "
                             "ducklake:postgres:<libpq conninfo>, e.g. "
                             "ducklake:postgres:host=127.0.0.1 dbname=watch")
        conninfo = rest[len("postgres:"):].strip()
        if not conninfo:
            raise StoreError("ducklake:postgres: needs a libpq conninfo, e.g. "
                             "ducklake:postgres:host=127.0.0.1 port=5432 dbname=watch")
        if "'" in (data_path or ""):
            raise StoreError("--data-path must not contain a quote")
        return StoreTarget("ducklake", conninfo=conninfo, data_path=data_path or None)
    if text.startswith("quack:"):
        match = _HOST_PORT.match(text[len("quack:"):])
        if not match or not 0 < int(match["port"]) < 65536:
            raise StoreError(f"expected quack:HOST:PORT, got {text!r}")
        return StoreTarget("quack", host=match["host"], port=int(match["port"]))
    if text.startswith("duckdb:"):
        text = text[len("duckdb:"):]
    elif re.match(r"^[a-z][a-z0-9+.-]*:(?![\\/])", text) and not re.match(r"^[A-Za-z]:[\\/]", text):
        scheme = text.split(":", 1)[0]
        raise StoreError(f"unknown store kind {scheme!r}: use duckdb:PATH, "
                         "ducklake:postgres:<conninfo> or quack:HOST:PORT")
    if not text:
        raise StoreError("duckdb: needs a file path")
    return StoreTarget("duckdb", path=Path(text).expanduser())
