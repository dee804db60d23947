"""The seven views, one module each. Tables hold aggregates or one page of raw events: nothing
that grows with the data is ever handed to a widget."""

from __future__ import annotations

from .agents import Agents
from .alerts import Alerts
from .base import LOADING, NO_DATA, Fetch, View, ViewContext
from .events import Events
from .overhead import Overhead
from .overview import Overview
from .rules import Rules
from .runs import Runs

# In key order: the number keys 1-7 and the tabs follow this tuple.
VIEWS: tuple[type[View], ...] = (Overview, Rules, Alerts, Runs, Agents, Overhead, Events)


def view_index(name: str) -> int:
    """A view by its key ("2") or name ("rules")."""
    for i, v in enumerate(VIEWS):
        if name.lower() in (v.KEY, v.TITLE.lower()):
            return i
    raise ValueError(f"no view {name!r}; views: {', '.join(v.TITLE.lower() for v in VIEWS)}")


__all__ = ["LOADING", "NO_DATA", "VIEWS", "Agents", "Alerts", "Events", "Fetch", "Overhead",
           "Overview", "Rules", "Runs", "View", "ViewContext", "view_index"]
