"""Every message the dashboard's parts send each other, in one place.

Views and the command palette post requests to the app (they never import it); the refresh
loop's workers post their results. Requests go straight to the app's queue (`app.post_message`)
rather than bubbling through the switcher and the screen: a request made while a key is handled
is then handled before the next key, as a direct call was.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

from textual.message import Message

from . import data as D

# --- views and the palette ask the app --------------------------------------------------------


class RefreshRequested(Message):
    """A view's parameters changed (filter, page, sort, arm): fetch it again now."""


class RunChosen(Message):
    """Show this run (None: follow the latest run)."""

    def __init__(self, run_id: str | None) -> None:
        super().__init__()
        self.run_id = run_id


class BaselineChosen(Message):
    """Compare the run with this one (None: with its own ungoverned arm)."""

    def __init__(self, run_id: str | None) -> None:
        super().__init__()
        self.run_id = run_id


class ShowEvents(Message):
    """Open the Events view filtered on these fields (rule_id, arm, verdict; None: any)."""

    def __init__(self, **filters: str | None) -> None:
        super().__init__()
        self.filters = filters


class SilenceRequested(Message):
    """Ask the user how long to silence this alert (a row of alert_state), then save it."""

    def __init__(self, alert: Mapping[str, Any]) -> None:
        super().__init__()
        self.alert = dict(alert)


class LoadRequested(Message):
    """Run `fn(cursor)` in a thread worker; `done(result)` on the main thread."""

    def __init__(self, fn: Callable[[D.Con], Any], done: Callable[[Any], None],
                 group: str = "load") -> None:
        super().__init__()
        self.fn, self.done, self.group = fn, done, group


class ExpireRequested(Message):
    """Ask the user to confirm, then expire this silence (a row of the silences table)."""

    def __init__(self, silence: Mapping[str, Any]) -> None:
        super().__init__()
        self.silence = dict(silence)


class ViewChosen(Message):
    """Show the view at this index of VIEWS (a click on its tab, a palette hit)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index


class CommandRequested(Message):
    """Run this `:` command line (a palette hit with its arguments typed)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class CommandLineRequested(Message):
    """Open the `:` command line with this text typed (the palette's hits)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


# --- workers hand back their results ----------------------------------------------------------


class Fetched(Message):
    """The refresh lane's result: the common state and the current view's data (or
    UNCHANGED), or the error that stopped it."""

    def __init__(self, token: int, view_id: str, key: tuple[Hashable, int, str | None],
                 common: D.Common | None, data: Any, error: BaseException | None,
                 seconds: float) -> None:
        super().__init__()
        self.token, self.view_id, self.key = token, view_id, key
        self.common, self.data, self.error, self.seconds = common, data, error, seconds


class Committed(Message):
    """The live writer committed new rows (posted from its thread): fetch them soon."""


class SlowFetched(Message):
    """The slow lane's result for a view (raw-table scans such as the report)."""

    def __init__(self, token: int, view_id: str, key: Hashable, data: Any,
                 error: BaseException | None, seconds: float) -> None:
        super().__init__()
        self.token, self.view_id, self.key = token, view_id, key
        self.data, self.error, self.seconds = data, error, seconds


class Loaded(Message):
    """A one-off load's result, with the callback that shows it."""

    def __init__(self, callback: Callable[[Any], None], result: Any,
                 error: BaseException | None) -> None:
        super().__init__()
        self.callback, self.result, self.error = callback, result, error
