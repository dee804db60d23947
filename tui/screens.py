"""Modal screens: the key help, the silence form and a yes/no confirmation."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.keys import key_to_character
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from . import data as D
from . import fmt


def key_label(key: str) -> str:
    names = {"question_mark": "?", "slash": "/", "colon": ":", "space": "space",
             "plus": "+", "minus": "-", "equals_sign": "=", "escape": "esc", "enter": "enter"}
    return ",".join(names.get(k.strip()) or _printable(k.strip()) for k in key.split(","))


def _printable(key: str) -> str:
    """A key named after its character (a keymap's "#": number_sign) shown as that character."""
    char = key_to_character(key)
    return char if char is not None and char.isprintable() and not char.isspace() else key


class HelpScreen(ModalScreen[None]):
    """Every key of the dashboard with its binding id, global ones first, then per view."""

    BINDINGS = [
        Binding("escape,q,question_mark", "dismiss", "Close", id="help.close"),
        Binding("j,down", "scroll(1)", "Scroll down", show=False, id="help.down"),
        Binding("k,up", "scroll(-1)", "Scroll up", show=False, id="help.up"),
    ]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str, str]]]], *,
                 keymap_file: str = "") -> None:
        """`sections`: (title, [(keys, what it does, binding id)])."""
        super().__init__()
        self.sections = sections
        self.keymap_file = keymap_file

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(ratio=1)
        table.add_column(style="dim", no_wrap=True)
        for title, keys in self.sections:
            # In the description's column: a long title never widens the keys' column.
            table.add_row("", Text(title, style="bold underline"), "")
            for key, text, binding_id in keys:
                # Text, not markup: help lines hold [optional] arguments.
                table.add_row(key_label(key), Text(text), binding_id)
            table.add_row("", "", "")
        self.keys_table = table
        with VerticalScroll(id="help-box"):
            yield Static(table, id="help-keys")
            yield Label("esc, q or ? closes this help · j/k scroll · ctrl+p: the command "
                        "palette", classes="dim")
            yield Label(Text(f"remap keys by binding id in {self.keymap_file or 'keymap.toml'}"
                             ' ([keymap] "dashboard.quit" = "ctrl+q,q")'), classes="dim")

    def action_scroll(self, lines: int) -> None:
        box = self.query_one("#help-box", VerticalScroll)
        box.scroll_relative(y=lines, animate=False)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question: y or enter confirms, n or esc cancels."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    #confirm-box { width: 72; max-width: 95%; height: auto; border: round $warning;
                   background: $surface; padding: 1 2; }
    """
    BINDINGS = [
        Binding("y,enter", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str, *details: str) -> None:
        super().__init__()
        self.question = question
        self.details = details

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Label(Text(self.question), classes="bold")
            for line in self.details:
                yield Label(Text(line), classes="dim")
            yield Label("y/enter: yes · n/esc: no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


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
