"""The `:` commands, one table: each command's name, usage, help and handler.

The command line's placeholder and the `:` line of the key help (`usage_line`), the lookup of
`run_command` and the command-palette provider are all generated from COMMANDS, so a command
added here shows up everywhere. Handlers raise ValueError with a one-line message (shown as an
error toast; the command line stays open).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Protocol

from textual.command import DiscoveryHit, Hit, Hits, Provider

from . import fmt
from .messages import CommandLineRequested
from .views import VIEWS, view_index


class CommandTarget(Protocol):
    """What the commands drive (the Dashboard)."""

    interval: float

    def known_runs(self) -> list[str]: ...
    def choose_run(self, run_id: str | None) -> None: ...
    def choose_baseline(self, run_id: str | None) -> None: ...
    def compare(self, run_id: str | None) -> None: ...
    def find_alert(self, name: str) -> dict[str, Any]: ...
    def silence(self, alert: Mapping[str, Any], seconds: float, comment: str) -> None: ...
    def action_theme(self, name: str | None = None) -> None: ...
    def action_export(self, file_format: str = "csv", path: str | None = None) -> None: ...
    def switch_view(self, index: int) -> None: ...
    def exit(self) -> None: ...


Handler = Callable[[CommandTarget, Sequence[str]], None]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str                      # as listed in the command line's placeholder
    help: str                       # one line, for the palette
    handler: Handler
    aliases: tuple[str, ...] = ()


def _pick(target: CommandTarget, run: str) -> str:
    known = target.known_runs()
    if known and run not in known:
        raise ValueError(f"no run {run!r}; runs: {', '.join(known[:8])}")
    return run


def _run(target: CommandTarget, args: Sequence[str]) -> None:
    if not args:
        raise ValueError("usage: run ID (or: run latest)")
    target.choose_run(None if args[0] == "latest" else _pick(target, args[0]))


def _baseline(target: CommandTarget, args: Sequence[str]) -> None:
    if not args:
        raise ValueError("usage: baseline ID (or: baseline none)")
    target.choose_baseline(None if args[0] == "none" else _pick(target, args[0]))


def _compare(target: CommandTarget, args: Sequence[str]) -> None:
    if not args:
        raise ValueError("usage: compare ID (or: compare none)")
    target.compare(None if args[0] == "none" else _pick(target, args[0]))


def _silence(target: CommandTarget, args: Sequence[str]) -> None:
    if len(args) < 2:
        raise ValueError("usage: silence ALERT DURATION [COMMENT]")
    alert = target.find_alert(args[0])
    target.silence(alert, fmt.duration(args[1]), " ".join(args[2:]))


def _interval(target: CommandTarget, args: Sequence[str]) -> None:
    try:
        seconds = float(args[0].rstrip("s"))
    except (IndexError, ValueError):
        raise ValueError("usage: interval SECONDS (e.g. interval 0.5)") from None
    if not 0.1 <= seconds <= 3600:
        raise ValueError("interval must be between 0.1 and 3600 seconds")
    target.interval = seconds


def _theme(target: CommandTarget, args: Sequence[str]) -> None:
    target.action_theme(args[0] if args else None)


def _export(target: CommandTarget, args: Sequence[str]) -> None:
    file_format = args[0] if args else "csv"
    if file_format not in ("csv", "parquet"):
        raise ValueError("usage: export [csv|parquet] [PATH]")
    target.action_export(file_format, args[1] if len(args) > 1 else None)


def _view(target: CommandTarget, args: Sequence[str]) -> None:
    try:
        index = view_index(args[0]) if args else None
    except ValueError:
        index = None
    if index is None:
        raise ValueError(f"usage: view N|NAME ({', '.join(v.TITLE for v in VIEWS)})")
    target.switch_view(index)


def _quit(target: CommandTarget, args: Sequence[str]) -> None:
    target.exit()


COMMANDS: Final[tuple[Command, ...]] = (
    Command("run", "run ID|latest", "show a run (latest: follow the newest run)", _run),
    Command("baseline", "baseline ID|none",
            "compare with another run's arm (none: the run's own ungoverned arm)", _baseline),
    Command("compare", "compare ID|none", "compare the run shown with another, in Runs",
            _compare),
    Command("silence", "silence ALERT DURATION [COMMENT]",
            "mute an alert (by name or fingerprint) for a while, e.g. silence X 2h why",
            _silence),
    Command("interval", "interval SECONDS", "seconds between refreshes (0.1 to 3600)",
            _interval),
    Command("theme", "theme NAME", "switch to a theme (no name: the next one)", _theme),
    Command("export", "export [csv|parquet] [PATH]", "write the current view's table",
            _export),
    Command("view", "view N", "switch to a view by key or name", _view),
    Command("quit", "quit", "leave the dashboard", _quit, aliases=("q",)),
)

_BY_NAME: Final = {n: c for c in COMMANDS for n in (c.name, *c.aliases)}


def usage_line() -> str:
    """Every command's usage on one line: the command line's placeholder and its help."""
    return " · ".join(c.usage for c in COMMANDS)


def run_command(target: CommandTarget, text: str) -> None:
    """Run one `:` command line; raises ValueError with a one-line message."""
    words = text.split()
    if not words:
        return
    command = _BY_NAME.get(words[0].lower())
    if command is None:
        raise ValueError(f"unknown command {words[0].lower()!r}: {usage_line()}")
    command.handler(target, words[1:])


class CommandLineProvider(Provider):
    """The `:` commands in Textual's command palette (the palette is off until issue 13). A
    hit opens the command line with the command typed, ready for its arguments."""

    async def discover(self) -> Hits:
        for command in COMMANDS:
            yield DiscoveryHit(command.usage, partial(self._type, command), help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in COMMANDS:
            score = matcher.match(command.usage)
            if score > 0:
                yield Hit(score, matcher.highlight(command.usage), partial(self._type, command),
                          text=command.usage, help=command.help)

    def _type(self, command: Command) -> None:
        self.app.post_message(CommandLineRequested(f"{command.name} "))
