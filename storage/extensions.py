"""DuckDB extensions, loaded offline from their PyPI packages (never downloaded at run time).

Each extension ships as `duckdb-extension-<name>` built for one DuckDB version; the project pins
both. Automatic install/load stays off on every connection, so a missing package fails here at
once with the package to install, not later with a download error.
"""

from __future__ import annotations

import importlib.util

import duckdb

from .errors import StoreError

PACKAGES = {
    "quack": "duckdb-extension-quack",
    "ducklake": "duckdb-extension-ducklake",
    "postgres": "duckdb-extension-postgres",
    "httpfs": "duckdb-extension-httpfs",
}


def load(con: duckdb.DuckDBPyConnection, *names: str) -> None:
    """Install (from the package's files) and load `names` into `con`'s database."""
    for name in names:
        package = PACKAGES[name]
        if importlib.util.find_spec(f"duckdb_extension_{name}") is None:
            raise StoreError(f"the DuckDB extension {name!r} is not installed: "
                             f"pip install {package}=={duckdb.__version__}")
        try:
            import duckdb_extensions

            duckdb_extensions.import_extension(name, con=con)
            con.execute(f"LOAD {name}")
        except (duckdb.Error, OSError) as exc:
            first = str(exc).splitlines()[0]
            raise StoreError(f"cannot load the DuckDB extension {name!r} ({first}); it must "
                             f"match duckdb {duckdb.__version__}: pip install "
                             f"{package}=={duckdb.__version__}") from None
