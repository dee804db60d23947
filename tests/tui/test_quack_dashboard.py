"""The dashboard over Quack (`open --remote`) shows exactly what it shows on the file itself."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tractatus_watch.storage.serve import serve
from tractatus_watch.storage.store import Store
from tractatus_watch.tui.views import VIEWS

from .helpers import view_screens

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOKEN = "tui-quack-token-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_every_view_matches_between_file_and_remote(make_app, ro_store: Store,
                                                          tmp_path: Path) -> None:
    file_screens = await view_screens(make_app, ro_store)
    # The same instance serves its file: the viewer reads it only through Quack.
    server = serve(ro_store, "127.0.0.1", _free_port(), TOKEN)
    try:
        with Store.open(f"quack:127.0.0.1:{server.port}", token=TOKEN) as remote:
            assert remote.path is None
            remote_screens = await view_screens(make_app, remote)
    finally:
        server.stop()
    for view, a, b in zip(VIEWS, file_screens, remote_screens):
        assert a == b, view.TITLE
    assert "alpha" in file_screens[0]
    assert f"quack:127.0.0.1:{server.port} read-only" in remote_screens[-1]
