"""SVG snapshots of every view at 80x24 and 120x40, the help and the silence form, on
deterministic data (fixed rows and ids, a fixed clock; tests/tui/helpers.py).

Regenerate after a deliberate change of the screen with `--snapshot-update`, and look at the
report (`snapshot_report.html`) before committing the new SVGs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tractatus_watch.tui.views import VIEWS, Overhead, Overview

from .helpers import settle

SIZES = ((80, 24), (120, 40))


async def _loaded(pilot: Any) -> None:
    await settle(pilot)


async def _drawn(pilot: Any, timeout: float = 20.0) -> None:
    """Idle, the background lane's figures in, and the charts drawn: on a busy machine the
    slow lane may land after the first refresh."""
    app = pilot.app
    deadline = asyncio.get_running_loop().time() + timeout

    def ready() -> bool:
        view = app.current_view
        if isinstance(view, Overview) and view.report_kpis is None:
            return False
        if isinstance(view, Overhead) and view.detail is None:
            return False
        return bool(app.refreshes) and app.idle

    while not ready():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{app.current_view.TITLE} did not finish loading")
        await pilot.pause(0.02)
    await settle(pilot)
    await pilot.pause()


def test_overview_120x40(snap_compare, make_app) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=_loaded)


def test_overview_80x24(snap_compare, make_app) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=_loaded)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("view", [v.TITLE.lower() for v in VIEWS])
def test_view(snap_compare, make_snap_app, view: str, size: tuple[int, int]) -> None:
    # A long interval: no timed refresh lands while the screen is taken.
    app = make_snap_app(view=view, interval=60.0)
    assert snap_compare(app, terminal_size=size, run_before=_drawn)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(snap_compare, make_snap_app, size: tuple[int, int]) -> None:
    async def run_before(pilot: Any) -> None:
        await _drawn(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert type(pilot.app.screen).__name__ == "HelpScreen"

    assert snap_compare(make_snap_app(interval=60.0), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_silence_form(snap_compare, make_snap_app, size: tuple[int, int]) -> None:
    async def run_before(pilot: Any) -> None:
        await _drawn(pilot)
        await pilot.press("x")  # silence the highlighted (firing) alert
        await pilot.pause()
        assert type(pilot.app.screen).__name__ == "SilenceScreen"
        await pilot.pause()

    app = make_snap_app(view="alerts", interval=60.0, silence_writer=lambda silence: None)
    assert snap_compare(app, terminal_size=size, run_before=run_before)
