"""The Overview (1): KPIs, five charts of the run per round, one sparkline per rule."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, ClassVar

import numpy as np
import polars as pl
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Label, Static

from .. import data as D
from .. import fmt, widgets
from ..chart import Series
from ..widgets import Chart, Empty, TextLine, Spark, fit_strip
from .base import LOADING, NO_DATA, Fetch, View, ViewContext


def known(x: pl.Series, y: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The points of a column that are not null, as floats. Series and numpy only: a polars
    plan costs ~0.1-0.2 ms, and the Overview draws ten series a refresh."""
    xs, ys = x.to_numpy(), y.cast(pl.Float64).to_numpy()
    if y.null_count():  # a count polars keeps: the mask only where there are nulls
        keep = ~y.is_null().to_numpy()
        xs, ys = xs[keep], ys[keep]
    return xs, ys


class Overview(View):
    KEY, TITLE = "1", "Overview"
    # Below this terminal height the five charts become two (rates together, evasions as a
    # rate among them; rewards with the gap in the subtitle) so 80x24 keeps readable plots.
    FULL_HEIGHT: ClassVar[int] = 34

    def __init__(self, context: ViewContext) -> None:
        super().__init__(context)
        self.data: D.OverviewData | None = None
        self.report_kpis: D.Kpis | None = None
        self._rule_keys: tuple[tuple[str, str], ...] = ()
        self._compact: bool | None = None
        self._kpi_shown: Text | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="kpis")
        yield Empty(LOADING, id="overview-empty", classes="empty-note")
        with Horizontal(id="charts-top", classes="charts"):
            yield Chart("", id="chart-a")
            yield Chart("", id="chart-b")
            yield Chart("", id="chart-e")
        with Horizontal(id="charts-bottom", classes="charts"):
            yield Chart("", id="chart-c")
            yield Chart("", id="chart-d")
        yield VerticalScroll(id="rule-sparks")

    def fetch(self) -> tuple[Hashable, Fetch]:
        baseline = self.context.scope.baseline_run
        return ("overview", baseline), lambda con, run: D.fetch_overview(con, run, baseline)

    def slow(self, run_id: str) -> tuple[Hashable, Fetch] | None:
        baseline = self.context.scope.baseline_run
        return (("report", run_id, baseline),
                lambda con, run: D.fetch_overview_slow(con, run, baseline))

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
        self.refresh_kpis()
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

    def _draw_charts(self, data: D.OverviewData) -> None:
        compact = self._compact = self.app.size.height < self.FULL_HEIGHT
        self.query_one("#charts-bottom").display = not compact
        self.query_one("#chart-e").display = not compact
        weight = self.context.smoothing
        r = data.rounds
        marks = [float(v) for v in data.alert_rounds]
        fired = f"{len(marks)} alert{'s' if len(marks) != 1 else ''} fired" if marks else ""
        smooth = f"smoothed {weight:g}" if weight else ""

        def line(frame: pl.DataFrame, col: str | np.ndarray, style: str, label: str,
                 smoothed: bool = True) -> Series:
            """One series (a column, or values per row), without its missing rounds, smoothed
            (EMA) when asked."""
            if isinstance(col, str):
                xs, ys = known(frame["round"], frame[col])
            else:
                xs, ys = frame["round"].to_numpy(), col
            if smoothed and weight:
                ys = np.asarray(widgets.ema(ys, weight))
            return xs, ys, style, label

        coverage = line(r, "coverage", "green", "coverage")
        blocked = line(r, "blocked_rate", "red", "blocked")
        with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 is NaN: a gap, as in polars
            evasions = line(r, r["evasions"].to_numpy() / r["actions"].to_numpy(), "yellow",
                            "evasions")
        evasion_count = line(r, "evasions", "yellow", "evasions")
        # The baseline run's same arm, dim: how this run compares round by round.
        other = data.compared if data.compared is not None and data.compared.height else None
        vs = [line(other, "coverage", "dim green", "coverage (baseline run)")] \
            if other is not None else []
        vs_blocked = [line(other, "blocked_rate", "dim red", "blocked (baseline run)")] \
            if other is not None else []
        g = data.reward
        gov, base = line(g, "governed_mean", "cyan", "watched"), \
            line(g, "baseline_mean", "yellow", "baseline")
        gap = line(g, "gap", "magenta", "gap")
        # The 95% interval of each round's gap (Welch, as the report's): two dim lines.
        band = [line(g, "gap_lo", "dim magenta", "95% CI", smoothed=False),
                line(g, "gap_hi", "dim magenta", "95% CI", smoothed=False)]
        band = [s for s in band if len(s[0])]
        raw_gap = known(g["round"], g["gap"])[1]
        last_gap = f"last gap {raw_gap[-1]:+.3f}" if len(raw_gap) else "no gap yet"
        a, b = self.query_one("#chart-a", Chart), self.query_one("#chart-b", Chart)
        c, d = self.query_one("#chart-c", Chart), self.query_one("#chart-d", Chart)
        e = self.query_one("#chart-e", Chart)
        rewards = [s for s in (gov, base) if len(s[0])]
        reward_title = "reward [cyan]watched arm[/] · [yellow]baseline[/]"
        baseline_note = " · [dim]dim: baseline run[/]" if other is not None else ""

        def sub(*parts: str) -> str:
            return " · ".join(p for p in parts if p)

        plan: list[tuple[Chart, str, dict[str, Any]]]
        if compact:
            plan = [
                (a, "[green]coverage[/] · [red]blocked[/] · [yellow]evasions[/] per round"
                    + baseline_note,
                 dict(series=[*vs, *vs_blocked, coverage, blocked, evasions], vlines=marks,
                      scale="rate", subtitle=sub(fired, smooth))),
                (b, reward_title, dict(series=rewards, vlines=marks, subtitle=sub(
                    last_gap if g.height else "no rewards yet", smooth))),
            ]
        else:
            plan = [
                (a, "[green]coverage[/]" + baseline_note,
                 dict(series=[*vs, coverage], vlines=marks, scale="rate",
                      subtitle=sub(fired, smooth))),
                (b, "[red]blocked[/] rate" + baseline_note,
                 dict(series=[*vs_blocked, blocked], vlines=marks, scale="rate",
                      subtitle=smooth)),
                # Evasions are rare: as a count from 0 they read, as a rate on 0-100% not.
                (e, "[yellow]evasions[/] per round (count)",
                 dict(series=[evasion_count], vlines=marks, scale="count",
                      subtitle=sub("" if np.any(evasion_count[1]) else "none", smooth))),
                (c, reward_title, dict(series=rewards, vlines=marks,
                                       subtitle=sub("" if g.height else "no rewards yet",
                                                    smooth))),
                (d, "[magenta]gap[/] (watched - baseline) per round · [dim]95% CI[/]",
                 dict(series=[*band, gap] if len(gap[0]) else [], vlines=marks,
                      subtitle=sub(last_gap, smooth))),
            ]
        for chart, title, kwargs in plan:
            chart.set_title(title)
            chart.draw(**kwargs)

    def _show_rules(self, rules: tuple[D.RuleTrend, ...]) -> None:
        box = self.query_one("#rule-sparks", VerticalScroll)
        keys = tuple((r.service, r.rule_id) for r in rules)
        if keys != self._rule_keys:
            # Mount rows only when the set of rules changes; later refreshes update them.
            self._rule_keys = keys
            box.remove_children()
            rows = [Horizontal(Label(f"{r.rule_id} · {r.service}", classes="spark-name"),
                               Spark(classes="spark"),
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
            spark = row.query(Spark)
            if spark:
                spark.first().set(r.rates)
                row.query_one(".spark-rate", TextLine).set(
                    "? (rules evaluated unknown)" if r.evaluations is None else
                    f"{fmt.pct(r.rate)} of {fmt.num(r.evaluations)}")

    def show_slow(self, data: D.OverviewSlow) -> None:
        self.report_kpis = data.kpis
        self.refresh_kpis()
        self._show_rules(data.rules)

    def refresh_kpis(self) -> None:
        # Only when it changed: the strip wraps, so each update lays the screen out again.
        text = self.kpi_text()
        if text != self._kpi_shown:
            self._kpi_shown = text
            self.query_one("#kpis", Static).update(text)

    def kpi_text(self) -> Text:
        k = self.report_kpis
        alerts = self.context.alert_counts
        items: list[tuple[Text, Text]] = []

        def item(label: str, value: str, style: str = "bold", *, short: str | None = None,
                 short_value: str | None = None, note: str = "",
                 short_note: str | None = None) -> None:
            """A figure with its label (and a dim note after it); the `short_*` forms are
            used when the strip does not fit the width on one line."""
            def one(lab: str, val: str, nt: str) -> Text:
                return Text.assemble((f"{lab} ", "dim"), (val, style), (nt, "dim"))
            items.append((one(label, value, note),
                          one(short or label, short_value or value,
                              note if short_note is None else short_note)))

        def witness_item(a: D.ArmKpis) -> None:
            """The gateway's count beside the SDK's: nothing for a run it witnessed nothing of
            (not behind its proxy: the strip keeps its width), n/a for an arm it did not
            see in a run it did; never 0%."""
            if not witnessed_run:
                return
            if not a.witnessed:
                item("witnessed coverage", D.NOT_WITNESSED, "dim", short="witnessed")
                return
            item("witnessed coverage", fmt.pct(a.witnessed_coverage),
                 "bold green" if a.witnessed_coverage == 1.0 else "bold red", short="witnessed")

        alert_text = (f"{alerts.firing} firing"
                      + (f", {alerts.silenced} silenced" if alerts.silenced else "")
                      + (f", {alerts.pending} pending" if alerts.pending else ""))
        alert_style = "bold red" if alerts.firing else "bold green"
        width = max((self.size.width or self.app.size.width) - 2, 20)  # the strip's padding
        if k is None:
            item("coverage", "…")
            item("actions", "…")
            item("alerts", alert_text, alert_style)
            return fit_strip(items, width)
        # A line per arm, each figure labelled with its arm and mode: an arm that does not
        # enforce never "blocks", it would have blocked, or (penalize mode) it penalized, and
        # those escapes are its design (analysis/metrics.py). The gap ends the first line, the
        # alerts the last. Coverage is never abbreviated.
        lines: list[list[tuple[Text, Text]]] = []
        witnessed_run = any(a.witnessed for a in k.arms)
        for a in k.arms or ():
            items = []
            item(a.arm, a.mode, "bold cyan" if a.mode == "enforce" else "bold yellow")
            if a.mode != "shadow":
                item("coverage", fmt.pct(a.coverage),
                     "bold green" if a.coverage == 1.0 else "bold red")
                witness_item(a)
            if a.ungoverned:
                # Witnessed calls no decision governed: in an arm that enforces, the Governor
                # was bypassed.
                item("ungoverned actions", fmt.num(a.ungoverned),
                     "bold red" if a.mode != "shadow" else "bold", short="ungoverned")
            item("actions", fmt.num(a.actions), short="act")
            if a.mode == "shadow":
                item("would have blocked", fmt.num(a.would_have_blocked), short="would blk")
            elif a.mode == "penalize":
                item("penalized", fmt.num(a.penalized), short="pen")
            else:
                item("blocked", fmt.num(a.blocked), short="blk")
            item("escaped", fmt.num(a.escaped),
                 "bold red" if a.escaped and a.mode not in ("shadow", "penalize") else "bold",
                 short="esc")
            lines.append(items)
        items = lines[0] if lines else []
        if k.gap is not None:
            rel = f" {fmt.pct(k.gap.relative, 1)}" if k.gap.relative is not None else ""
            ci = f"[{fmt.dec(k.gap.lo, 3, True)}, {fmt.dec(k.gap.hi, 3, True)}]"
            value = fmt.dec(k.gap.absolute, 3, True)
            # Short: the relative gap is left out (the absolute one and its CI stay).
            item("│ gap", f"{value} {ci}{rel}", short_value=f"{value} {ci.replace(' ', '')}")
        elif len(lines) > 1:
            item("│ gap", "– (needs rewards in both arms)", "dim")
        items = lines[-1] if lines else items
        item("│ alerts", alert_text, alert_style)
        return Text("\n").join(fit_strip(line, width) for line in lines or [items])

    def export_frame(self) -> pl.DataFrame | None:
        if self.data is None:
            return None
        return self.data.rounds.join(self.data.reward, on="round", how="left")
