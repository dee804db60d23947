"""The top line: one tab per view (clickable) and the run shown at its right end."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import events

from .messages import ViewChosen
from .widgets import TextLine


class TabBar(TextLine):
    """Tabs as text (one line, no layout cost). A click on a tab asks the app for its view."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._spans: list[tuple[int, int, int]] = []  # (first cell, end cell, view index)

    def show(self, tabs: Sequence[str], current: int, label: str, width: int) -> None:
        text = Text()
        spans = []
        for i, tab in enumerate(tabs):
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
