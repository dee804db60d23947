"""Shared fixtures. Each fixture is self-contained; add new ones below, do not couple them."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

# Test support (synthetic data, a throwaway PostgreSQL) lives in tests/support, importable as
# `support.*` from tests, worker scripts and benchmarks alike.
sys.path.insert(0, str(Path(__file__).parent))


# --- the package logger as each test found it -------------------------------------------------

@pytest.fixture(autouse=True)
def _watch_logger_restored() -> Iterator[None]:
    """An in-process `collect` calls setup_logging, which stops the package logger propagating
    to the root; caplog listens on the root, so a later test on the same worker would see no
    records. Restore the logger after every test."""
    logger = logging.getLogger("tractatus_watch")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


# --- agl_gateway: the real Agent Lightning gateway on 127.0.0.1 --------------------------------

@dataclass
class AglGateway:
    """A running Agent Lightning gateway: `url` (base), `key`, and helpers for its REST API."""

    url: str
    key: str
    _client: httpx.Client = field(repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def create_rollout(self, rollout_id: str | None = None) -> str:
        """Enqueue a rollout and mark its attempt "0" running, as the controllers do before they
        hand an agent `AGL_EVENT_URL`."""
        rid = rollout_id or f"test-{uuid.uuid4().hex[:12]}"
        r = self._client.post("/api/rollouts",
                              json=[{"input": {"task": "test"}, "rollout_id": rid}])
        r.raise_for_status()
        r = self._client.patch(f"/api/rollouts/{rid}",
                               json={"status": {"state": "running", "last_attempt_id": "0"}})
        r.raise_for_status()
        return rid

    def event_url(self, rollout_id: str) -> str:
        return f"{self.url}/api/rollouts/{rollout_id}/attempt/0/events"

    def events(self, rollout_id: str, event_type: str | None = None) -> list[dict[str, Any]]:
        params = {"event_type": event_type} if event_type else {}
        r = self._client.get(f"/api/rollouts/{rollout_id}/events", params=params)
        r.raise_for_status()
        return r.json()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def agl_gateway() -> Iterator[AglGateway]:
    """The real gateway (`agentlightning.server.app.create_app`) served by uvicorn in a thread."""
    import uvicorn
    from agentlightning.server.app import create_app

    key = f"test-key-{uuid.uuid4().hex}"
    app = create_app({"key": key, "default_proxy": {
        "model_name": "test-model", "train": {"temperature": 1.0}, "val": {"temperature": 0.7}}})
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="agl-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"Agent Lightning gateway did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    try:
        yield AglGateway(url=url, key=key, _client=client)
    finally:
        client.close()
        server.should_exit = True
        thread.join(10)


# --- postgres: a real PostgreSQL server on 127.0.0.1 (DuckLake catalogs) -----------------------

@pytest.fixture(scope="session")
def postgres():
    """One throwaway server for the session; each test makes its own database with
    `postgres.create_database(name)`."""
    from support.pgtemp import PostgresUnavailable, TempPostgres

    try:
        pg = TempPostgres.start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield pg
    pg.stop()


@pytest.fixture
def lake(postgres, tmp_path):
    """A new, empty DuckLake location: (store spec, data path)."""
    name = f"lake_{uuid.uuid4().hex[:10]}"
    conninfo = postgres.create_database(name)
    return f"ducklake:postgres:{conninfo}", str(tmp_path / "lake-data")


# --- the order the files are handed to the workers: the slowest first --------------------------

# Seconds each slow file takes alone (`pytest FOLDER --junitxml`, summed per file, on 2 busy
# cores). `make test` runs a file on one worker (`--dist loadfile`) and, with
# `--no-loadscope-reorder` (pyproject), in this order: the slowest first, then the rest as
# collected. A long file started last keeps one worker busy alone at the end, as happened while
# xdist sorted the files by their number of tests (the long demo files, with few tests, came
# last). test_check_gate.py is not listed: it reads the demo files' runs, so it starts late.
# Re-measure when a file gets slow.
SLOW_FILES: dict[str, float] = {
    "demo/test_long_scenarios.py": 300,
    "test_cli_output.py": 110,
    "test_lake_collect.py": 90,
    "tui/test_keys.py": 70,
    "demo/test_demo.py": 65,
    "demo/test_bypass.py": 60,
    "test_research.py": 40,
    "test_prometheus_live.py": 25,
    "demo/test_research_demo.py": 70,
    "demo/test_penalized.py": 90,
    "test_cli_lake.py": 55,
    "test_cli_storage.py": 55,
    "storage/test_exactly_once.py": 50,
    "collectors/test_poller.py": 50,
    "collectors/test_poller_accounting.py": 45,
    "test_cli_errors.py": 45,
    "collectors/test_spool_reader.py": 45,
    "tui/test_consistency.py": 45,
    "collectors/test_gateway_crash.py": 35,
    "demo/test_demo_proxy.py": 35,
    "storage/test_poison.py": 35,
    "storage/test_lake.py": 30,
    "collectors/test_collect_restarts.py": 30,
    "test_cli_gateway.py": 25,
    "governance/test_light_sdk.py": 20,
    "collectors/test_hooks_round.py": 20,
    "test_cli_check.py": 20,
    "test_quack_remote.py": 20,
    "test_readonly.py": 20,
    "collectors/test_gateway_contract.py": 10,
    "tui/test_snapshots.py": 15,
    "tui/test_tmux.py": 15,
    "tui/test_live_latency.py": 15,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent

    def seconds(item: pytest.Item) -> float:
        try:
            return SLOW_FILES.get(item.path.relative_to(root).as_posix(), 0.0)
        except ValueError:  # not under tests/
            return 0.0

    # A stable sort: each file's tests keep their order, and files of equal weight theirs.
    items.sort(key=lambda item: -seconds(item))
