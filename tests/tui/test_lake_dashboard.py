"""The dashboard on a DuckLake shows exactly what it shows on the file it was copied from."""

from __future__ import annotations

from pathlib import Path

import pytest

from tractatus_watch.storage.store import Store
from tractatus_watch.storage.transfer import copy_store
from tractatus_watch.tui.views import VIEWS

from .helpers import screen_text, settle

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def _screens(make_app, store: Store) -> list[str]:
    app = make_app(store=store)
    out = []
    async with app.run_test(size=(120, 40)) as pilot:
        for view in VIEWS:
            await pilot.press(view.KEY)
            await settle(pilot)
            # the status line names the store; everything above it must match
            out.append("\n".join(screen_text(app).splitlines()[:-2]))
    return out


async def test_every_view_matches_between_file_and_lake(make_app, ro_store: Store, lake) -> None:
    spec, data = lake
    with Store.open(spec, data_path=data) as dst:
        assert copy_store(ro_store, dst).identical
    with Store.open(spec, read_only=True) as on_lake:
        lake_screens = await _screens(make_app, on_lake)
    file_screens = await _screens(make_app, ro_store)
    assert len(file_screens) == len(VIEWS)
    for view, a, b in zip(VIEWS, file_screens, lake_screens):
        assert a == b, view.TITLE
    assert "alpha" in file_screens[0]
