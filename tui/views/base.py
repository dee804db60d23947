"""The base of every view, and what the app hands the views.

A view hands the refresh loop a fetch closure over its current parameters (run in a worker
thread), then renders what came back on the main thread. It reads the state the app gives it
(`ViewContext`: scope, clock, alert counts) and asks the app for anything else by posting a
message (`tui/messages.py`); it never imports the app.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl
from rich.text import Text
from textual.binding import BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static

from ...analysis.metrics import AlertCounts
from .. import data as D
from ..messages import RefreshRequested
from ..scope import Scope
from ..table import Table
from ..widgets import Empty

# (cursor, run id) -> data; called in a worker thread.
Fetch = Callable[[D.Con, str], Any]

LOADING = "loading …"
NO_DATA = ("no data yet: is the trainer using the hooks file? Start a collector "
           "(`tractatus-watch live --spool DIR` or `--agl URL`) or run `tractatus-watch demo`.")


@dataclass
class ViewContext:
    """What the app shares with every view: the app updates it, views only read it."""

    clock: Callable[[], float]
    scope: Scope
    # firing (not silenced), silenced and pending in the last refresh
    alert_counts: AlertCounts = AlertCounts(0, 0, 0)
    smoothing: float = 0.0  # EMA weight of the charts (`:smooth`), 0 = off
    # What an empty view says instead of NO_DATA: the situation (demo starting, gateway
    # listening on ...), from the command's wiring.
    empty_state: Callable[[], str] = lambda: NO_DATA


class View(Vertical, can_focus=True):
    KEY: ClassVar[str] = ""
    TITLE: ClassVar[str] = ""
    FILTER_HELP: ClassVar[str] = ""
    # Keys are listed in the footer while the view has focus, and all of them in `?` help.
    # Binding ids are "<view title, lower case>.<action>" (see Dashboard.BINDINGS).
    BINDINGS: ClassVar[list[BindingType]] = []

    def __init__(self, context: ViewContext) -> None:
        super().__init__(id=f"view-{self.TITLE.lower()}")
        self.context = context
        self.filter_text = ""
        self._texts: dict[str, str | Text] = {}

    def ask(self, message: Message) -> None:
        """Post a request to the app: straight to its queue (see tui/messages.py)."""
        self.app.post_message(message)

    def request_refresh(self) -> None:
        self.ask(RefreshRequested())

    def fetch(self) -> tuple[Hashable, Fetch]:
        """A key for the parameters (unchanged key + unchanged data = nothing to fetch) and
        the closure that fetches them."""
        raise NotImplementedError

    def show(self, data: Any) -> None:
        raise NotImplementedError

    def slow(self, run_id: str) -> tuple[Hashable, Fetch] | None:
        """Work too slow for every refresh (raw-table scans): run in its own lane."""
        return None

    def show_slow(self, data: Any) -> None:
        pass

    def export_frame(self) -> pl.DataFrame | None:
        return None

    def set_filter(self, text: str) -> None:
        """Apply `/` input; raise ValueError with a one-line message when it is not valid."""
        self.filter_text = text.strip()

    def focus_target(self) -> Widget:
        tables = list(self.query(Table))
        return tables[0] if tables else self

    def set_text(self, selector: str, text: str | Text) -> None:
        """Update a Static only when its text changed: each update lays the screen out again
        (a refresh that changes no head then only repaints what changed)."""
        if self._texts.get(selector) != text:
            self._texts[selector] = text
            self.query_one(selector, Static).update(text)

    def show_no_run(self, message: str) -> None:
        for empty in self.query(".empty-note").results(Empty):
            empty.update(message)
            empty.display = True

    def note(self, widget_id: str, message: str | None) -> None:
        """Show `message` in an Empty note (None hides it; NO_DATA says the situation)."""
        if message == NO_DATA:
            message = self.context.empty_state()
        empty = self.query_one(f"#{widget_id}", Empty)
        empty.display = message is not None
        if message is not None:
            empty.update(message)
