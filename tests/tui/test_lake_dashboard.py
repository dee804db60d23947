"""The dashboard on a DuckLake shows exactly what it shows on the file it was copied from."""

from __future__ import annotations

import pytest

from tractatus_watch.storage.store import Store
from tractatus_watch.storage.transfer import copy_store
from tractatus_watch.tui.views import VIEWS

from .helpers import view_screens

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def test_every_view_matches_between_file_and_lake(make_app, ro_store: Store, lake) -> None:
    spec, data = lake
    with Store.open(spec, data_path=data) as dst:
        assert copy_store(ro_store, dst).identical
    with Store.open(spec, read_only=True) as on_lake:
        lake_screens = await view_screens(make_app, on_lake)
    file_screens = await view_screens(make_app, ro_store)
    assert len(file_screens) == len(VIEWS) + 1  # the views, then the status line
    for view, a, b in zip(VIEWS, file_screens, lake_screens):
        assert a == b, view.TITLE
    assert "alpha" in file_screens[0]
