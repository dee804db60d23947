"""The prompt line under the views: `/` filters and `:` commands, with a history and completion.

History (`:` only, as in a shell): up recalls older lines, down newer ones and finally the line
being typed; it is kept in `$XDG_STATE_HOME/tractatus-watch/history` (0600, the last
HISTORY_MAX lines) when the app is given that path. Completion: the first candidate shows as
grey text after the cursor (Textual's suggester; right arrow accepts it) and Tab completes:
one candidate is taken, several are completed to their common prefix, then cycled through.
The candidates come from a function the app passes in (tui/commands.py: command names, then
run ids, alert names, view names, themes, silence ids).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Final

from textual.binding import Binding, BindingType
from textual.suggester import Suggester
from textual.widgets import Input

from ..records.files import atomic_file, make_dirs

HISTORY_MAX: Final = 500

# The candidates for a line: complete lines, in the order to offer them.
Completer = Callable[[str], Sequence[str]]


def default_history_path() -> Path:
    """$XDG_STATE_HOME/tractatus-watch/history (~/.local/state when unset)."""
    home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(home) / "tractatus-watch" / "history"


class History:
    """Command lines, oldest first, bounded; saved whole after every line (a few KB)."""

    def __init__(self, path: Path | None = None, limit: int = HISTORY_MAX) -> None:
        self.path = path
        self.limit = limit
        self.lines: list[str] = []
        self.error = ""  # why the file could not be read or written (shown once)
        if path is not None:
            self._read(path)

    def _read(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            self.error = f"history {path}: cannot read it ({exc}); starting empty"
            return
        self.lines = [ln for ln in text.splitlines() if ln.strip()][-self.limit:]

    def add(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        if line in self.lines:
            self.lines.remove(line)  # once, at its newest place: up finds it first
        self.lines.append(line)
        del self.lines[:-self.limit]
        if self.path is not None:
            self._save(self.path)

    def _save(self, path: Path) -> None:
        try:
            make_dirs(path.parent)
            with atomic_file(path, force=True) as fh:  # 0600, whole or not at all
                fh.write("".join(f"{ln}\n" for ln in self.lines).encode("utf-8"))
        except (OSError, ValueError) as exc:
            self.error = f"history {path}: cannot write it ({exc})"


class CompletionSuggester(Suggester):
    """The first candidate as the Input's grey suggestion."""

    def __init__(self, completer: Completer) -> None:
        # No cache: the candidates change with the data (new runs, alerts).
        super().__init__(use_cache=False, case_sensitive=True)
        self.completer = completer

    async def get_suggestion(self, value: str) -> str | None:
        for candidate in self.completer(value):
            if candidate.startswith(value) and candidate != value:
                return candidate
        return None


class Prompt(Input):
    """The `/` and `:` line. `mode` is set by the app when it opens the prompt."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "history(-1)", "Older", show=False, id="prompt.history_older"),
        Binding("down", "history(1)", "Newer", show=False, id="prompt.history_newer"),
        Binding("tab", "complete", "Complete", show=False, id="prompt.complete"),
    ]

    def __init__(self, history: History, completer: Completer, *,
                 id: str | None = None) -> None:
        super().__init__(id=id, suggester=CompletionSuggester(self._candidates))
        self.history = history
        self.completer = completer
        self.mode = ":"
        self._recall: int | None = None      # index into history.lines while recalling
        self._draft = ""                     # the line typed before recalling
        self._cycle: tuple[str, list[str], int] | None = None  # (typed, candidates, shown)

    def _candidates(self, text: str) -> Sequence[str]:
        return self.completer(text) if self.mode == ":" else ()

    def open(self, mode: str, placeholder: str, value: str) -> None:
        self.mode = mode
        self.placeholder = placeholder
        self._recall = None
        self._cycle = None
        self.value = value
        self.cursor_position = len(value)

    # --- history ---------------------------------------------------------------------------

    def action_history(self, step: int) -> None:
        lines = self.history.lines
        if self.mode != ":" or not lines:
            return
        if self._recall is None:
            if step > 0:
                return  # already on the line being typed
            self._draft = self.value
            index = len(lines) - 1
        else:
            index = self._recall + step
        if index < 0:
            index = 0
        if index >= len(lines):
            self._recall = None
            self._set(self._draft)
            return
        self._recall = index
        self._set(lines[index])

    def _set(self, text: str) -> None:
        self.value = text
        self.cursor_position = len(text)

    # --- completion ------------------------------------------------------------------------

    def action_complete(self) -> None:
        if self.mode != ":":
            return
        if self._cycle is not None and self.value == self._cycle[1][self._cycle[2]]:
            typed, candidates, shown = self._cycle
            shown = (shown + 1) % len(candidates)
            self._cycle = (typed, candidates, shown)
            self._set(candidates[shown])
            return
        self._cycle = None
        text = self.value
        candidates = [c for c in self.completer(text) if c.startswith(text)]
        if not candidates:
            self.app.bell()
            return
        if len(candidates) == 1:
            self._set(candidates[0])
            return
        common = os.path.commonprefix(candidates)
        if len(common) > len(text):
            self._set(common)
            return
        self._cycle = (text, candidates, 0)
        self._set(candidates[0])
