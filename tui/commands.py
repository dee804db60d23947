"""The `:` commands, one table: each command's name, usage, help, handler and completions.

The command line's placeholder and the `:` line of the key help (`usage_line`), the lookup of
`run_command`, Tab completion (`complete`) and the command-palette provider are all generated
from COMMANDS, so a command added here shows up everywhere. Handlers raise ValueError with a
one-line message (shown as an error toast and in the prompt, which stays open, emptied).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Protocol

from textual.command import DiscoveryHit, Hit, Hits, Provider

from . import fmt
from .messages import CommandLineRequested, CommandRequested, ViewChosen
from .views import VIEWS, view_index


class CommandTarget(Protocol):
    """What the commands drive (the Dashboard)."""

    interval: float

    def known_runs(self) -> list[str]: ...
    def alert_names(self) -> list[str]: ...
    def silence_ids(self) -> list[str]: ...
    def theme_names(self) -> list[str]: ...
    def expire_silence(self, silence_id: str) -> None: ...
    def action_help(self) -> None: ...
    def choose_run(self, run_id: str | None) -> None: ...
    def choose_baseline(self, run_id: str | None) -> None: ...
    def compare(self, run_id: str | None) -> None: ...
    def find_alert(self, name: str) -> dict[str, Any]: ...
    def silence(self, alert: Mapping[str, Any], seconds: float, comment: str) -> None: ...
    def action_theme(self, name: str | None = None) -> None: ...
    def action_export(self, file_format: str = "csv", path: str | None = None) -> None: ...
    def switch_view(self, index: int) -> None: ...
    def set_smoothing(self, weight: float) -> None: ...
    def exit(self) -> None: ...


Handler = Callable[[CommandTarget, Sequence[str]], None]
# The candidates for one argument, from what the dashboard shows now.
Candidates = Callable[[CommandTarget], Sequence[str]]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str                      # as listed in the command line's placeholder
    help: str                       # one line, for the palette
    handler: Handler
    aliases: tuple[str, ...] = ()
    args: tuple[Candidates, ...] = ()   # completions of the first, second ... argument
    bare: bool = False              # useful without arguments: the palette runs it at once


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


# The EMA weight of `:smooth` without one and of the `S` key (TensorBoard's default slider).
DEFAULT_SMOOTHING = 0.6


def _smooth(target: CommandTarget, args: Sequence[str]) -> None:
    """`smooth 0.6` (the EMA weight, as TensorBoard's slider), `smooth off` or `smooth 0`."""
    text = args[0] if args else f"{DEFAULT_SMOOTHING:g}"
    try:
        weight = 0.0 if text in ("off", "none") else float(text)
    except ValueError:
        weight = -1.0
    if not 0 <= weight < 1:
        raise ValueError("usage: smooth WEIGHT|off (an EMA weight from 0 to 0.99; 0 is off)")
    target.set_smoothing(weight)


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


def _unsilence(target: CommandTarget, args: Sequence[str]) -> None:
    if not args:
        raise ValueError("usage: unsilence ID (the silence's id, or the start of it)")
    target.expire_silence(args[0])


def _help(target: CommandTarget, args: Sequence[str]) -> None:
    target.action_help()


def _quit(target: CommandTarget, args: Sequence[str]) -> None:
    target.exit()


def _runs(*extra: str) -> Candidates:
    return lambda target: [*target.known_runs(), *extra]


def _fixed(*values: str) -> Candidates:
    return lambda _target: list(values)


def _alerts(target: CommandTarget) -> list[str]:
    return target.alert_names()


def _silences(target: CommandTarget) -> list[str]:
    return target.silence_ids()


def _themes(target: CommandTarget) -> list[str]:
    return target.theme_names()


def _views(_target: CommandTarget) -> list[str]:
    return [v.TITLE.lower() for v in VIEWS]


COMMANDS: Final[tuple[Command, ...]] = (
    Command("run", "run ID|latest", "show a run (latest: follow the newest run)", _run,
            args=(_runs("latest"),)),
    Command("baseline", "baseline ID|none",
            "compare with another run's arm (none: the run's own ungoverned arm)", _baseline,
            args=(_runs("none"),)),
    Command("compare", "compare ID|none", "compare the run shown with another, in Runs",
            _compare, args=(_runs("none"),)),
    Command("silence", "silence ALERT DURATION [COMMENT]",
            "mute an alert (by name or fingerprint) for a while, e.g. silence X 2h why",
            _silence, args=(_alerts, _fixed("30m", "1h", "2h", "1d"))),
    Command("unsilence", "unsilence ID", "expire a silence now (its id, or the start of it)",
            _unsilence, aliases=("expire",), args=(_silences,)),
    Command("interval", "interval SECONDS", "seconds between refreshes (0.1 to 3600)",
            _interval, args=(_fixed("0.25", "0.5", "1", "2", "5", "10", "30", "60"),)),
    Command("smooth", "smooth [WEIGHT|off]",
            "smooth the Overview's charts (EMA weight 0-0.99, as TensorBoard; default "
            f"{DEFAULT_SMOOTHING:g})",
            _smooth, args=(_fixed("0.6", "0.9", "off"),), bare=True),
    Command("theme", "theme NAME", "switch to a theme (no name: the next one)", _theme,
            args=(_themes,)),
    Command("export", "export [csv|parquet] [PATH]", "write the current view's table",
            _export, args=(_fixed("csv", "parquet"),), bare=True),
    Command("view", "view N", "switch to a view by key or name", _view, args=(_views,)),
    Command("help", "help", "every key, its binding id, and every command", _help, bare=True),
    Command("quit", "quit", "leave the dashboard", _quit, aliases=("q",), bare=True),
)

_BY_NAME: Final = {n: c for c in COMMANDS for n in (c.name, *c.aliases)}


def usage_line() -> str:
    """Every command's usage on one line: the command line's placeholder and its help."""
    return " · ".join(c.usage for c in COMMANDS)


def complete(target: CommandTarget, text: str) -> list[str]:
    """Complete lines for `text`: command names (with the space after them), then the
    candidates of the argument being typed. Argument candidates are listed in the order the
    dashboard gives them; a candidate list that cannot be had (no data yet) is empty."""
    head, space, rest = text.partition(" ")
    if not space:
        return [f"{c.name} " for c in COMMANDS if c.name.startswith(head.lower())]
    command = _BY_NAME.get(head.lower())
    if command is None:
        return []
    words = rest.split(" ")
    position, prefix = len(words) - 1, words[-1]
    if position >= len(command.args):
        return []
    typed = text[:len(text) - len(prefix)]
    seen: dict[str, None] = {}
    for candidate in command.args[position](target):
        if candidate.startswith(prefix):
            seen.setdefault(typed + candidate, None)
    return list(seen)


def run_command(target: CommandTarget, text: str) -> None:
    """Run one `:` command line; raises ValueError with a one-line message."""
    words = text.split()
    if not words:
        return
    command = _BY_NAME.get(words[0].lower())
    if command is None:
        raise ValueError(f"unknown command {words[0].lower()!r}: {usage_line()}")
    command.handler(target, words[1:])


def view_hits() -> list[tuple[str, int]]:
    """The palette's view switches: ("view Rules (2)", index)."""
    return [(f"view {v.TITLE} ({v.KEY})", i) for i, v in enumerate(VIEWS)]


class CommandLineProvider(Provider):
    """The `:` commands and the view switches in Textual's command palette (ctrl+p). A view
    hit switches at once, as does a command useful bare (export, help, quit); any other
    command opens the command line with it typed, ready for its arguments. A query that is a
    whole command line (`run beta`) is offered first, to run as typed."""

    async def discover(self) -> Hits:
        for command in COMMANDS:
            yield DiscoveryHit(command.usage, self._choose(command), help=command.help)
        for text, index in view_hits():
            yield DiscoveryHit(text, partial(self._view, index), help="switch to this view")

    async def search(self, query: str) -> Hits:
        line = query.strip()
        head, _, rest = line.partition(" ")
        command = _BY_NAME.get(head.lower())
        if command is not None and rest.strip():
            yield Hit(1.0, f":{line}", partial(self._run, line), text=f":{line}",
                      help=f"run it · {command.help}")
        matcher = self.matcher(query)
        for command in COMMANDS:
            score = matcher.match(command.usage)
            if score > 0:
                yield Hit(score, matcher.highlight(command.usage), self._choose(command),
                          text=command.usage, help=command.help)
        for text, index in view_hits():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(self._view, index),
                          text=text, help="switch to this view")

    def _choose(self, command: Command) -> Callable[[], None]:
        if command.bare:
            return partial(self._run, command.name)
        return partial(self._type, command)

    def _type(self, command: Command) -> None:
        self.app.post_message(CommandLineRequested(f"{command.name} "))

    def _run(self, line: str) -> None:
        self.app.post_message(CommandRequested(line))

    def _view(self, index: int) -> None:
        self.app.post_message(ViewChosen(index))
