"""Modal screens: the key help and the silence form."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from . import data as D
from . import fmt


def key_label(key: str) -> str:
    names = {"question_mark": "?", "slash": "/", "colon": ":", "space": "space",
             "plus": "+", "minus": "-", "equals_sign": "=", "escape": "esc", "enter": "enter"}
    return ",".join(names.get(k, k) for k in key.split(","))


class HelpScreen(ModalScreen[None]):
    """Every key of the dashboard, global ones first, then per view."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for title, keys in self.sections:
            table.add_row(Text(title, style="bold underline"), "")
            for key, text in keys:
                # Text, not markup: help lines hold [optional] arguments.
                table.add_row(key_label(key), Text(text))
            table.add_row("", "")
        with VerticalScroll(id="help-box"):
            yield Static(table, id="help-keys")
            yield Label("esc, q or ? closes this help", classes="dim")


class SilenceScreen(ModalScreen[tuple[float, str] | None]):
    """Ask for how long and why; returns (seconds, comment) or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="silence.cancel")]

    def __init__(self, alert: dict[str, Any]) -> None:
        super().__init__()
        self.alert = alert

    def compose(self) -> ComposeResult:
        labels = D.labels_of(self.alert.get("labels"))
        labels.setdefault("alertname", str(self.alert.get("alertname")))
        with Vertical(id="silence-box"):
            yield Label(f"Silence {self.alert.get('alertname')} "
                        f"({self.alert.get('state')})", classes="bold")
            yield Label(" ".join(f'{k}="{v}"' for k, v in sorted(labels.items())),
                        classes="dim")
            yield Label("for how long (30m, 2h, 1d):")
            yield Input(value="1h", id="silence-duration")
            yield Label("comment (why; who to ask):")
            yield Input(placeholder="e.g. known issue, fix deploying", id="silence-comment")
            yield Label("enter: save · esc: cancel", classes="dim")
            yield Label("", id="silence-error")

    def on_mount(self) -> None:
        self.query_one("#silence-duration", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "silence-duration":
            self.query_one("#silence-comment", Input).focus()
            return
        try:
            seconds = fmt.duration(self.query_one("#silence-duration", Input).value)
        except ValueError as exc:
            self.query_one("#silence-error", Label).update(str(exc))
            self.query_one("#silence-duration", Input).focus()
            return
        self.dismiss((seconds, self.query_one("#silence-comment", Input).value.strip()))

    def action_cancel(self) -> None:
        self.dismiss(None)
