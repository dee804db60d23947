"""The dashboard app: views, the refresh loop, keys, the status line.

Refresh loop: one thread worker fetches the common state (freshness, alerts) and the current
view's data through its own cursor, then posts a message; the main thread renders it and only
then arms the timer for the next refresh, so fetches never overlap and nothing blocks the UI.
Work that scans raw tables (build_report, latency percentiles) runs in a second, throttled lane
so it never delays the charts. The app reads through storage queries only; in `live` it shares
the writer's Store (DuckDB allows one process per file) and reads through `store.cursor()`.
"""

from __future__ import annotations

import gc
import getpass
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Final, cast

import polars as pl
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.timer import Timer
from textual.widgets import ContentSwitcher, Footer, Input

from ..storage.store import Store
from . import data as D
from . import fmt
from .health import HealthProvider, SourceHealth, as_health
from .screens import HelpScreen, SilenceScreen
from .views import NO_DATA, VIEWS, Overview, Runs, View
from .widgets import TextLine

INTERVALS: Final = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
THEMES: Final = ("textual-dark", "textual-light", "nord", "gruvbox", "tokyo-night", "dracula",
                 "monokai", "solarized-light")
# While data flows, slow-lane work reruns at most every SLOW_FACTOR times its own duration, so
# a 2 s report over 10M rows takes at most a fifth of a core and a 20 ms one follows every poll.
SLOW_FACTOR: Final = 5.0

# Called with the silence to store; raises with a one-line message when it cannot.
SilenceWriter = Callable[[Any], None]

COMMANDS_HELP: Final = ("run ID|latest · baseline ID|none · compare ID|none · "
                        "silence ALERT DURATION [COMMENT] · interval SECONDS · theme NAME · "
                        "export [csv|parquet] [PATH] · view N · quit")


@dataclass(frozen=True)
class Scope:
    """What is shown: a run (the latest while following) and its baseline run."""

    run_id: str | None = None
    baseline_run: str | None = None
    follow_latest: bool = True


class _Unchanged:
    """The view's parameters and the data are as last fetched: nothing to render."""


UNCHANGED: Final = _Unchanged()


class Fetched(Message):
    def __init__(self, token: int, view_id: str, key: tuple[Hashable, int, str | None],
                 common: D.Common | None, data: Any, error: BaseException | None,
                 seconds: float) -> None:
        super().__init__()
        self.token, self.view_id, self.key = token, view_id, key
        self.common, self.data, self.error, self.seconds = common, data, error, seconds


class SlowFetched(Message):
    def __init__(self, token: int, view_id: str, key: Hashable, data: Any,
                 error: BaseException | None, seconds: float) -> None:
        super().__init__()
        self.token, self.view_id, self.key = token, view_id, key
        self.data, self.error, self.seconds = data, error, seconds


class Loaded(Message):
    def __init__(self, callback: Callable[[Any], None], result: Any,
                 error: BaseException | None) -> None:
        super().__init__()
        self.callback, self.result, self.error = callback, result, error


class Dashboard(App[None]):
    CSS_PATH = "dashboard.tcss"
    TITLE = "tractatus-watch"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        *[Binding(v.KEY, f"view({i})", v.TITLE, show=False) for i, v in enumerate(VIEWS)],
        Binding("question_mark", "help", "Help"),
        Binding("slash", "filter", "Filter"),
        Binding("colon", "command", "Cmd"),
        Binding("space", "pause", "Pause"),
        Binding("plus", "slower", "+int", show=False),
        Binding("minus", "faster", "-int", show=False),
        Binding("e", "export", "Export"),
        Binding("s", "screenshot", "SVG"),
        Binding("t", "theme", "Theme", show=False),
        Binding("r", "refresh", "Refresh", show=False),
        Binding("escape", "close_prompt", "Close", show=False),
        Binding("q", "quit", "Quit"),
    ]
    HELP: ClassVar[dict[str, str]] = {
        "help": "this help", "filter": "filter the current view", "pause": "pause/resume refresh",
        "command": f"command line: {COMMANDS_HELP}", "slower": "refresh less often",
        "faster": "refresh more often", "export": "export the current view (CSV; Parquet "
        "with :export parquet)", "screenshot": "save an SVG screenshot", "theme": "next theme",
        "refresh": "refresh now", "close_prompt": "close the filter/command line",
        "quit": "quit",
    }

    def __init__(self, store: Store, *, run_id: str | None = None,
                 baseline_run: str | None = None, live_writer: Any = None,
                 source_health: HealthProvider | None = None,
                 silence_writer: SilenceWriter | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.time, export_dir: Path | None = None,
                 title: str = "tractatus-watch", view: str = "overview") -> None:
        super().__init__()
        self.store = store
        self.title = title
        self.live = live_writer is not None or source_health is not None
        self.live_writer = live_writer
        self.source_health = source_health
        self.silence_writer = silence_writer
        self.clock = clock
        self.export_dir = export_dir or Path.cwd()
        self.scope = Scope(run_id, baseline_run, follow_latest=run_id is None)
        self.interval = interval if interval is not None else (1.0 if self.live else 5.0)
        self.paused = False
        self.bells = 0              # counted so tests can see the bell of critical alerts
        self.refreshes = 0          # completed refreshes (tests wait on this)
        self.slow_done = 0          # completed slow-lane fetches
        self.last_refresh_s = 0.0   # worker time of the last refresh (bench)
        self.last_show_s = 0.0      # main-thread time of the last view render (bench)
        self.common: D.Common | None = None
        self._token = 0
        self._scope_token = 0       # refreshes older than this were for another run
        self._busy = False
        self._again = False
        self._timer: Timer | None = None
        self._shown: dict[str, tuple[Hashable, int, str | None]] = {}
        self._slow_busy = False
        self._slow_shown: dict[str, Hashable] = {}
        self._slow_started: dict[str, tuple[Hashable, float, float]] = {}
        self._alert_states: dict[str, tuple[str, str, str | None, float | None]] | None = None
        self._prompt_mode = ""
        self._last_error = ""
        self._ingest: tuple[float, int] | None = None
        self._ingest_rate: float | None = None
        self._loads = 0             # one-off loads in flight
        self._latest: str | None = None  # the latest run, as last looked up
        self._switcher: ContentSwitcher | None = None
        # Every view exists from the start (they hold the state), but each is mounted the first
        # time it is shown: composing all seven would double the start-up time.
        self._views: dict[str, View] = {f"view-{v.TITLE.lower()}": v() for v in VIEWS}
        self._current_id = f"view-{VIEWS[view_index(view)].TITLE.lower()}"
        self._mounting = 0

    # --- layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield TextLine(id="topbar")
        with ContentSwitcher(initial=self._current_id, id="views"):
            yield self._views[self._current_id]
        yield TextLine(id="status")
        yield Input(id="prompt")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        # Kept by reference: while a modal screen is up, queries would search that screen.
        self._switcher = self.query_one("#views", ContentSwitcher)
        self._status = self.query_one("#status", TextLine)
        self._topbar = self.query_one("#topbar", TextLine)
        self._prompt = self.query_one("#prompt", Input)
        self._prompt.display = False
        self._update_tabs()
        self.update_status()
        self.current_view.focus_target().focus()
        self.refresh_view()

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
        text = Text()
        for view in VIEWS:
            style = "reverse bold" if self._current_id == f"view-{view.TITLE.lower()}" else ""
            text.append(" ")
            text.append(f"{view.KEY} {view.TITLE}", style=style)
        s = self.scope
        label = f"run {s.run_id or '–'}" + (f" vs {s.baseline_run}" if s.baseline_run else "")
        gap = self.size.width - text.cell_len - len(label) - 1
        text.append(" " * max(gap, 2))
        text.append(label + " ", style="bold")
        self._topbar.set(text)

    def on_resize(self) -> None:
        if self._switcher is not None:
            self._update_tabs()

    # --- the refresh loop --------------------------------------------------------------------------

    def refresh_view(self) -> None:
        """Fetch the current view now (or right after the fetch in flight: never two)."""
        if self._busy:
            self._again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._exit or self._switcher is None or not self.current_view.is_mounted:
            return  # starting, shutting down, or mounting the view (which refreshes when done)
        view = self.current_view
        self._busy = True
        self._token += 1
        key, fn = view.fetch()
        c = self.common
        self._fetch(self._token, view.id or "", key, fn, self.scope,
                    c.version if c else None, self._latest, self._shown.get(view.id or ""))

    @work(thread=True, group="refresh", exit_on_error=False)
    def _fetch(self, token: int, view_id: str, key: Hashable, fn: Callable[[D.Con, str], Any],
               scope: Scope, known_version: int | None, known_run: str | None,
               shown: tuple[Hashable, int, str | None] | None) -> None:
        started = time.perf_counter()
        common, data, error = None, None, None
        try:
            con = self.store.cursor()
            try:
                common = D.fetch_common(con, scope.run_id, follow_latest=scope.follow_latest,
                                        known_version=known_version, known_run=known_run,
                                        lake=self.store.is_lake)
                if common.run_id is not None:
                    if shown == (key, common.version, common.run_id):
                        data = UNCHANGED
                    else:
                        data = fn(con, common.run_id)
            finally:
                con.close()
        except Exception as exc:  # shown in the status line; the next refresh retries
            error = exc
        version = common.version if common else -1
        self.post_message(Fetched(token, view_id, (key, version, common.run_id if common else None),
                                  common, data, error, time.perf_counter() - started))

    def on_fetched(self, msg: Fetched) -> None:
        self._busy = False
        if self._exit:
            return
        self.last_refresh_s = msg.seconds
        if msg.error is not None:
            text = f"{type(msg.error).__name__}: {str(msg.error).splitlines()[0]}"
            if text != self._last_error:
                self.notify(text, title="refresh failed", severity="error")
            self._last_error = text
        elif msg.token > self._scope_token:
            self._last_error = ""
            assert msg.common is not None
            self._apply_common(msg.common)
            view = self.view(msg.view_id)
            if not view.is_mounted:
                pass  # cannot happen today: views are only fetched once mounted
            elif msg.common.run_id is None:
                view.show_no_run(NO_DATA)
            elif msg.data is not UNCHANGED:
                started = time.perf_counter()
                view.show(msg.data)
                self.last_show_s = time.perf_counter() - started
                self._shown[msg.view_id] = msg.key
            if msg.common.run_id is not None and msg.view_id == self.current_view.id:
                self._maybe_slow(view, msg.common.run_id, msg.common.version)
        else:
            self._again = True  # fetched for a run that is no longer shown
        if not self.refreshes:
            freeze_heap()
        self.refreshes += 1
        self.update_status()
        if self._again:
            self._again = False
            self.refresh_view()
        elif not self.paused:
            self._timer = self.set_timer(self.interval, self.refresh_view)

    def _apply_common(self, c: D.Common) -> None:
        if self.scope.follow_latest:
            self._latest = c.run_id
            if c.run_id != self.scope.run_id:
                self.scope = replace(self.scope, run_id=c.run_id)
                self._update_tabs()
        self.common = c
        states = {r["fingerprint"]: (r["state"], r["alertname"], r["severity"], r["value"])
                  for r in c.alerts.iter_rows(named=True)}
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
        if self.overview.is_mounted:
            self.overview.refresh_kpis()

    def _transition(self, name: str, old: str, new: str, severity: str | None,
                    value: float | None) -> None:
        shown = f"{name}: {old} → {new}" + (f" (value {value:.4g})" if value is not None else "")
        level = {"firing": "error" if severity == "critical" else "warning"}.get(new,
                                                                                "information")
        self.notify(shown, title=f"alert{f' [{severity}]' if severity else ''}",
                    severity=level, timeout=8)  # type: ignore[arg-type]
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
        return not (self._busy or self._again or self._slow_busy or self._loads
                    or self._mounting or self.overview.drawing)

    def alert_counts(self) -> tuple[int, int]:
        states = [s[0] for s in (self._alert_states or {}).values()]
        return states.count("firing"), states.count("pending")

    # --- the slow lane ------------------------------------------------------------------------------

    def _maybe_slow(self, view: View, run_id: str, version: int) -> None:
        request = view.slow(run_id)
        if request is None or self._slow_busy:
            return
        key, fn = request
        vid = view.id or ""
        full_key = (key, version)
        if self._slow_shown.get(vid) == full_key:
            return
        started = self._slow_started.get(vid)
        if started is not None and started[0] == key:
            # Same question, newer data: recompute, but not continuously while data flows.
            _, at, seconds = started
            if time.monotonic() - at < max(self.interval, SLOW_FACTOR * seconds):
                return
        self._slow_busy = True
        self._slow_started[vid] = (key, time.monotonic(), started[2] if started else 0.0)
        self._slow_fetch(self._token, vid, full_key, fn, run_id)

    @work(thread=True, group="slow", exit_on_error=False)
    def _slow_fetch(self, token: int, view_id: str, key: Hashable,
                    fn: Callable[[D.Con, str], Any], run_id: str) -> None:
        started = time.perf_counter()
        data, error = None, None
        try:
            con = self.store.cursor()
            try:
                data = fn(con, run_id)
            finally:
                con.close()
        except Exception as exc:
            error = exc
        self.post_message(SlowFetched(token, view_id, key, data, error,
                                      time.perf_counter() - started))

    def on_slow_fetched(self, msg: SlowFetched) -> None:
        self._slow_busy = False
        if self._exit:
            return
        key, at, _ = self._slow_started.get(msg.view_id, (None, 0.0, 0.0))
        self._slow_started[msg.view_id] = (key, at, msg.seconds)
        if msg.error is not None:
            self.notify(f"{type(msg.error).__name__}: {str(msg.error).splitlines()[0]}",
                        title="background query failed", severity="error")
        elif msg.token > self._scope_token:
            view = self.view(msg.view_id)
            view.show_slow(msg.data)
            self._slow_shown[msg.view_id] = msg.key
        self.slow_done += 1
        if self.common is not None and self.common.run_id is not None:
            self._maybe_slow(self.current_view, self.common.run_id, self.common.version)

    # --- one-off loads (detail panes, exports, silences) -------------------------------------------

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

    # --- scope ------------------------------------------------------------------------------------

    def _set_scope(self, scope: Scope) -> None:
        self.scope = scope
        self._scope_token = self._token
        self._latest = None
        self._shown.clear()
        self._slow_shown.clear()
        self._update_tabs()
        self.overview.report_kpis = None  # the KPIs of the old run
        if self.overview.is_mounted:
            self.overview.refresh_kpis()
        self.refresh_view()

    def choose_run(self, run_id: str | None) -> None:
        if run_id is None:
            self._set_scope(replace(self.scope, follow_latest=True))
        else:
            self._set_scope(replace(self.scope, run_id=run_id, follow_latest=False))
        self.notify(f"showing run {run_id or 'latest'}", timeout=3)

    def choose_baseline(self, run_id: str | None) -> None:
        self._set_scope(replace(self.scope, baseline_run=run_id))
        self.notify(f"baseline: {run_id or 'the ungoverned arm of the same run'}", timeout=3)

    def show_events(self, **filters: str | None) -> None:
        events = self.view("view-events")
        text = " ".join(f"{'rule' if k == 'rule_id' else k}={v}" for k, v in filters.items() if v)
        self.switch_view(len(VIEWS) - 1)
        events.set_filter(text)

    def switch_view(self, index: int) -> None:
        view = self._views[f"view-{VIEWS[index].TITLE.lower()}"]
        self._current_id = view.id or ""
        self._update_tabs()
        if view.is_attached:
            self._show_view(view)
        else:
            self._mounting += 1
            self.run_worker(self._mount_view(view), group="mount")

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

    # --- status line --------------------------------------------------------------------------------

    def health(self) -> list[SourceHealth]:
        if self.source_health is None:
            return []
        try:
            return [as_health(h) for h in self.source_health()]
        except Exception as exc:  # a broken provider must not break the dashboard
            return [SourceHealth(name="sources", state="failed", detail=str(exc))]

    def update_status(self) -> None:
        """Sources (state, missed, ingest rate, lag, last update), data freshness, refresh."""
        now = self.clock()
        parts: list[Text] = []
        if self.paused:
            parts.append(Text(" PAUSED ", style="reverse bold yellow"))
        sources = self.health()
        for h in sources:
            icon, style = {"connected": ("●", "green"), "reconnecting": ("◐", "yellow"),
                           "starting": ("○", "yellow"), "stopped": ("■", "dim")}.get(
                h.state, ("✖", "bold red"))
            part = Text.assemble((f"{icon} ", style), f"{_short(h.name)} {h.state}")
            if h.missed:
                part.append(f" missed {h.missed:,}", style="yellow")
            if h.rate is not None:
                part.append(f" {h.rate:,.0f}/s")
            if h.lag_s is not None:
                part.append(f" lag {fmt.ago(h.lag_s)}")
            if h.last_update is not None:
                part.append(f" last {fmt.clock(h.last_update)}", style="dim")
            if h.detail:
                part.append(f" {h.detail[:40]}", style="red")
            parts.append(part)
        if self.live_writer is not None and not sources:
            rows = sum(getattr(self.live_writer.stats, "committed_rows", {}).values())
            if self._ingest is not None and now > self._ingest[0]:
                self._ingest_rate = (rows - self._ingest[1]) / (now - self._ingest[0])
            self._ingest = (now, rows)
            part = Text(f"ingest {fmt.num(rows)} rows")
            if self._ingest_rate is not None:
                part.append(f" {self._ingest_rate:,.0f}/s")
            parts.append(part)
        c = self.common
        if not self.live:
            parts.append(Text(self.store.target.short
                              + (" read-only" if self.store.read_only else "")))
            if c is not None and c.last_ts is not None:
                parts.append(Text(f"data to {fmt.clock(c.last_ts, True)[5:]}"))
        elif not sources and c is not None and c.last_ts is not None:
            parts.append(Text(f"lag {fmt.ago(now - (fmt.epoch(c.last_ts) or now))}"))
        refresh = f"updated {fmt.clock(now)} " if self.refreshes else ""
        parts.append(Text(f"{refresh}every {self.interval:g}s", style="dim"))
        if self._last_error:
            parts.append(Text(self._last_error[:60], style="bold red"))
        self._status.set(Text(" │ ", style="dim").join(parts))

    # --- actions ------------------------------------------------------------------------------------

    def action_view(self, index: int) -> None:
        self.switch_view(index)

    def action_refresh(self) -> None:
        self.refresh_view()

    def action_pause(self) -> None:
        self.paused = not self.paused
        if self.paused and self._timer is not None:
            self._timer.stop()
            self._timer = None
        elif not self.paused:
            self.refresh_view()
        self.update_status()

    def _step_interval(self, step: int) -> None:
        i = min(range(len(INTERVALS)), key=lambda j: abs(INTERVALS[j] - self.interval))
        self.set_interval_s(INTERVALS[min(max(i + step, 0), len(INTERVALS) - 1)])

    def set_interval_s(self, seconds: float) -> None:
        self.interval = seconds
        if self._timer is not None:  # re-arm with the new interval
            self._timer.stop()
            self._timer = self.set_timer(self.interval, self.refresh_view)
        self.update_status()

    def action_slower(self) -> None:
        self._step_interval(1)

    def action_faster(self) -> None:
        self._step_interval(-1)

    def action_theme(self, name: str | None = None) -> None:
        names = [t for t in THEMES if t in self.available_themes]
        if name is None:
            name = names[(names.index(self.theme) + 1) % len(names)] if self.theme in names \
                else names[0]
        if name not in self.available_themes:
            raise ValueError(f"no theme {name!r}; themes: {', '.join(sorted(self.available_themes))}")
        self.theme = name
        self.notify(f"theme {name}", timeout=2)

    def action_help(self) -> None:
        sections: list[tuple[str, list[tuple[str, str]]]] = [
            ("views", [(v.KEY, v.TITLE) for v in VIEWS]),
            ("everywhere", [(b.key, self.HELP.get(b.action, b.description))
                            for b in self._bindings_of(self.BINDINGS)
                            if not b.action.startswith("view(")]),
        ]
        for v in VIEWS:
            keys = [(b.key, b.description) for b in self._bindings_of(v.BINDINGS)]
            if v.FILTER_HELP:
                keys.append(("slash", f"filter: {v.FILTER_HELP}"))
            if keys:
                sections.append((f"{v.KEY} {v.TITLE}", keys))
        self.push_screen(HelpScreen(sections))

    @staticmethod
    def _bindings_of(items: Sequence[BindingType]) -> list[Binding]:
        return [b for b in items if isinstance(b, Binding)]

    # --- the prompt: / filter and : commands --------------------------------------------------------

    def action_filter(self) -> None:
        view = self.current_view
        if not view.FILTER_HELP:
            self.notify(f"{view.TITLE} has no filter; try 2 Rules, 5 Agents or 7 Events",
                        timeout=3)
            return
        self._open_prompt("/", f"/ filter {view.TITLE}: {view.FILTER_HELP}", view.filter_text)

    def action_command(self) -> None:
        self._open_prompt(":", f": {COMMANDS_HELP}", "")

    def _open_prompt(self, mode: str, placeholder: str, value: str) -> None:
        prompt = self._prompt
        self._prompt_mode = mode
        prompt.placeholder = placeholder
        prompt.value = value
        prompt.display = True
        prompt.focus()

    def action_close_prompt(self) -> None:
        prompt = self._prompt
        if prompt.display:
            prompt.display = False
            self.current_view.focus_target().focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "prompt":
            return
        event.stop()
        text = event.value.strip()
        try:
            if self._prompt_mode == "/":
                self.current_view.set_filter(text)
            else:
                self.run_command(text)
        except ValueError as exc:
            self.notify(str(exc), severity="error")
            return
        self.action_close_prompt()

    def run_command(self, text: str) -> None:
        """`:` commands; raises ValueError with a one-line message."""
        words = text.split()
        if not words:
            return
        cmd, args = words[0].lower(), words[1:]
        known = self._known_runs()
        if cmd == "run":
            if not args:
                raise ValueError("usage: run ID (or: run latest)")
            run = None if args[0] == "latest" else self._pick(args[0], known)
            self.choose_run(run)
        elif cmd == "baseline":
            if not args:
                raise ValueError("usage: baseline ID (or: baseline none)")
            self.choose_baseline(None if args[0] == "none" else self._pick(args[0], known))
        elif cmd == "compare":
            if not args:
                raise ValueError("usage: compare ID (or: compare none)")
            other = None if args[0] == "none" else self._pick(args[0], known)
            self.switch_view(3)
            cast(Runs, self.view("view-runs")).compare(other)
        elif cmd == "silence":
            if len(args) < 2:
                raise ValueError("usage: silence ALERT DURATION [COMMENT]")
            alert = self._find_alert(args[0])
            self.silence(alert, fmt.duration(args[1]), " ".join(args[2:]))
        elif cmd == "interval":
            try:
                seconds = float(args[0].rstrip("s"))
            except (IndexError, ValueError):
                raise ValueError("usage: interval SECONDS (e.g. interval 0.5)") from None
            if not 0.1 <= seconds <= 3600:
                raise ValueError("interval must be between 0.1 and 3600 seconds")
            self.set_interval_s(seconds)
        elif cmd == "theme":
            self.action_theme(args[0] if args else None)
        elif cmd == "export":
            fmt_ = args[0] if args else "csv"
            if fmt_ not in ("csv", "parquet"):
                raise ValueError("usage: export [csv|parquet] [PATH]")
            self.action_export(fmt_, args[1] if len(args) > 1 else None)
        elif cmd == "view":
            names = {v.TITLE.lower(): i for i, v in enumerate(VIEWS)}
            names.update({v.KEY: i for i, v in enumerate(VIEWS)})
            if not args or args[0].lower() not in names:
                raise ValueError(f"usage: view N|NAME ({', '.join(v.TITLE for v in VIEWS)})")
            self.switch_view(names[args[0].lower()])
        elif cmd in ("q", "quit"):
            self.exit()
        else:
            raise ValueError(f"unknown command {cmd!r}: {COMMANDS_HELP}")

    def _known_runs(self) -> list[str]:
        data = cast(Runs, self.view("view-runs")).data
        return data.runs["run_id"].to_list() if data is not None else []

    def _pick(self, run: str, known: list[str]) -> str:
        if known and run not in known:
            raise ValueError(f"no run {run!r}; runs: {', '.join(known[:8])}")
        return run

    def _find_alert(self, name: str) -> dict[str, Any]:
        alerts = self.common.alerts if self.common is not None else pl.DataFrame()
        if alerts.is_empty():
            raise ValueError("no alerts to silence")
        hits = alerts.filter((pl.col("alertname") == name)
                             | pl.col("fingerprint").str.starts_with(name)).to_dicts()
        if not hits:
            raise ValueError(f"no alert {name!r}; alerts: "
                             f"{', '.join(sorted(set(alerts['alertname'].to_list())))}")
        return hits[0]

    # --- silences -----------------------------------------------------------------------------------

    def ask_silence(self, alert: dict[str, Any]) -> None:
        def done(answer: tuple[float, str] | None) -> None:
            if answer is not None:
                self.silence(alert, *answer)

        self.push_screen(SilenceScreen(alert), done)

    def silence(self, alert: Mapping[str, Any], seconds: float, comment: str) -> None:
        """Mute the alert's exact label set for `seconds`, through the silence writer."""
        from ..governance.alerts.engine import Silence
        from ..governance.alerts.rules import Matcher

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

    # --- export and screenshot ----------------------------------------------------------------------

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

    def action_screenshot(self) -> None:
        name = f"tractatus-watch-{self.current_view.TITLE.lower()}-{self._stamp()}.svg"
        path = self.save_screenshot(name, path=str(self.export_dir))
        self.notify(f"screenshot saved to {path}", timeout=6)


def freeze_heap() -> None:
    """Move the objects alive now (widgets, styles, caches: ~150k) out of the collector's
    sight. A full collection walks every tracked object and stalled the UI for 40-140 ms each
    time it ran; the long-lived app state never becomes garbage anyway."""
    gc.freeze()


def view_index(name: str) -> int:
    """A view by its key ("2") or name ("rules")."""
    for i, v in enumerate(VIEWS):
        if name.lower() in (v.KEY, v.TITLE.lower()):
            return i
    raise ValueError(f"no view {name!r}; views: {', '.join(v.TITLE.lower() for v in VIEWS)}")


def _short(name: str, width: int = 32) -> str:
    """A source name for the status line: the end of a long path or URL matters most."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "tui"


def write_frame(frame: pl.DataFrame, out: Path, file_format: str) -> None:
    """CSV (lists joined with commas) or Parquet (zstd), written to a temp name and renamed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        if file_format == "parquet":
            frame.write_parquet(tmp, compression="zstd")
        else:
            flat = frame.with_columns(
                [pl.col(n).cast(pl.List(pl.String)).list.join(",")
                 for n, t in frame.schema.items() if isinstance(t, pl.List)])
            flat.write_csv(tmp)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_dashboard(store_or_path: Store | str | Path, *, run_id: str | None = None,
                  baseline_run: str | None = None, live_writer: Any = None,
                  source_health: HealthProvider | None = None,
                  silence_writer: SilenceWriter | None = None, interval: float | None = None,
                  title: str = "tractatus-watch", view: str = "overview") -> None:
    """Run the dashboard until the user quits.

    A path is opened read-only (history; raises StoreLocked when another process holds it). In
    `live`/`demo` pass the writer's own Store and its Writer: the app reads through
    `store.cursor()` in its worker threads and never opens the file a second time. When the
    training ends the dashboard stays on the final state until the user quits.
    """
    owned = not isinstance(store_or_path, Store)
    store = Store.open(store_or_path, read_only=True) if owned else store_or_path  # type: ignore[arg-type]
    try:
        Dashboard(store, run_id=run_id, baseline_run=baseline_run, live_writer=live_writer,
                  source_health=source_health, silence_writer=silence_writer,
                  interval=interval, title=title, view=view).run()
    finally:
        if owned:
            store.close()
