"""The top line: one tab per view (clickable) and the run shown at its right end."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import events

from . import fmt
from .messages import ViewChosen
from .widgets import TextLine


class TabBar(TextLine):
    """Tabs as text (one line, no layout cost). A click on a tab asks the app for its view."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._spans: list[tuple[int, int, int]] = []  # (first cell, end cell, view index)

    def show(self, tabs: Sequence[str], current: int, run: str | None, width: int,
             baseline: str | None = None) -> None:
        """Tabs ("1 Overview") and the run (and its baseline) at the right end, on one line:
        when they do not fit, the other tabs keep only their keys, then the run ids lose
        their middle (never their start or end) down to 8 cells each."""
        for compact in (False, True):
            shown = [tab.split(" ")[0] if compact and i != current else tab
                     for i, tab in enumerate(tabs)]
            used = sum(len(t) + 1 for t in shown)
            label = run_label(run, baseline, width - used - 3)
            if used + len(label) + 3 <= width:
                break
        text = Text()
        spans = []
        for i, tab in enumerate(shown):
            text.append(" ")
            start = text.cell_len
            text.append(tab, style="reverse bold" if i == current else "")
            spans.append((start, text.cell_len, i))
        gap = width - text.cell_len - len(label) - 1
        text.append(" " * max(gap, 2))
        text.append(label + " ", style="bold")
        self._spans = spans
        self.set(text)

    def tab_at(self, x: int) -> int | None:
        for start, end, index in self._spans:
            if start - 1 <= x < end:  # the space before a tab belongs to it
                return index
        return None

    def on_click(self, event: events.Click) -> None:
        index = self.tab_at(event.x)
        if index is not None:
            event.stop()
            self.app.post_message(ViewChosen(index))


def run_label(run: str | None, baseline: str | None, room: int) -> str:
    """"run ID" or "run ID vs BASELINE" in `room` cells where possible: the ids lose their
    middle, each kept to at least 8 cells."""
    ids = [run or "–"] + ([baseline] if baseline else [])
    fixed = len("run ") + (len(" vs ") if baseline else 0)
    share = max(8, (room - fixed) // len(ids))
    if fixed + sum(len(i) for i in ids) > room:
        # The baseline gets what the run id does not need.
        first = fmt.middle(ids[0], max(share, room - fixed - sum(len(i) for i in ids[1:])))
        ids = [first] + [fmt.middle(i, max(8, room - fixed - len(first))) for i in ids[1:]]
    return "run " + " vs ".join(ids)
