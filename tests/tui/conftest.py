"""Fixtures for the dashboard tests: one deterministic database per session, and apps on it
with a fixed clock (no wall time in what is rendered)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tractatus_watch.storage.store import Store
from tractatus_watch.tui.app import Dashboard

from .helpers import FIXED_NOW, SNAP_BASELINE, SNAP_RUN, build_db, build_snapshot_db


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests in a fresh event loop (Textual's run_test needs one; no plugin)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**args))
    return True


@pytest.fixture(scope="session")
def tui_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs (alpha: 4,000 decisions over 20 rounds; beta: 1,200 over 8), rewards in both
    arms, one firing and one pending alert on alpha."""
    path = tmp_path_factory.mktemp("tui") / "watch.duckdb"
    build_db(path)
    return path


@pytest.fixture()
def ro_store(tui_db: Path) -> Iterator[Store]:
    store = Store.open(tui_db, read_only=True)
    yield store
    store.close()


@pytest.fixture()
def make_app(ro_store: Store, tmp_path: Path) -> Callable[..., Dashboard]:
    def make(**kwargs: Any) -> Dashboard:
        kwargs.setdefault("clock", lambda: FIXED_NOW)
        kwargs.setdefault("export_dir", tmp_path)
        return Dashboard(kwargs.pop("store", ro_store), **kwargs)

    return make


@pytest.fixture(scope="session")
def snap_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The snapshot database (tests/tui/helpers.py: build_snapshot_db)."""
    path = tmp_path_factory.mktemp("snap") / "watch.duckdb"
    build_snapshot_db(path)
    return path


@pytest.fixture()
def make_snap_app(snap_db: Path, tmp_path: Path) -> Iterator[Callable[..., Dashboard]]:
    """Apps on the snapshot database: its showcase run against the other one, a fixed clock."""
    store = Store.open(snap_db, read_only=True)

    def make(**kwargs: Any) -> Dashboard:
        kwargs.setdefault("clock", lambda: FIXED_NOW)
        kwargs.setdefault("export_dir", tmp_path)
        kwargs.setdefault("run_id", SNAP_RUN)
        kwargs.setdefault("baseline_run", SNAP_BASELINE)
        return Dashboard(store, **kwargs)

    yield make
    store.close()
