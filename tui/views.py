"""The seven views. Each one hands the app a fetch closure over its current parameters (run in
a worker thread), then renders what came back on the main thread. Tables hold aggregates or one
page of raw events: nothing that grows with the data is ever handed to a widget."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Label, Sparkline, Static

from . import data as D
from . import fmt
from .table import Table
from .widgets import Chart, Empty, TextLine, fill_table, right

if TYPE_CHECKING:
    from .app import Dashboard

# (cursor, run id) -> data; called in a worker thread.
Fetch = Callable[[D.Con, str], Any]

LOADING = "loading …"
NO_DATA = ("no data yet: is the trainer using the hooks file? Start a collector "
           "(`tractatus-watch live --spool DIR` or `--agl URL`) or run `tractatus-watch demo`.")


class View(Vertical, can_focus=True):
    KEY: ClassVar[str] = ""
    TITLE: ClassVar[str] = ""
    FILTER_HELP: ClassVar[str] = ""
    # Keys are listed in the footer while the view has focus, and all of them in `?` help.
    BINDINGS: ClassVar[list[BindingType]] = []

    def __init__(self) -> None:
        super().__init__(id=f"view-{self.TITLE.lower()}")
        self.filter_text = ""

    @property
    def dash(self) -> Dashboard:
        return self.app  # type: ignore[return-value]

    def fetch(self) -> tuple[Hashable, Fetch]:
        """A key for the parameters (unchanged key + unchanged data = nothing to fetch) and
        the closure that fetches them."""
        raise NotImplementedError

    def show(self, data: Any) -> None:
        raise NotImplementedError

    def slow(self, run_id: str) -> tuple[Hashable, Fetch] | None:
        """Work too slow for every refresh (raw-table scans): run in its own lane."""
        return None

    def show_slow(self, data: Any) -> None:
        pass

    def export_frame(self) -> pl.DataFrame | None:
        return None

    def set_filter(self, text: str) -> None:
        """Apply `/` input; raise ValueError with a one-line message when it is not valid."""
        self.filter_text = text.strip()

    def focus_target(self) -> Widget:
        tables = list(self.query(Table))
        return tables[0] if tables else self

    def show_no_run(self, message: str) -> None:
        for empty in self.query(".empty-note").results(Empty):
            empty.update(message)
            empty.display = True

    def note(self, widget_id: str, message: str | None) -> None:
        """Show `message` in an Empty note (None hides it)."""
        empty = self.query_one(f"#{widget_id}", Empty)
        empty.display = message is not None
        if message is not None:
            empty.update(message)


# --- 1 overview -------------------------------------------------------------------------------------

class Overview(View):
    KEY, TITLE = "1", "Overview"
    # Below this terminal height the four charts become two (rates together, rewards with the
    # gap in the subtitle) so 80x24 keeps readable plots.
    FULL_HEIGHT: ClassVar[int] = 34

    def __init__(self) -> None:
        super().__init__()
        self.data: D.OverviewData | None = None
        self.report_kpis: D.Kpis | None = None
        self._rule_keys: tuple[tuple[str, str], ...] = ()
        self._compact: bool | None = None
        self._draw_gen = 0
        self.drawing = False  # charts still to draw, one per screen update
        self._kpi_shown: Text | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="kpis")
        yield Empty(LOADING, id="overview-empty", classes="empty-note")
        with Horizontal(id="charts-top", classes="charts"):
            yield Chart("", id="chart-a")
            yield Chart("", id="chart-b")
        with Horizontal(id="charts-bottom", classes="charts"):
            yield Chart("", id="chart-c")
            yield Chart("", id="chart-d")
        yield VerticalScroll(id="rule-sparks")

    def fetch(self) -> tuple[Hashable, Fetch]:
        baseline = self.dash.scope.baseline_run
        return ("overview", baseline), lambda con, run: D.fetch_overview(con, run, baseline)

    def slow(self, run_id: str) -> tuple[Hashable, Fetch] | None:
        baseline = self.dash.scope.baseline_run
        return (("report", run_id, baseline),
                lambda con, run: D.kpis(D.fetch_report(con, run, baseline)))

    def on_mount(self) -> None:
        self.refresh_kpis()
        self._show_parts(False)

    def _show_parts(self, shown: bool) -> None:
        for widget_id in ("#charts-top", "#charts-bottom", "#rule-sparks"):
            self.query_one(widget_id).display = shown

    def show_no_run(self, message: str) -> None:
        super().show_no_run(message)
        self._show_parts(False)

    def on_resize(self) -> None:
        compact = self.app.size.height < self.FULL_HEIGHT
        if compact != self._compact and self.data is not None:
            self._draw_charts(self.data)

    def show(self, data: D.OverviewData) -> None:
        self.data = data
        empty = data.rounds.is_empty()
        self.note("overview-empty", NO_DATA if empty else None)
        self._show_parts(not empty)
        self.refresh_kpis()
        if empty:
            return
        self._draw_charts(data)
        self._show_rules(data.rules)

    def _draw_charts(self, data: D.OverviewData) -> None:
        compact = self._compact = self.app.size.height < self.FULL_HEIGHT
        self.query_one("#charts-bottom").display = not compact
        r = data.rounds
        x = r["round"].to_list()
        marks = [float(v) for v in data.alert_rounds]
        fired = f"{len(marks)} alert{'s' if len(marks) != 1 else ''} fired" if marks else ""
        coverage = (x, r["coverage"].fill_null(float("nan")).to_list(), "green", "coverage")
        blocked = (x, r["blocked_rate"].fill_null(float("nan")).to_list(), "red", "blocked")
        g = data.reward
        gx = g["round"].to_list()

        def line(col: str, style: str) -> tuple[list[Any], list[Any], str, str]:
            pts = [(a, b) for a, b in zip(gx, g[col].to_list()) if b is not None]
            return [p[0] for p in pts], [p[1] for p in pts], style, col

        gov, base, gap = line("governed_mean", "cyan"), line("baseline_mean", "yellow"), \
            line("gap", "magenta")
        last_gap = f"last gap {gap[1][-1]:+.3f}" if gap[1] else "no gap yet"
        a, b = self.query_one("#chart-a", Chart), self.query_one("#chart-b", Chart)
        c, d = self.query_one("#chart-c", Chart), self.query_one("#chart-d", Chart)
        rewards = [s for s in (gov, base) if s[0]]
        reward_title = "reward [cyan]watched arm[/] · [yellow]baseline[/]"
        plan: list[tuple[Chart, str, dict[str, Any]]]
        if compact:
            plan = [
                (a, "[green]coverage[/] · [red]blocked rate[/] per round",
                 dict(series=[coverage, blocked], vlines=marks, ylimits=(0.0, 1.0),
                      subtitle=fired)),
                (b, reward_title, dict(series=rewards, vlines=marks,
                                       subtitle=last_gap if g.height else "no rewards yet")),
            ]
        else:
            plan = [
                (a, "[green]coverage[/] per round",
                 dict(series=[coverage], vlines=marks, ylimits=(0.0, 1.0), subtitle=fired)),
                (b, "[red]blocked rate[/] per round",
                 dict(series=[blocked], vlines=marks, ylimits=(0.0, None))),
                (c, reward_title, dict(series=rewards, vlines=marks,
                                       subtitle="" if g.height else "no rewards yet")),
                (d, "[magenta]gap[/] (watched - baseline) per round",
                 dict(series=[gap] if gap[0] else [], vlines=marks, subtitle=last_gap)),
            ]
        self._draw_gen += 1
        self._draw_next(plan, self._draw_gen)

    def _draw_next(self, plan: list[tuple[Chart, str, dict[str, Any]]], gen: int) -> None:
        """Two charts (a row) per screen update: each canvas is drawn in Python while the
        screen paints, so all four in one frame stalled the UI about twice as long."""
        if gen != self._draw_gen or not plan:
            return  # newer data arrived: its own plan draws the charts
        for chart, title, kwargs in plan[:2]:
            chart.border_title = title
            chart.draw(**kwargs)
        self.drawing = len(plan) > 2
        if self.drawing:
            self.call_after_refresh(self._draw_next, plan[2:], gen)

    def _show_rules(self, rules: tuple[D.RuleTrend, ...]) -> None:
        box = self.query_one("#rule-sparks", VerticalScroll)
        keys = tuple((r.service, r.rule_id) for r in rules)
        if keys != self._rule_keys:
            # Mount rows only when the set of rules changes; later refreshes update them.
            self._rule_keys = keys
            box.remove_children()
            rows = [Horizontal(Label(f"{r.rule_id} · {r.service}", classes="spark-name"),
                               Sparkline([], classes="spark"),
                               TextLine("", classes="spark-rate"), classes="spark-row")
                    for r in rules]
            if not rows:
                rows = [Horizontal(Empty("no rule checks yet"), classes="spark-row")]
            box.mount_all(rows)
            self.call_after_refresh(self._fill_rules, rules)
        else:
            self._fill_rules(rules)

    def _fill_rules(self, rules: tuple[D.RuleTrend, ...]) -> None:
        for row, r in zip(self.query_one("#rule-sparks").query(".spark-row"), rules):
            spark = row.query(Sparkline)
            if spark:
                spark.first().data = list(r.rates) or [0.0]
                row.query_one(".spark-rate", TextLine).set(
                    f"{fmt.pct(r.blocks / r.checks if r.checks else None)} of "
                    f"{fmt.num(r.checks)}")

    def show_slow(self, data: D.Kpis | None) -> None:
        self.report_kpis = data
        self.refresh_kpis()

    def refresh_kpis(self) -> None:
        # Only when it changed: the strip wraps, so each update lays the screen out again.
        text = self.kpi_text()
        if text != self._kpi_shown:
            self._kpi_shown = text
            self.query_one("#kpis", Static).update(text)

    def kpi_text(self) -> Text:
        k = self.report_kpis
        alerts = self.dash.alert_counts()
        text = Text()

        def item(label: str, value: str, style: str = "bold") -> None:
            if text:
                text.append("  ")
            text.append(f"{label} ", style="dim")
            text.append(value, style=style)

        if k is None:
            item("coverage", "…")
            item("actions", "…")
        else:
            cov_style = "bold green" if k.coverage == 1.0 else "bold red"
            item("coverage", fmt.pct(k.coverage), cov_style)
            item("actions", fmt.num(k.actions))
            item("blocked", fmt.num(k.blocked))
            item("escaped", fmt.num(k.escaped), "bold red" if k.escaped else "bold")
            if k.baseline_escaped is not None:
                text.append(f" (baseline {fmt.num(k.baseline_escaped)})", style="dim")
            if k.gap is not None:
                rel = f" {fmt.pct(k.gap.relative, 1)}" if k.gap.relative is not None else ""
                item("gap", f"{fmt.dec(k.gap.absolute, 3, True)} "
                            f"[{fmt.dec(k.gap.lo, 3, True)}, {fmt.dec(k.gap.hi, 3, True)}]{rel}")
            else:
                item("gap", "– (needs rewards in both arms)", "dim")
        firing, pending = alerts
        item("alerts", f"{firing} firing" + (f", {pending} pending" if pending else ""),
             "bold red" if firing else "bold green")
        return text

    def export_frame(self) -> pl.DataFrame | None:
        if self.data is None:
            return None
        return self.data.rounds.join(self.data.reward, on="round", how="left")


# --- 2 rules ---------------------------------------------------------------------------------------

ARMS: tuple[str | None, ...] = (None, "governed", "ungoverned")


class Rules(View):
    KEY, TITLE = "2", "Rules"
    FILTER_HELP = "text matched against service and rule id"
    BINDINGS = [
        Binding("enter", "drill", "Decisions"),
        Binding("a", "arm", "Arm"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.arm: str | None = None
        self.data: D.RulesData | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="rules-head", classes="view-head")
        yield Empty(LOADING, id="rules-empty", classes="empty-note")
        yield Table(id="rules-table")

    def fetch(self) -> tuple[Hashable, Fetch]:
        arm, text = self.arm, self.filter_text
        return ("rules", arm, text), lambda con, run: D.fetch_rules(con, run, arm, text)

    def show(self, data: D.RulesData) -> None:
        self.data = data
        t = data.table
        self.query_one("#rules-head", Static).update(
            f"per service and rule · arm: {data.arm or 'all'}"
            + (f" · filter: {self.filter_text}" if self.filter_text else ""))
        self.note("rules-empty", None if t.height else
                  (f"no rule matches {self.filter_text!r}" if self.filter_text else NO_DATA))
        rows = []
        keys = []
        for r in t.iter_rows(named=True):
            reason = r["last_reason"] or ""
            rows.append((r["service"], r["rule_id"], right(fmt.num(r["checks"])),
                         right(fmt.num(r["blocks"])), right(fmt.pct(r["block_rate"], 2)),
                         fmt.spark(r["trend"], 16),
                         fmt.clock(r["last_ts"]) if r["last_ts"] else "–",
                         reason[:60]))
            keys.append(f"{r['service']}\x1f{r['rule_id']}")
        fill_table(self.query_one("#rules-table", Table),
                   ["service", "rule", "checks", "blocks", "block rate", "trend", "last",
                    "last reason"], rows, keys)

    def action_drill(self) -> None:
        key = self.query_one("#rules-table", Table).cursor_key
        if not key:
            return
        _service, rule_id = key.split("\x1f", 1)
        self.dash.show_events(rule_id=rule_id, arm=self.arm)

    def on_table_row_selected(self, event: Table.RowSelected) -> None:
        event.stop()
        self.action_drill()

    def action_arm(self) -> None:
        self.arm = ARMS[(ARMS.index(self.arm) + 1) % len(ARMS)]
        self.dash.refresh_view()

    def set_filter(self, text: str) -> None:
        super().set_filter(text)
        self.dash.refresh_view()

    def export_frame(self) -> pl.DataFrame | None:
        return self.data.table if self.data else None


# --- 3 alerts --------------------------------------------------------------------------------------

class Alerts(View):
    KEY, TITLE = "3", "Alerts"
    FILTER_HELP = "text matched against alert names and labels"
    BINDINGS = [Binding("x", "silence", "Silence")]

    def __init__(self) -> None:
        super().__init__()
        self.data: D.AlertsData | None = None

    def compose(self) -> ComposeResult:
        yield Static("alert instances, firing first", id="alerts-head", classes="view-head")
        yield Empty("", id="alerts-empty", classes="empty-note")
        yield Table(id="alerts-table")
        yield Static("silences", classes="section")
        yield Empty("", id="silences-empty")
        yield Table(id="silences-table")
        yield Static("firing history", classes="section")
        yield Empty("", id="history-empty")
        yield Table(id="history-table")

    def fetch(self) -> tuple[Hashable, Fetch]:
        text = self.filter_text
        now = fmt.utc_naive(self.dash.clock())
        # The clock only moves silences in and out of effect: a minute key is enough.
        return (("alerts", text, int(self.dash.clock() // 60)),
                lambda con, run: D.fetch_alerts(con, run, now, text))

    def show(self, data: D.AlertsData) -> None:
        self.data = data
        now = self.dash.clock()
        cur = data.current
        self.note("alerts-empty", None if cur.height else
                  "no alerts: rules come from governance/alerts/default_rules.toml and are "
                  "evaluated by `tractatus-watch live`/`check`; nothing is pending or firing")
        rows, keys = [], []
        for r in cur.iter_rows(named=True):
            labels = D.labels_of(r["labels"])
            labels.pop("alertname", None)
            since = fmt.epoch(r["active_since"])
            state = r["state"] + (" (silenced)" if r["silenced"] else "")
            style = {"firing": "bold red", "pending": "yellow"}.get(r["state"], "")
            rows.append((Text(state, style=style), r["alertname"], r["severity"] or "",
                         " ".join(f"{k}={v}" for k, v in sorted(labels.items()))[:50],
                         fmt.clock(r["active_since"]) if since else "–",
                         fmt.ago(now - since) if since else "–",
                         right(fmt.dec(r["value"], 4) if r["value"] is not None else "–")))
            keys.append(r["fingerprint"])
        fill_table(self.query_one("#alerts-table", Table),
                   ["state", "alert", "severity", "labels", "since", "for", "value"], rows, keys)
        sil = data.silences
        self.note("silences-empty", None if sil.height else "no active silences")
        self.query_one("#silences-table").display = bool(sil.height)
        fill_table(self.query_one("#silences-table", Table),
                   ["matchers", "until", "comment", "by"],
                   [(_matchers(r["matchers"])[:60], fmt.clock(r["ends_at"], True),
                     r["comment"] or "",
                     r["created_by"] or "") for r in sil.iter_rows(named=True)])
        hist = data.history
        self.note("history-empty", None if hist.height else "no alert has changed state yet")
        self.query_one("#history-table").display = bool(hist.height)
        fill_table(self.query_one("#history-table", Table),
                   ["time", "alert", "from", "to", "value"],
                   [(fmt.clock(r["ts"], True), r["alertname"], r["from_state"], r["to_state"],
                     right(fmt.dec(r["value"], 4) if r["value"] is not None else "–"))
                    for r in hist.iter_rows(named=True)])

    def selected(self) -> dict[str, Any] | None:
        fp = self.query_one("#alerts-table", Table).cursor_key
        if fp is None or self.data is None:
            return None
        rows = self.data.current.filter(pl.col("fingerprint") == fp).to_dicts()
        return rows[0] if rows else None

    def action_silence(self) -> None:
        alert = self.selected()
        if alert is None:
            self.dash.notify("no alert selected", severity="warning")
            return
        self.dash.ask_silence(alert)

    def set_filter(self, text: str) -> None:
        super().set_filter(text)
        self.dash.refresh_view()

    def export_frame(self) -> pl.DataFrame | None:
        return self.data.current if self.data else None


def _matchers(raw: str | None) -> str:
    try:
        return " ".join(json.loads(raw or "[]"))
    except (ValueError, TypeError):
        return str(raw)


# --- 4 runs ----------------------------------------------------------------------------------------

class Runs(View):
    KEY, TITLE = "4", "Runs"
    FILTER_HELP = "text matched against run ids and names"
    BINDINGS = [
        Binding("enter", "choose", "Show run"),
        Binding("b", "baseline", "Baseline"),
        Binding("c", "compare", "Compare"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.data: D.RunsData | None = None
        self.compare_with: str | None = None
        self.comparison: D.Comparison | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="runs-head", classes="view-head")
        yield Empty(LOADING, id="runs-empty", classes="empty-note")
        yield Table(id="runs-table")
        yield Static("", id="compare-head", classes="section")
        yield Table(id="compare-table")

    def on_mount(self) -> None:
        self._show_compare_head()

    def _show_compare_head(self) -> None:
        head = self.query_one("#compare-head", Static)
        head.display = self.compare_with is not None
        self.query_one("#compare-table").display = self.comparison is not None
        if self.compare_with is not None and self.comparison is None:
            head.update(f"comparing {self.dash.scope.run_id} with {self.compare_with} …")

    def fetch(self) -> tuple[Hashable, Fetch]:
        text = self.filter_text
        return ("runs", text), lambda con, run: D.fetch_runs(con, text)

    def slow(self, run_id: str) -> tuple[Hashable, Fetch] | None:
        other = self.compare_with
        if other is None:
            return None
        return (("compare", run_id, other),
                lambda con, run: D.fetch_comparison(con, run, other))

    def show(self, data: D.RunsData) -> None:
        self.data = data
        scope = self.dash.scope
        self.query_one("#runs-head", Static).update(
            f"runs · showing {scope.run_id or '–'}"
            + (f" · baseline {scope.baseline_run}" if scope.baseline_run else
               " · baseline: its own ungoverned arm"))
        runs = data.runs
        self.note("runs-empty", None if runs.height else NO_DATA)
        rows, keys = [], []
        for r in runs.iter_rows(named=True):
            mark = ("●" if r["run_id"] == scope.run_id else "") + \
                   ("B" if r["run_id"] == scope.baseline_run else "") + \
                   ("C" if r["run_id"] == self.compare_with else "")
            rows.append((mark, r["run_id"], r["name"] or "", ",".join(r["arms"] or []),
                         right(fmt.num(r["rounds"])), right(fmt.num(r["actions"])),
                         right(fmt.num(r["escaped"])), fmt.clock(r["first_ts"], True),
                         fmt.clock(r["last_ts"], True)))
            keys.append(r["run_id"])
        fill_table(self.query_one("#runs-table", Table),
                   ["", "run", "name", "arms", "rounds", "actions", "escaped", "first", "last"],
                   rows, keys)

    def show_slow(self, data: D.Comparison) -> None:
        self.comparison = data
        self.query_one("#compare-head", Static).update(
            f"compare {data.a} (A) with {data.b} (B) · each against its own baseline")
        self.query_one("#compare-head").display = True
        table = self.query_one("#compare-table", Table)
        table.display = True
        fill_table(table, list(data.table.columns),
                   [(m, right(a), right(b), right(d)) for m, a, b, d in data.table.iter_rows()])

    def highlighted(self) -> str | None:
        return self.query_one("#runs-table", Table).cursor_key

    def action_choose(self) -> None:
        run = self.highlighted()
        if run:
            self.dash.choose_run(run)

    def on_table_row_selected(self, event: Table.RowSelected) -> None:
        event.stop()
        if event.table.id == "runs-table":
            self.action_choose()

    def action_baseline(self) -> None:
        run = self.highlighted()
        if run:
            self.dash.choose_baseline(None if run == self.dash.scope.baseline_run else run)

    def action_compare(self) -> None:
        run = self.highlighted()
        if run:
            self.compare(run)

    def compare(self, run: str | None) -> None:
        self.compare_with = run
        self.comparison = None
        if self.is_mounted:
            self._show_compare_head()
        self.dash.refresh_view()

    def set_filter(self, text: str) -> None:
        super().set_filter(text)
        self.dash.refresh_view()

    def export_frame(self) -> pl.DataFrame | None:
        if self.comparison is not None:
            return self.comparison.table
        return self.data.runs if self.data else None


# --- 5 agents --------------------------------------------------------------------------------------

class Agents(View):
    KEY, TITLE = "5", "Agents"
    FILTER_HELP = "agent id text, or column>value / column=value (e.g. escaped>0 arm=governed)"
    BINDINGS = [
        Binding("o", "sort", "Sort"),
        Binding("O", "reverse", "Reverse"),
        Binding("n", "page(1)", "Next page"),
        Binding("p", "page(-1)", "Prev page"),
    ]
    PAGE = 50

    def __init__(self) -> None:
        super().__init__()
        self.sort = "agent_id"
        self.descending = False
        self.page = 0
        self.data: D.AgentsData | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="agents-head", classes="view-head")
        yield Empty(LOADING, id="agents-empty", classes="empty-note")
        yield Table(id="agents-table")

    def fetch(self) -> tuple[Hashable, Fetch]:
        params = (self.filter_text, self.sort, self.descending, self.page)
        size = self.PAGE
        return (("agents",) + params, lambda con, run: D.fetch_agents(con, D.AgentsQuery(
            run, *params, page_size=size)))

    def show(self, data: D.AgentsData) -> None:
        self.data = data
        q = data.query
        pages = max(1, math.ceil(data.matched / q.page_size))
        if q.page >= pages and q.page > 0:
            self.page = pages - 1  # the filter shrank the list: show its last page
            self.dash.refresh_view()
        self.query_one("#agents-head", Static).update(
            f"{fmt.num(data.total)} agent rows · {fmt.num(data.matched)} shown"
            + (f" (filter: {q.text_filter})" if q.text_filter else "")
            + f" · sorted by {q.sort} {'↓' if q.descending else '↑'}"
            + f" · page {min(q.page, pages - 1) + 1}/{pages}")
        self.note("agents-empty", None if data.matched else
                  (f"no agent matches {q.text_filter!r}" if q.text_filter else NO_DATA))
        rows = [(r["arm"], r["agent_id"], right(fmt.num(r["actions"])),
                 right(fmt.pct(r["coverage"])), right(fmt.num(r["blocked"])),
                 right(fmt.num(r["escaped"])), right(fmt.num(r["evasions"])),
                 right(fmt.dec(r["reward_mean"], 4)), right(fmt.us(r["latency_us_mean"])))
                for r in data.rows.iter_rows(named=True)]
        fill_table(self.query_one("#agents-table", Table),
                   ["arm", "agent", "actions", "coverage", "blocked", "escaped", "evasions",
                    "reward", "latency"], rows)

    def action_sort(self) -> None:
        self.sort = D.AGENT_SORTS[(D.AGENT_SORTS.index(self.sort) + 1) % len(D.AGENT_SORTS)]
        # Counts read best largest first; names alphabetically.
        self.descending = self.sort != "agent_id"
        self.page = 0
        self.dash.refresh_view()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self.page = 0
        self.dash.refresh_view()

    def action_page(self, step: int) -> None:
        if self.data is None:
            return
        pages = max(1, math.ceil(self.data.matched / self.PAGE))
        new = min(max(self.page + step, 0), pages - 1)
        if new != self.page:
            self.page = new
            self.dash.refresh_view()

    def set_filter(self, text: str) -> None:
        D.parse_agent_filter(text)
        super().set_filter(text)
        self.page = 0
        self.dash.refresh_view()

    def export_frame(self) -> pl.DataFrame | None:
        return self.data.rows if self.data else None


# --- 6 overhead ------------------------------------------------------------------------------------

class Overhead(View):
    KEY, TITLE = "6", "Overhead"

    def __init__(self) -> None:
        super().__init__()
        self.data: D.OverheadData | None = None
        self.detail: D.OverheadDetail | None = None

    def compose(self) -> ComposeResult:
        yield Empty(LOADING, id="overhead-empty", classes="empty-note")
        with Horizontal(id="overhead-charts"):
            yield Chart("mean governance latency per action (µs) per round", id="chart-mean")
            yield Chart("check latency p50 · p99 (µs) per service", id="chart-service")
        yield Static("latency versus number of agents (one row per run and arm) · computing…",
                     id="agents-vs-head", classes="section")
        yield Table(id="overhead-table")

    def on_mount(self) -> None:
        self.query_one("#overhead-charts").display = False

    def show_no_run(self, message: str) -> None:
        super().show_no_run(message)
        self.query_one("#overhead-charts").display = False

    def fetch(self) -> tuple[Hashable, Fetch]:
        return ("overhead",), lambda con, run: D.fetch_overhead(con, run)

    def slow(self, run_id: str) -> tuple[Hashable, Fetch] | None:
        return ("overhead-detail", run_id), lambda con, run: D.fetch_overhead_detail(con, run)

    def show(self, data: D.OverheadData) -> None:
        self.data = data
        empty = data.rounds.is_empty()
        self.note("overhead-empty", NO_DATA if empty else None)
        self.query_one("#overhead-charts").display = not empty
        if empty:
            return
        styles = ("cyan", "yellow", "green", "magenta")
        series = []
        for i, (arm, part) in enumerate(data.rounds.sort("arm", "round")
                                        .partition_by("arm", as_dict=True).items()):
            series.append((part["round"].to_list(),
                           part["latency_us_mean"].fill_null(float("nan")).to_list(),
                           styles[i % len(styles)], str(arm[0])))
        chart = self.query_one("#chart-mean", Chart)
        chart.border_title = "mean latency per action (µs): " + " · ".join(
            f"[{s[2]}]{s[3]}[/]" for s in series)
        # In the next screen update: the canvas is drawn while the screen paints, and the
        # table of this refresh already costs this one.
        self.call_after_refresh(chart.draw, series)

    def show_slow(self, data: D.OverheadDetail) -> None:
        self.detail = data
        styles = ("cyan", "yellow", "green", "magenta")
        series = []
        names = []
        for i, (svc, part) in enumerate(data.by_service.sort("service", "round")
                                        .partition_by("service", as_dict=True).items()):
            style = styles[i % len(styles)]
            names.append(f"[{style}]{svc[0]}[/]")
            x = part["round"].to_list()
            series.append((x, part["p50_us"].to_list(), style, f"{svc[0]} p50"))
            series.append((x, part["p99_us"].to_list(), f"dim {style}", f"{svc[0]} p99"))
        chart = self.query_one("#chart-service", Chart)
        chart.border_title = "check p50 · [dim]p99[/] (µs): " + " · ".join(names)
        chart.draw(series)
        self.query_one("#agents-vs-head", Static).update(
            "latency per action versus number of agents (one row per run and arm)")
        fill_table(self.query_one("#overhead-table", Table),
                   ["run", "arm", "agents", "p50", "p99", "mean", "share of rollout time"],
                   [(r["run_id"], r["arm"], right(fmt.num(r["agents"])), right(fmt.us(r["p50_us"])),
                     right(fmt.us(r["p99_us"])), right(fmt.us(r["mean_us"])),
                     right(fmt.pct(r["share"], 3)))
                    for r in data.by_agents.iter_rows(named=True)])

    def export_frame(self) -> pl.DataFrame | None:
        if self.detail is not None:
            return self.detail.by_service
        return self.data.rounds if self.data else None


# --- 7 events --------------------------------------------------------------------------------------

class Events(View):
    KEY, TITLE = "7", "Events"
    FILTER_HELP = "key=value words: arm=governed verdict=block rule=STR-001"
    BINDINGS = [
        Binding("n", "older", "Older"),
        Binding("p", "newer", "Newer"),
        Binding("g", "newest", "Newest"),
    ]
    PAGE = 50

    def __init__(self) -> None:
        super().__init__()
        self.filters: dict[str, str | None] = {"arm": None, "verdict": None, "rule_id": None}
        # Keyset anchors of the pages before the current one; the current anchor is last.
        self.anchors: list[tuple[datetime | None, int]] = [(None, 0)]
        self.data: D.EventsData | None = None
        self._detail_for: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="events-head", classes="view-head")
        yield Empty(LOADING, id="events-empty", classes="empty-note")
        yield Table(id="events-table")
        yield Static("", id="event-detail")

    def fetch(self) -> tuple[Hashable, Fetch]:
        # Everything the worker needs is copied here, on the main thread.
        before, offset = self.anchors[-1]
        f, limit = dict(self.filters), self.PAGE
        key = ("events", tuple(f.items()), before, offset)
        return key, lambda con, run: D.fetch_events(con, D.EventsQuery(
            run, arm=f["arm"], verdict=f["verdict"], rule_id=f["rule_id"], before=before,
            offset=offset, limit=limit))

    def show(self, data: D.EventsData) -> None:
        self.data = data
        q = data.query
        page = len(self.anchors)
        self.query_one("#events-head", Static).update(
            f"decisions, newest first · page {page}"
            + (" (following new data)" if q.before is None else "")
            + (f" · filter: {q.filter_text}" if q.filter_text else ""))
        self.note("events-empty", None if data.rows.height else
                  (f"no decision matches {q.filter_text!r}" if q.filter_text else NO_DATA))
        rows, keys = [], []
        for r in data.rows.iter_rows(named=True):
            style = {"block": "red", "escalate": "yellow", "warn": "yellow"}.get(r["verdict"], "")
            rows.append((fmt.clock(r["ts"], True), right(str(r["round"])), r["agent_id"],
                         r["arm"], r["mode"], r["action_kind"], Text(r["verdict"], style=style),
                         "yes" if r["executed"] else "no", right(fmt.us(r["latency_us"]))))
            keys.append(r["decision_id"])
        fill_table(self.query_one("#events-table", Table),
                   ["time", "round", "agent", "arm", "mode", "action", "verdict", "executed",
                    "latency"], rows, keys)
        if not rows:
            self.query_one("#event-detail", Static).update("")
        else:
            self._load_detail()

    def on_table_row_highlighted(self, event: Table.RowHighlighted) -> None:
        event.stop()
        self._load_detail()

    def _load_detail(self) -> None:
        did = self.query_one("#events-table", Table).cursor_key
        if self.data is None or did is None or did == self._detail_for:
            return
        self._detail_for = did
        rows = self.data.rows.filter(pl.col("decision_id") == did).to_dicts()
        if not rows:
            return
        run = self.data.query.run_id
        self.dash.load(lambda con: D.fetch_decision(con, run, rows[0]), self._show_detail,
                       group="detail")

    def _show_detail(self, detail: D.DecisionDetail) -> None:
        if detail.decision["decision_id"] != self._detail_for:
            return  # the cursor moved on while this was loading
        d = detail.decision
        text = Text()
        text.append(f"{d['decision_id']}", style="bold")
        text.append(f"  {fmt.clock(d['ts'], True)}  round {d['round']}  {d['agent_id']}  "
                    f"{d['arm']}/{d['mode']}  {d['action_kind']}  verdict {d['verdict']}  "
                    f"executed {'yes' if d['executed'] else 'no'}"
                    f"{'  EVASION' if d['evasion'] else ''}\n")
        if d.get("action_summary"):
            text.append(f"{d['action_summary']}\n", style="italic")
        for c in detail.checks.iter_rows(named=True):
            style = "red" if c["verdict"] == "block" else ""
            text.append(f"  {c['idx']}. {c['service']} {c['rule_id']} ", style="dim")
            text.append(f"{c['verdict']}", style=style)
            text.append(f" ({c['raw_verdict'] or ''}) {'enforced' if c['enforced'] else 'shadow'}"
                        f" {fmt.us(c['latency_us'])} {c['reason'] or ''}\n")
        self.query_one("#event-detail", Static).update(text)

    def action_older(self) -> None:
        if self.data is None:
            return
        nxt = D.next_anchor(self.data.query, self.data.rows)
        if nxt is None:
            self.dash.notify("this is the oldest page", timeout=2)
            return
        self.anchors.append(nxt)
        self.dash.refresh_view()

    def action_newer(self) -> None:
        if len(self.anchors) > 1:
            self.anchors.pop()
            self.dash.refresh_view()

    def action_newest(self) -> None:
        self.anchors = [(None, 0)]
        self.dash.refresh_view()

    def set_filter(self, text: str) -> None:
        self.filters = D.parse_event_filter(text)
        super().set_filter(text)
        self.anchors = [(None, 0)]
        self.dash.refresh_view()

    def export_frame(self) -> pl.DataFrame | None:
        return self.data.rows if self.data else None


VIEWS: tuple[type[View], ...] = (Overview, Rules, Alerts, Runs, Agents, Overhead, Events)
