"""Fixtures for the collector tests: the real `agl-server` (Agent Lightning 1.0.2) on 127.0.0.1 in
a subprocess (so a restart really loses its memory), and a real DuckDB store with its writer."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Writer

AGL_SERVER = Path(sys.executable).with_name("agl-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AglServer:
    """`agl-server` as users run it, keyed through the environment (never on a command line)."""

    def __init__(self, workdir: Path, key: str, port: int | None = None) -> None:
        self.workdir = workdir
        self.key = key
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"},
                            timeout=10)

    def start(self, timeout_s: float = 30.0) -> None:
        log = open(self.workdir / "agl-server.log", "ab")
        self.proc = subprocess.Popen(
            [str(AGL_SERVER), "host=127.0.0.1", f"port={self.port}", "key=${oc.env:AGL_KEY}",
             f"hydra.run.dir={self.workdir / 'hydra'}", "hydra.output_subdir=null",
             "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"],
            env={**os.environ, "AGL_KEY": self.key}, stdout=log, stderr=log,
            cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agl-server exited: {(self.workdir / 'agl-server.log').read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("agl-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def agl_key() -> str:
    return "test-" + secrets.token_hex(12)


@pytest.fixture
def agl_server(tmp_path: Path, agl_key: str) -> Iterator[AglServer]:
    server = AglServer(tmp_path, agl_key)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "tw.duckdb")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def writer(store: Store) -> Iterator[Writer]:
    w = Writer(store, flush_interval_s=0.05)
    try:
        yield w
    finally:
        w.close()


def count(store: Store, sql: str, *params: object) -> int:
    cur = store.cursor()
    try:
        return int(cur.execute(sql, list(params)).fetchall()[0][0])
    finally:
        cur.close()


@pytest.fixture
def q(store: Store):  # type: ignore[no-untyped-def]
    """q(sql, *params) -> all rows, through a reader cursor of the test's store."""

    def run(sql: str, *params: object) -> list[tuple[object, ...]]:
        cur = store.cursor()
        try:
            return cur.execute(sql, list(params)).fetchall()
        finally:
            cur.close()

    return run
