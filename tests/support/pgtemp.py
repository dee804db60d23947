"""A throwaway PostgreSQL server on 127.0.0.1, for tests, benchmarks and trying the lake locally.

It runs Debian's server binaries (package `postgresql`) on a free port with its data in a
temporary folder, trusts local connections, and is removed when stopped. Running as root, the
server runs as the `postgres` user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def _bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise PostgresUnavailable(f"{name} not found: install Debian's postgresql package")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TempPostgres:
    root: Path
    port: int
    _as_postgres: bool = field(default=False, repr=False)

    @classmethod
    def start(cls) -> TempPostgres:
        as_postgres = os.geteuid() == 0
        root = Path(tempfile.mkdtemp(prefix="tw-pg-"))
        os.chmod(root, 0o755)
        if as_postgres:
            shutil.chown(root, "postgres", "postgres")
        pg = cls(root=root, port=_free_port(), _as_postgres=as_postgres)
        data = root / "data"
        pg._run([_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                 "-E", "UTF8", "--no-sync"])
        pg._run([_bin("pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
                 "-t", "60", "-o",
                 f"-p {pg.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                 "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                 "start"])
        return pg

    def _run(self, argv: list[str]) -> None:
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(argv[:4])}: {done.stderr.strip()[-500:]}")

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its conninfo."""
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.conninfo(name)

    def stop(self) -> None:
        try:
            self._run([_bin("pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w",
                       "stop"])
        except PostgresUnavailable:
            pass
        for _ in range(20):  # the server's files go once it has exited
            try:
                shutil.rmtree(self.root)
                return
            except OSError:
                time.sleep(0.1)
