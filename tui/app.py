"""The dashboard app: it puts the parts together and carries out what they ask.

The parts: the refresh loop (tui/refresh.py: the fetch lanes, timers and "nothing changed"
shortcut), the views (tui/views/: one module each; they post requests, tui/messages.py), the
tab bar and status bar (tui/tab_bar.py, tui/status_bar.py), the prompt with its history and
completion (tui/prompt.py) and the `:` command table (tui/commands.py, also behind the
command palette). The app holds the scope, pause and interval (reactives whose watchers tell
the loop), shows what the loop fetched, and does the work views ask for: choosing runs,
silences, one-off loads, export. It reads through storage queries only; in `live` it shares
the writer's Store (DuckDB allows one process per file) and reads through `store.cursor()`.

Keys follow k9s, lazygit and btop: ctrl+c and q quit, esc goes back, j/k move in tables,
ctrl+p opens the palette; users remap any binding by its id (tui/keymap.py).
"""

from __future__ import annotations

import gc
import getpass
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Final, cast

import polars as pl
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.reactive import var
from textual.widgets import ContentSwitcher, Footer, Input

from ..analysis.metrics import AlertCounts
from ..records.files import atomic_file
from ..storage.store import Store
from . import commands
from . import data as D
from . import fmt
from . import keymap as K
from ..monitor.health import HealthProvider, SourceHealth, as_health
from .messages import (BaselineChosen, CommandLineRequested, CommandRequested, Committed,
                       ExpireRequested, Fetched, Loaded, LoadRequested, RefreshRequested,
                       RunChosen, ShowEvents, SilenceRequested, SlowFetched, ViewChosen)
from .prompt import History, Prompt, default_history_path
from .refresh import UNCHANGED, RefreshLoop
from .scope import Scope
from .screens import ConfirmScreen, HelpScreen, SilenceScreen, key_label
from .status_bar import Status, StatusBar
from .tab_bar import TabBar
from .table import Table
from .views import NO_DATA, VIEWS, Alerts, Overview, Runs, View, ViewContext, view_index

__all__ = ["Dashboard", "Scope", "SilenceExpirer", "SilenceWriter", "binding_ids",
           "run_dashboard", "view_index", "write_frame"]

log = logging.getLogger("tractatus_watch.tui")

INTERVALS: Final = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
THEMES: Final = ("textual-dark", "textual-light", "nord", "gruvbox", "tokyo-night", "dracula",
                 "monokai", "solarized-light")

# Called with the silence to store; raises with a one-line message when it cannot.
SilenceWriter = Callable[[Any], None]
# Called with a silence id and the time: ends the silence then (ends_at = now); False when no
# active silence has that id. The same store as the writer (DuckDBAlertStore.expire_silence).
SilenceExpirer = Callable[[str, float], bool]
# What an empty view says: the situation ("gateway listening on ..."), asked at each showing.
EmptyState = Callable[[], str]

COMMANDS_HELP: Final = commands.usage_line()


class Dashboard(App[None]):
    CSS_PATH = "dashboard.tcss"
    TITLE = "tractatus-watch"
    ENABLE_COMMAND_PALETTE = True
    COMMANDS = App.COMMANDS | {commands.CommandLineProvider}
    # Binding ids are stable (user keymaps refer to them, tui/keymap.py): "dashboard.<action>"
    # for the keys that work everywhere, "dashboard.view.<name>" for the number keys,
    # "<view>.<action>" for a view's own keys (tui/views/), "table.<action>" in tables,
    # "prompt.<action>" in the prompt, "help.*", "silence.*" and "confirm.*" in the modal
    # screens. action_help lists them all with their keys.
    BINDINGS: ClassVar[list[BindingType]] = [
        *[Binding(v.KEY, f"view({i})", v.TITLE, show=False,
                  id=f"dashboard.view.{v.TITLE.lower()}") for i, v in enumerate(VIEWS)],
        Binding("question_mark", "help", "Help", id="dashboard.help"),
        Binding("slash", "filter", "Filter", id="dashboard.filter"),
        Binding("colon", "command", "Cmd", id="dashboard.command"),
        Binding("space", "pause", "Pause", id="dashboard.pause"),
        Binding("plus", "slower", "+int", show=False, id="dashboard.slower"),
        Binding("minus", "faster", "-int", show=False, id="dashboard.faster"),
        Binding("e", "export", "Export", id="dashboard.export"),
        Binding("s", "screenshot", "SVG", id="dashboard.screenshot"),
        Binding("t", "theme", "Theme", show=False, id="dashboard.theme"),
        Binding("S", "smooth", "Smooth", show=False, id="dashboard.smooth"),
        Binding("r", "refresh", "Refresh", show=False, id="dashboard.refresh"),
        Binding("escape", "go_back", "Back", show=False, id="dashboard.back"),
        Binding("ctrl+p", "command_palette", "Palette", show=False, priority=True,
                id="dashboard.palette"),
        Binding("q", "quit", "Quit", id="dashboard.quit"),
        # Priority: before the prompt's copy and Textual's "press ctrl+q" hint.
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="dashboard.interrupt"),
    ]
    # What each action does, for the help (not Textual's HELP: that is a markdown string).
    KEY_HELP: ClassVar[dict[str, str]] = {
        "help": "this help", "filter": "filter the current view", "pause": "pause/resume refresh",
        "command": f"command line: {COMMANDS_HELP}", "slower": "refresh less often",
        "faster": "refresh more often", "export": "export the current view (CSV; Parquet "
        "with :export parquet)", "screenshot": "save an SVG screenshot", "theme": "next theme",
        "refresh": "refresh now", "quit": "quit",
        "smooth": f"smooth the Overview's charts on/off (EMA {commands.DEFAULT_SMOOTHING:g}; "
                  "other weights with :smooth WEIGHT)",
        "go_back": "back: close the prompt; from a drill-down, the view it came from (the drill "
                "filter cleared); else clear the view's filter",
        "command_palette": "command palette: every command and view",
    }

    # Set without watchers in __init__; afterwards every assignment runs its watcher (always,
    # as the setters did: choosing the same run again refetches it).
    scope: var[Scope] = var(Scope(), init=False, always_update=True)
    paused: var[bool] = var(False, init=False)
    interval: var[float] = var(5.0, init=False, always_update=True)

    def __init__(self, store: Store, *, run_id: str | None = None,
                 baseline_run: str | None = None, live_writer: Any = None,
                 source_health: HealthProvider | None = None,
                 silence_writer: SilenceWriter | None = None,
                 silence_expirer: SilenceExpirer | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.time, export_dir: Path | None = None,
                 title: str = "tractatus-watch", view: str = "overview",
                 empty_state: EmptyState | str | None = None, keymap: K.Keymap | None = None,
                 history: History | None = None, log_prints: bool = False) -> None:
        """`keymap`: the user's (run_dashboard loads it; warnings are shown as toasts).
        `history`: the `:` history (in memory when None). `log_prints`: what other code
        prints while the dashboard runs goes to the log (live/demo, whose log is a file)."""
        super().__init__()
        self.store = store
        self.title = title
        self.live = live_writer is not None or source_health is not None
        self.live_writer = live_writer
        self.source_health = source_health
        self.silence_writer = silence_writer
        self.silence_expirer = silence_expirer
        self.empty_state: EmptyState = _as_empty_state(empty_state)
        self.user_keymap = keymap or K.Keymap()
        self.history = history or History()
        self.log_prints = log_prints
        self.clock = clock
        self.export_dir = export_dir or Path.cwd()
        scope = Scope(run_id, baseline_run, follow_latest=run_id is None)
        seconds = interval if interval is not None else (1.0 if self.live else 5.0)
        self.set_reactive(Dashboard.scope, scope)
        self.set_reactive(Dashboard.interval, seconds)
        self.refresher = RefreshLoop(self, store, self._next_fetch, seconds)
        if live_writer is not None and hasattr(live_writer, "listen"):
            self.refresher.follow(live_writer)
        self.context = ViewContext(clock=clock, scope=scope, empty_state=self.empty_state)
        self.bells = 0              # counted so tests can see the bell of critical alerts
        self.refreshes = 0          # completed refreshes (tests wait on this)
        self.slow_done = 0          # completed slow-lane fetches
        self.last_show_s = 0.0      # main-thread time of the last view render (bench)
        self.common: D.Common | None = None
        self._alert_states: dict[str, tuple[str, str, str | None, float | None]] | None = None
        self._alert_counts = AlertCounts(0, 0, 0)
        self._prompt_mode = ""
        self._last_error = ""
        self._loads = 0             # one-off loads in flight
        self._switcher: ContentSwitcher | None = None
        # Every view exists from the start (they hold the state), but each is mounted the first
        # time it is shown: composing all seven would double the start-up time.
        self._views: dict[str, View] = {f"view-{v.TITLE.lower()}": v(self.context)
                                        for v in VIEWS}
        self._current_id = f"view-{VIEWS[view_index(view)].TITLE.lower()}"
        self._mounting = 0
        # A drill-down in progress: (the view it came from, the view it went to). Esc goes
        # back; leaving the target any other way clears its filter too.
        self._drill: tuple[str, str] | None = None
        self._run_ids: list[str] = []           # for completion, looked up when `:` opens
        self._silence_list: list[dict[str, Any]] = []  # active silences, likewise
        self._clashes: set[str] = set()

    # --- layout -----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield TabBar(id="topbar")
        with ContentSwitcher(initial=self._current_id, id="views"):
            yield self._views[self._current_id]
        yield StatusBar(id="status")
        yield Prompt(self.history, self.complete, id="prompt")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        # Kept by reference: while a modal screen is up, queries would search that screen.
        self._switcher = self.query_one("#views", ContentSwitcher)
        self._status = self.query_one("#status", StatusBar)
        self._topbar = self.query_one("#topbar", TabBar)
        self._prompt = self.query_one("#prompt", Prompt)
        self._prompt.display = False
        if self.user_keymap.keys:
            self.set_keymap(self.user_keymap.keys)
        for warning in (*self.user_keymap.warnings, self.history.error):
            if warning:
                self.notify(warning, title="keymap" if "keymap" in warning else "history",
                            severity="warning", timeout=12)
        if self.log_prints:
            self.begin_capture_print(self)
        self._update_tabs()
        self.update_status()
        self.current_view.focus_target().focus()
        self.refresh_view()

    def on_print(self, event: events.Print) -> None:
        # Another part printed while the screen is drawn (log_prints): to the log, not lost.
        if event.text.strip():
            log.warning("printed on %s: %s", "stderr" if event.stderr else "stdout",
                        event.text.rstrip())

    def handle_bindings_clash(self, clashed_bindings: set[Binding], node: Any) -> None:
        """A user's key took the key of another binding: say so once per binding."""
        lost = sorted(b.id or b.action for b in clashed_bindings) if clashed_bindings else []
        new = [i for i in lost if i not in self._clashes]
        if new:
            self._clashes.update(new)
            self.notify(f"keymap: {', '.join(new)} lost its key to a remapped binding",
                        title="keymap", severity="warning", timeout=12)

    @property
    def current_view(self) -> View:
        return self._views[self._current_id]

    def view(self, view_id: str) -> View:
        return self._views[view_id]

    @property
    def overview(self) -> Overview:
        return cast(Overview, self._views["view-overview"])

    def _update_tabs(self) -> None:
        """The view tabs, and the run shown at the right end of the same line."""
        current = next(i for i, v in enumerate(VIEWS)
                       if self._current_id == f"view-{v.TITLE.lower()}")
        s = self.scope
        self._topbar.show([f"{self._key_of(v.KEY, f'dashboard.view.{v.TITLE.lower()}')} "
                           f"{v.TITLE}" for v in VIEWS], current, s.run_id, self.size.width,
                          s.baseline_run)

    def _key_of(self, default: str, binding_id: str) -> str:
        """The key a binding has now (the user's keymap may have moved it), as shown."""
        return key_label(self._keymap.get(binding_id, default)).split(",")[0]

    def on_resize(self) -> None:
        if self._switcher is not None:
            self._update_tabs()

    # --- the refresh loop: asking it, and showing what it fetched ---------------------------------

    def refresh_view(self) -> None:
        """Fetch the current view now (or right after the fetch in flight: never two)."""
        self.refresher.refresh()

    def _next_fetch(self) -> tuple[View, Scope] | None:
        if self._exit or self._switcher is None or not self.current_view.is_mounted:
            return None  # starting, shutting down, or mounting the view (which refreshes when done)
        return self.current_view, self.scope

    def on_fetched(self, msg: Fetched) -> None:
        current = self.refresher.arrived(msg)
        if self._exit:
            return
        if msg.error is not None:
            text = f"{type(msg.error).__name__}: {str(msg.error).splitlines()[0]}"
            if text != self._last_error:
                self.notify(text, title="refresh failed", severity="error")
            self._last_error = text
        elif current:
            self._last_error = ""
            assert msg.common is not None
            self._apply_common(msg.common)
            view = self.view(msg.view_id)
            if not view.is_mounted:
                pass  # cannot happen today: views are only fetched once mounted
            elif msg.common.run_id is None:
                view.show_no_run(self.empty_state())
            elif msg.data is not UNCHANGED:
                started = time.perf_counter()
                view.show(msg.data)
                self.last_show_s = time.perf_counter() - started
                self.refresher.shown(msg)
            if msg.common.run_id is not None and msg.view_id == self.current_view.id:
                self.refresher.slow(view, msg.common.run_id, msg.common.version)
        if not self.refreshes:
            freeze_heap()
        self.refreshes += 1
        self.update_status()
        self.refresher.landed()

    def on_committed(self, _: Committed) -> None:
        self.refresher.committed()

    def on_slow_fetched(self, msg: SlowFetched) -> None:
        current = self.refresher.slow_arrived(msg)
        if self._exit:
            return
        if msg.error is not None:
            self.notify(f"{type(msg.error).__name__}: {str(msg.error).splitlines()[0]}",
                        title="background query failed", severity="error")
        elif current:
            self.view(msg.view_id).show_slow(msg.data)
        self.slow_done += 1
        if self.common is not None and self.common.run_id is not None:
            self.refresher.slow(self.current_view, self.common.run_id, self.common.version)

    def _apply_common(self, c: D.Common) -> None:
        if self.scope.follow_latest and c.run_id != self.scope.run_id:
            # Following the latest run is not a new scope: no watcher, nothing to start over.
            self.set_reactive(Dashboard.scope, replace(self.scope, run_id=c.run_id))
            self.context.scope = self.scope
            self._update_tabs()
        self.common = c
        states = {r["fingerprint"]: (r["state"], r["alertname"], r["severity"], r["value"])
                  for r in c.alerts.iter_rows(named=True)}
        self._alert_counts = c.alert_counts
        if self._alert_states is not None:
            for fp, (state, name, severity, value) in states.items():
                old = self._alert_states.get(fp, ("inactive", name, severity, None))[0]
                if old != state and "nodata" not in (old, state):
                    # No-data changes are listed in the Alerts view; as toasts they would
                    # flood the start of every run (each rule has no data yet).
                    self._transition(name, old, state, severity, value)
            for fp, (old, name, severity, value) in self._alert_states.items():
                if fp not in states and old not in ("inactive", "nodata"):
                    self._transition(name, old, "inactive", severity, value)
        self._alert_states = states
        self.context.alert_counts = self.alert_counts()
        if self.overview.is_mounted:
            self.overview.refresh_kpis()

    def _transition(self, name: str, old: str, new: str, severity: str | None,
                    value: float | None) -> None:
        shown = f"{name}: {old} → {new}" + (f" (value {value:.4g})" if value is not None else "")
        level = {"firing": "error" if severity == "critical" else "warning"}.get(new,
                                                                                "information")
        self.notify(shown, title=f"alert{f' [{severity}]' if severity else ''}",
                    severity=level, timeout=8)
        if new == "firing" and severity == "critical":
            self.ring()

    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        # Plain text by default: messages carry alert names, run ids and [optional] usage.
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def ring(self) -> None:
        self.bells += 1
        self.bell()

    @property
    def idle(self) -> bool:
        """Nothing fetched or loading (tests and the benchmark wait for this)."""
        return self.refresher.idle and not (self._loads or self._mounting)

    def alert_counts(self) -> AlertCounts:
        """Firing (not silenced), silenced and pending, as `check` counts them."""
        return self._alert_counts

    # --- one-off loads (detail panes, exports, silences) ------------------------------------------

    def load(self, fn: Callable[[D.Con], Any], callback: Callable[[Any], None],
             group: str = "load") -> None:
        """Run `fn(cursor)` in a thread; `callback(result)` on the main thread."""
        self._loads += 1
        self.run_worker(lambda: self._load(fn, callback), thread=True, group=group,
                        exit_on_error=False)

    def _load(self, fn: Callable[[D.Con], Any], callback: Callable[[Any], None]) -> None:
        result, error = None, None
        try:
            con = self.store.cursor()
            try:
                result = fn(con)
            finally:
                con.close()
        except Exception as exc:
            error = exc
        self.post_message(Loaded(callback, result, error))

    def on_loaded(self, msg: Loaded) -> None:
        self._loads -= 1
        if msg.error is not None:
            self.notify(str(msg.error).splitlines()[0] or type(msg.error).__name__,
                        severity="error")
        else:
            msg.callback(msg.result)

    # --- what the views ask -----------------------------------------------------------------------

    def on_refresh_requested(self, _: RefreshRequested) -> None:
        self.refresh_view()

    def on_run_chosen(self, msg: RunChosen) -> None:
        self.choose_run(msg.run_id)

    def on_baseline_chosen(self, msg: BaselineChosen) -> None:
        self.choose_baseline(msg.run_id)

    def on_show_events(self, msg: ShowEvents) -> None:
        self.show_events(**msg.filters)

    def on_silence_requested(self, msg: SilenceRequested) -> None:
        self.ask_silence(msg.alert)

    def on_load_requested(self, msg: LoadRequested) -> None:
        self.load(msg.fn, msg.done, group=msg.group)

    def on_command_line_requested(self, msg: CommandLineRequested) -> None:
        self.action_command(msg.text)

    def on_command_requested(self, msg: CommandRequested) -> None:
        """A palette hit: run the command; an error is a toast (the palette is gone)."""
        self.history.add(msg.text)
        try:
            self.run_command(msg.text)
        except ValueError as exc:
            self.notify(str(exc), title=f":{msg.text}", severity="error")

    def on_view_chosen(self, msg: ViewChosen) -> None:
        self.switch_view(msg.index)

    def on_expire_requested(self, msg: ExpireRequested) -> None:
        self.ask_expire(msg.silence)

    # --- scope, pause and interval ----------------------------------------------------------------

    def watch_scope(self, scope: Scope) -> None:
        """Another run or baseline: everything fetched so far was for the old one."""
        self.context.scope = scope
        self.refresher.new_scope()
        self._update_tabs()
        self.overview.report_kpis = None  # the KPIs of the old run
        if self.overview.is_mounted:
            self.overview.refresh_kpis()
        self.refresh_view()

    def watch_paused(self, paused: bool) -> None:
        self.refresher.pause(paused)
        self.update_status()

    def watch_interval(self, seconds: float) -> None:
        self.refresher.set_interval(seconds)
        self.update_status()

    def choose_run(self, run_id: str | None) -> None:
        if run_id is None:
            self.scope = replace(self.scope, follow_latest=True)
        else:
            self.scope = replace(self.scope, run_id=run_id, follow_latest=False)
        self.notify(f"showing run {run_id or 'latest'}", timeout=3)

    def choose_baseline(self, run_id: str | None) -> None:
        self.scope = replace(self.scope, baseline_run=run_id)
        self.notify(f"baseline: {run_id or 'the ungoverned arm of the same run'}", timeout=3)

    def set_smoothing(self, weight: float) -> None:
        """The charts' EMA weight (0: off), shown in their subtitles while on."""
        self.context.smoothing = weight
        overview = self.overview
        if overview.data is not None and overview.is_mounted:
            overview.show(overview.data)
        self.notify(f"smoothing {weight:g}" if weight else "smoothing off", timeout=3,
                    markup=False)

    def compare(self, run_id: str | None) -> None:
        """Compare the run shown with `run_id` (None: stop comparing), in the Runs view."""
        self.switch_view(view_index("runs"))
        cast(Runs, self.view("view-runs")).compare(run_id)

    def show_events(self, **filters: str | None) -> None:
        """A drill-down: Events filtered on these fields; esc comes back here."""
        events = self.view("view-events")
        text = " ".join(f"{'rule' if k == 'rule_id' else k}={v}" for k, v in filters.items() if v)
        origin = self._current_id
        self.switch_view(view_index("events"))
        events.set_filter(text)
        if origin != events.id:
            self._drill = (origin, events.id or "")

    def switch_view(self, index: int) -> None:
        view = self._views[f"view-{VIEWS[index].TITLE.lower()}"]
        if self._drill is not None and view.id != self._drill[1]:
            self._end_drill()  # the drill filter belongs to the drill-down only
        self._current_id = view.id or ""
        self._update_tabs()
        if view.is_attached:
            self._show_view(view)
        else:
            self._mounting += 1
            self.run_worker(self._mount_view(view), group="mount")

    def _end_drill(self) -> str | None:
        """Clear the drill-down's filter; returns the view it came from."""
        if self._drill is None:
            return None
        origin, target = self._drill
        self._drill = None
        self.view(target).set_filter("")
        return origin

    async def _mount_view(self, view: View) -> None:
        assert self._switcher is not None
        try:
            await self._switcher.mount(view)
        finally:
            self._mounting -= 1
        freeze_heap()
        if self._current_id == view.id:
            self._show_view(view)

    def _show_view(self, view: View) -> None:
        assert self._switcher is not None
        self._switcher.current = view.id
        view.focus_target().focus()
        self.refresh_view()

    # --- status line ------------------------------------------------------------------------------

    def health(self) -> list[SourceHealth]:
        if self.source_health is None:
            return []
        try:
            return [as_health(h) for h in self.source_health()]
        except Exception as exc:  # a broken provider must not break the dashboard
            return [SourceHealth(name="sources", state="failed", detail=str(exc))]

    def update_status(self) -> None:
        sources = self.health()
        ingest = None
        if self.live_writer is not None and not sources:
            ingest = sum(getattr(self.live_writer.stats, "committed_rows", {}).values())
        c = self.common
        store = None if self.live else (self.store.target.short
                                        + (" read-only" if self.store.read_only else ""))
        self._status.show(Status(
            now=self.clock(), paused=self.paused, interval=self.interval,
            refreshed=self.refreshes > 0, sources=sources, ingest_rows=ingest, store=store,
            last_ts=c.last_ts if c is not None else None, error=self._last_error))

    # --- actions ----------------------------------------------------------------------------------

    def action_view(self, index: int) -> None:
        self.switch_view(index)

    def action_refresh(self) -> None:
        self.refresh_view()

    def action_pause(self) -> None:
        self.paused = not self.paused

    def _step_interval(self, step: int) -> None:
        i = min(range(len(INTERVALS)), key=lambda j: abs(INTERVALS[j] - self.interval))
        self.interval = INTERVALS[min(max(i + step, 0), len(INTERVALS) - 1)]

    def action_slower(self) -> None:
        self._step_interval(1)

    def action_faster(self) -> None:
        self._step_interval(-1)

    def action_smooth(self) -> None:
        """Smoothing off if on (at any weight), else on at the default weight."""
        self.set_smoothing(0.0 if self.context.smoothing else commands.DEFAULT_SMOOTHING)

    def action_theme(self, name: str | None = None) -> None:
        names = [t for t in THEMES if t in self.available_themes]
        if name is None:
            name = names[(names.index(self.theme) + 1) % len(names)] if self.theme in names \
                else names[0]
        if name not in self.available_themes:
            themes = ", ".join(sorted(self.available_themes))
            raise ValueError(f"no theme {name!r}; themes: {themes}")
        self.theme = name
        self.notify(f"theme {name}", timeout=2)

    def action_help(self) -> None:
        """Every key with its binding id (for keymap.toml), as mapped now: the views, the keys
        that work everywhere (with KEY_HELP's longer text), each view's keys, then tables, the
        prompt and the modal screens. Generated from the bindings and, for `:`, from the
        command table."""
        sections: list[tuple[str, list[tuple[str, str, str]]]] = []
        for title, bindings in binding_sections():
            rows = [(self._keymap.get(b.id or "", b.key),
                     self.KEY_HELP.get(b.action, b.description) if title == "everywhere"
                     else b.description, b.id or "") for b in bindings]
            view = next((v for v in VIEWS if title == f"{v.KEY} {v.TITLE}"), None)
            if view is not None and view.FILTER_HELP:
                rows.append(("slash", f"filter: {view.FILTER_HELP}", ""))
            if rows:
                sections.append((title, rows))
        sections.append((":commands", [(c.name, f"{c.usage} · {c.help}", "")
                                       for c in commands.COMMANDS]))
        self.push_screen(HelpScreen(sections, keymap_file=str(K.default_path())))

    # --- the prompt: / filter and : commands ------------------------------------------------------

    def action_filter(self) -> None:
        view = self.current_view
        if not view.FILTER_HELP:
            self.notify(f"{view.TITLE} has no filter; try 2 Rules, 5 Agents or 7 Events",
                        timeout=3)
            return
        self._open_prompt("/", f"/ filter {view.TITLE}: {view.FILTER_HELP}", view.filter_text)

    def action_command(self, text: str = "") -> None:
        self._open_prompt(":", f": {COMMANDS_HELP} · tab completes, up recalls", text)
        self._load_completions()

    def _open_prompt(self, mode: str, placeholder: str, value: str) -> None:
        prompt = self._prompt
        self._prompt_mode = mode
        prompt.open(mode, placeholder, value)
        prompt.display = True
        prompt.focus()

    def action_close_prompt(self) -> None:
        prompt = self._prompt
        if prompt.display:
            prompt.display = False
            self.current_view.focus_target().focus()

    def action_go_back(self) -> None:
        """esc: close the prompt; else leave a drill-down for the view it came from (its
        filter cleared); else clear the current view's filter."""
        if self._prompt.display:
            self.action_close_prompt()
            return
        if self._drill is not None and self._current_id == self._drill[1]:
            origin = self._end_drill()
            self.switch_view(next(i for i, v in enumerate(VIEWS)
                                  if f"view-{v.TITLE.lower()}" == origin))
            return
        view = self.current_view
        if view.filter_text:
            view.set_filter("")
            self.notify(f"{view.TITLE}: filter cleared", timeout=2)

    def action_help_quit(self) -> None:
        # Textual's ctrl+c tells the user to press ctrl+q; here ctrl+c quits (as in k9s, btop).
        self.exit()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "prompt":
            return
        event.stop()
        text = event.value.strip()
        if self._prompt_mode == ":":
            self.history.add(text)
        try:
            if self._prompt_mode == "/":
                self.current_view.set_filter(text)
            else:
                self.run_command(text)
        except ValueError as exc:
            self._prompt_failed(str(exc))
            return
        self.action_close_prompt()

    def _prompt_failed(self, error: str) -> None:
        """A failed line: the error in a toast and in the prompt, which stays open. A command
        is cleared (up recalls it); a filter is kept selected, to retype or edit."""
        prompt = self._prompt
        self.notify(error, severity="error")
        prompt.placeholder = f"{self._prompt_mode} error: {error}"[:200]
        if self._prompt_mode == ":":
            prompt.value = ""
        else:
            prompt.select_all()

    def run_command(self, text: str) -> None:
        """`:` commands (tui/commands.py); raises ValueError with a one-line message."""
        commands.run_command(self, text)

    def complete(self, text: str) -> list[str]:
        return commands.complete(self, text)

    def _load_completions(self) -> None:
        """Run ids and active silences for completion, read when the command line opens
        (the Runs and Alerts views may never have been shown)."""
        from ..storage import queries as Q

        now = fmt.utc_naive(self.clock())

        def read(con: D.Con) -> tuple[list[str], list[dict[str, Any]]]:
            return (Q.runs(con)["run_id"].to_list(),
                    Q.silences(con, active_at=now).to_dicts())

        def got(found: tuple[list[str], list[dict[str, Any]]]) -> None:
            self._run_ids, self._silence_list = found

        self.load(read, got, group="complete")

    def known_runs(self) -> list[str]:
        data = cast(Runs, self.view("view-runs")).data
        shown = data.runs["run_id"].to_list() if data is not None else []
        return list(dict.fromkeys([*shown, *self._run_ids]))

    def alert_names(self) -> list[str]:
        alerts = self.common.alerts if self.common is not None else pl.DataFrame()
        return sorted(set(alerts["alertname"].to_list())) if alerts.height else []

    def silence_ids(self) -> list[str]:
        return [str(s["silence_id"]) for s in self.active_silences()]

    def active_silences(self) -> list[dict[str, Any]]:
        alerts = cast(Alerts, self.view("view-alerts")).data
        if alerts is not None and alerts.silences.height:
            return alerts.silences.to_dicts()
        return self._silence_list

    def theme_names(self) -> list[str]:
        return [*[t for t in THEMES if t in self.available_themes],
                *sorted(set(self.available_themes) - set(THEMES))]

    def find_alert(self, name: str) -> dict[str, Any]:
        alerts = self.common.alerts if self.common is not None else pl.DataFrame()
        if alerts.is_empty():
            raise ValueError("no alerts to silence")
        hits = alerts.filter((pl.col("alertname") == name)
                             | pl.col("fingerprint").str.starts_with(name)).to_dicts()
        if not hits:
            raise ValueError(f"no alert {name!r}; alerts: "
                             f"{', '.join(sorted(set(alerts['alertname'].to_list())))}")
        return hits[0]

    # --- silences ---------------------------------------------------------------------------------

    def ask_silence(self, alert: dict[str, Any]) -> None:
        def done(answer: tuple[float, str] | None) -> None:
            if answer is not None:
                self.silence(alert, *answer)

        self.push_screen(SilenceScreen(alert), done)

    def silence(self, alert: Mapping[str, Any], seconds: float, comment: str) -> None:
        """Mute the alert's exact label set for `seconds`, through the silence writer."""
        from ..analysis.alerts.engine import Silence
        from ..analysis.alerts.alert_rules import Matcher

        if self.silence_writer is None:
            self.notify("silences cannot be saved here: this database is open read-only. "
                        "Silence from the process that writes it (`tractatus-watch live`).",
                        severity="error", timeout=8)
            return
        labels = D.labels_of(alert.get("labels"))
        labels["alertname"] = str(alert["alertname"])
        now = self.clock()
        silence = Silence(
            silence_id=f"tui-{int(now * 1000):x}-{str(alert['fingerprint'])[:8]}",
            matchers=tuple(Matcher(k, v) for k, v in sorted(labels.items())),
            starts_at=now, ends_at=now + seconds, comment=comment,
            created_by=_user())
        writer = self.silence_writer

        def saved(_: Any) -> None:
            self.notify(f"silenced {labels['alertname']} for {fmt.ago(seconds)}", timeout=4)
            self.refresh_view()

        self.load(lambda _con: writer(silence), saved, group="silence")

    def ask_expire(self, silence: Mapping[str, Any]) -> None:
        """The Alerts view's expire key: confirm, then expire."""
        sid = str(silence["silence_id"])

        def done(yes: bool | None) -> None:
            if yes:
                self.expire_silence(sid)

        self.push_screen(ConfirmScreen(
            f"Expire silence {sid}?",
            f"{_matchers_text(silence.get('matchers'))} · {silence.get('comment') or ''}",
            "the alerts it mutes notify again from the next evaluation"), done)

    def expire_silence(self, silence_id: str) -> None:
        """End a silence now (ends_at = now) through the silence store; `silence_id` may be
        the start of an id when that names one active silence. Raises ValueError."""
        if self.silence_expirer is None:
            raise ValueError("silences cannot be changed here: this database is open "
                             "read-only. Expire from the process that writes it "
                             "(`tractatus-watch live`).")
        known = self.silence_ids()
        if known and silence_id not in known:
            hits = [s for s in known if s.startswith(silence_id)]
            if len(hits) != 1:
                raise ValueError(f"{'no' if not hits else 'more than one'} active silence "
                                 f"{silence_id!r}; active: {', '.join(known[:6])}")
            silence_id = hits[0]
        expirer, now = self.silence_expirer, self.clock()

        def saved(found: bool) -> None:
            if not found:
                self.notify(f"no active silence {silence_id!r}", severity="error")
                return
            self._silence_list = [s for s in self._silence_list
                                  if s.get("silence_id") != silence_id]
            self.notify(f"expired silence {silence_id}", timeout=4)
            # The store's version counts silence rows; an ended one is the same row.
            self.refresher.forget_shown()
            self.refresh_view()

        self.load(lambda _con: expirer(silence_id, now), saved, group="silence")

    # --- export and screenshot --------------------------------------------------------------------

    def _stamp(self) -> str:
        return datetime.fromtimestamp(self.clock(), tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    def action_export(self, file_format: str = "csv", path: str | None = None) -> None:
        view = self.current_view
        frame = view.export_frame()
        if frame is None:
            self.notify("nothing to export yet", severity="warning")
            return
        run = self.scope.run_id or "none"
        out = Path(path).expanduser() if path else self.export_dir / (
            f"tractatus-watch-{view.TITLE.lower()}-{_safe(run)}-{self._stamp()}.{file_format}")

        def write(_con: D.Con) -> Path:
            write_frame(frame, out, file_format)
            return out

        self.load(write, lambda p: self.notify(f"exported {frame.height:,} rows to {p}",
                                               timeout=6), group="export")

    def action_screenshot(self, filename: str | None = None, path: str | None = None) -> None:
        name = filename or f"tractatus-watch-{self.current_view.TITLE.lower()}-{self._stamp()}.svg"
        path = self.save_screenshot(name, path=path or str(self.export_dir))
        self.notify(f"screenshot saved to {path}", timeout=6)


def freeze_heap() -> None:
    """Move the objects alive now (widgets, styles, caches: ~150k) out of the collector's
    sight. A full collection walks every tracked object and stalled the UI for 40-140 ms each
    time it ran; the long-lived app state never becomes garbage anyway."""
    gc.freeze()


def _as_empty_state(given: EmptyState | str | None) -> EmptyState:
    if callable(given):
        return given
    text = given or NO_DATA
    return lambda: text


def _matchers_text(raw: Any) -> str:
    import json

    try:
        return " ".join(json.loads(raw)) if isinstance(raw, str) else " ".join(raw or [])
    except (ValueError, TypeError):
        return str(raw)


def binding_sections() -> list[tuple[str, list[Binding]]]:
    """Every binding of the dashboard, by where it works (the help lists them so)."""
    def of(items: Sequence[BindingType]) -> list[Binding]:
        return [b for b in items if isinstance(b, Binding)]

    mine = of(Dashboard.BINDINGS)
    sections = [("views", [b for b in mine if b.action.startswith("view(")]),
                ("everywhere", [b for b in mine if not b.action.startswith("view(")])]
    sections += [(f"{v.KEY} {v.TITLE}", of(v.BINDINGS)) for v in VIEWS]
    sections += [("tables", of(Table.BINDINGS)), ("prompt", of(Prompt.BINDINGS)),
                 ("help, confirm and silence screens",
                  of(HelpScreen.BINDINGS) + of(ConfirmScreen.BINDINGS)
                  + of(SilenceScreen.BINDINGS))]
    return sections


def binding_ids() -> list[str]:
    """Every binding id a keymap may name."""
    return [b.id for _, bindings in binding_sections() for b in bindings if b.id]


def load_keymap(path: Path | None = None) -> K.Keymap:
    return K.load(path or K.default_path(), binding_ids())


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "tui"


def write_frame(frame: pl.DataFrame, out: Path, file_format: str) -> None:
    """CSV (lists joined with commas) or Parquet (zstd), written whole, 0600, or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out, force=True) as fh:
        if file_format == "parquet":
            frame.write_parquet(fh, compression="zstd")
        else:
            frame.with_columns(
                [pl.col(n).cast(pl.List(pl.String)).list.join(",")
                 for n, t in frame.schema.items() if isinstance(t, pl.List)]).write_csv(fh)


def run_dashboard(store_or_path: Store | str | Path, *, run_id: str | None = None,
                  baseline_run: str | None = None, live_writer: Any = None,
                  source_health: HealthProvider | None = None,
                  silence_writer: SilenceWriter | None = None,
                  silence_expirer: SilenceExpirer | None = None, interval: float | None = None,
                  title: str = "tractatus-watch", view: str = "overview",
                  empty_state: EmptyState | str | None = None,
                  log_prints: bool = False) -> int:
    """Run the dashboard until the user quits; returns its exit code (0: q, ctrl+c, :quit).

    A path is opened read-only (history; raises StoreLocked when another process holds it). In
    `live`/`demo` pass the writer's own Store and its Writer: the app reads through
    `store.cursor()` in its worker threads and never opens the file a second time. When the
    training ends the dashboard stays on the final state until the user quits. The user's
    keymap and `:` history are read from their XDG places; keymap warnings are printed on
    stderr too (seen again after the dashboard closes).
    """
    keymap = load_keymap()
    for warning in keymap.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    owned = not isinstance(store_or_path, Store)
    store = store_or_path if isinstance(store_or_path, Store) \
        else Store.open(store_or_path, read_only=True)
    try:
        app = Dashboard(store, run_id=run_id, baseline_run=baseline_run,
                        live_writer=live_writer, source_health=source_health,
                        silence_writer=silence_writer, silence_expirer=silence_expirer,
                        interval=interval, title=title, view=view, empty_state=empty_state,
                        keymap=keymap, history=History(default_history_path()),
                        log_prints=log_prints)
        app.run()
        return app.return_code or 0
    finally:
        if owned:
            store.close()
