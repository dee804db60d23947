"""SVG snapshots of the overview on deterministic data (fixed rows, a fixed clock)."""

from __future__ import annotations

from typing import Any

from .helpers import settle


async def _loaded(pilot: Any) -> None:
    await settle(pilot)


def test_overview_120x40(snap_compare, make_app) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=_loaded)


def test_overview_80x24(snap_compare, make_app) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=_loaded)
