"""The Overhead view (6): governance latency per round, per service and per agent count."""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import ClassVar

import polars as pl
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from .. import data as D
from .. import fmt
from ..table import Fit, Table
from ..widgets import Chart, Empty, decades, fill_table, right
from .base import LOADING, NO_DATA, Fetch, View, ViewContext


OVERHEAD_FIT = Fit(drop=("share of rollout time",))
Series = tuple[list[float], list[float], str, str]
ARM_STYLES = {D.GOVERNED: "cyan", D.UNGOVERNED: "yellow"}


def agents_series(by_agents: pl.DataFrame,
                  columns: tuple[str, ...] = ("p50_us", "p99_us")) -> tuple[list[Series],
                                                                            list[Series]]:
    """The table's rows (one per run and arm) as lines against log10 of the number of agents:
    per arm, each of `columns`; and per run with both arms, governed minus ungoverned of each.
    Rows without agents (no log) are left out; the x of a difference is the governed arm's
    number of agents."""
    rows = by_agents.filter(pl.col("agents") > 0).sort("agents", "run_id", "arm")
    arms: list[Series] = []
    for i, arm in enumerate(rows["arm"].unique(maintain_order=True).to_list()):
        part = rows.filter(pl.col("arm") == arm)
        style = ARM_STYLES.get(arm, ("green", "magenta")[i % 2])
        x = [math.log10(a) for a in part["agents"].to_list()]
        for j, col in enumerate(columns):
            arms.append((x, [_y(v) for v in part[col].to_list()],
                         style if j == 0 else f"dim {style}", f"{arm} {col.removesuffix('_us')}"))
    gov = rows.filter(pl.col("arm") == D.GOVERNED)
    pairs = gov.join(rows.filter(pl.col("arm") == D.UNGOVERNED), on="run_id", suffix="_u")
    x = [math.log10(a) for a in pairs["agents"].to_list()]
    diff = [(x, [_y(g) - _y(u) for g, u in zip(pairs[col].to_list(),
                                             pairs[f"{col}_u"].to_list())],
             "magenta" if j == 0 else "dim magenta",
             f"governed - ungoverned {col.removesuffix('_us')}")
            for j, col in enumerate(columns)]
    return arms, diff if pairs.height else []


def _y(value: float | None) -> float:
    return float("nan") if value is None else float(value)


class Overhead(View):
    KEY, TITLE = "6", "Overhead"
    # Below this terminal height the charts are one row: the per-round mean and, against the
    # number of agents, the arms' p50 with their difference (p99 in the table).
    FULL_HEIGHT: ClassVar[int] = 34

    def __init__(self, context: ViewContext) -> None:
        super().__init__(context)
        self.data: D.OverheadData | None = None
        self.detail: D.OverheadDetail | None = None

    def compose(self) -> ComposeResult:
        yield Empty(LOADING, id="overhead-empty", classes="empty-note")
        with Horizontal(id="overhead-charts"):
            yield Chart("mean governance latency per action (µs) per round", id="chart-mean")
            yield Chart("check latency p50 · p99 (µs) per service", id="chart-service")
            yield Chart("p50 (µs) versus agents", id="chart-agents-compact")
        with Horizontal(id="overhead-agents"):
            yield Chart("latency per action (µs) versus agents", id="chart-agents")
            yield Chart("governed - ungoverned (µs) versus agents", id="chart-agents-diff")
        yield Static("latency versus number of agents (one row per run and arm) · computing…",
                     id="agents-vs-head", classes="section")
        yield Table(id="overhead-table")

    def on_mount(self) -> None:
        self._show_charts(False)

    def _show_charts(self, shown: bool) -> None:
        compact = self.app.size.height < self.FULL_HEIGHT
        self.query_one("#overhead-charts").display = shown
        self.query_one("#overhead-agents").display = shown and not compact
        # Compact: the agents chart (p50 and the difference) in the per-service chart's place.
        self.query_one("#chart-service").display = not compact
        self.query_one("#chart-agents-compact").display = compact

    def show_no_run(self, message: str) -> None:
        super().show_no_run(message)
        self._show_charts(False)

    def on_resize(self) -> None:
        if self.data is not None and not self.data.rounds.is_empty():
            self._show_charts(True)
            if self.detail is not None:
                self._draw_agents(self.detail)

    def fetch(self) -> tuple[Hashable, Fetch]:
        return ("overhead",), lambda con, run: D.fetch_overhead(con, run)

    def slow(self, run_id: str) -> tuple[Hashable, Fetch] | None:
        return ("overhead-detail", run_id), lambda con, run: D.fetch_overhead_detail(con, run)

    def show(self, data: D.OverheadData) -> None:
        self.data = data
        empty = data.rounds.is_empty()
        self.note("overhead-empty", NO_DATA if empty else None)
        self._show_charts(not empty)
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
        chart.set_title("mean latency per action (µs): " + " · ".join(
            f"[{s[2]}]{s[3]}[/]" for s in series))
        chart.draw(series)

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
        chart.set_title("check p50 · [dim]p99[/] (µs): " + " · ".join(names))
        chart.draw(series)
        self._draw_agents(data)
        self.set_text("#agents-vs-head",
            "latency per action versus number of agents (one row per run and arm)")
        fill_table(self.query_one("#overhead-table", Table),
                   ["run", "arm", "agents", "p50", "p99", "mean", "share of rollout time"],
                   [(r["run_id"], r["arm"], right(fmt.num(r["agents"])), right(fmt.us(r["p50_us"])),
                     right(fmt.us(r["p99_us"])), right(fmt.us(r["mean_us"])),
                     right(fmt.pct(r["share"], 3)))
                    for r in data.by_agents.iter_rows(named=True)], fit=OVERHEAD_FIT)

    def _draw_agents(self, data: D.OverheadDetail) -> None:
        """The table's p50 and p99 against the number of agents (log axis), per arm, and
        governed minus ungoverned per run."""
        compact = self.app.size.height < self.FULL_HEIGHT
        arms, diff = agents_series(data.by_agents, ("p50_us",) if compact else
                                   ("p50_us", "p99_us"))
        xlog = decades(data.by_agents["agents"].to_list())
        names = " · ".join(f"[{ARM_STYLES.get(a, 'green')}]{a}[/]"
                           for a in data.by_agents["arm"].unique(maintain_order=True))
        if compact:
            chart = self.query_one("#chart-agents-compact", Chart)
            chart.set_title(f"p50 (µs) vs agents (log): {names} · [magenta]gov - ungov[/]")
            chart.draw([*arms, *diff], xlog=xlog)
            return
        chart = self.query_one("#chart-agents", Chart)
        chart.set_title(f"p50 · [dim]p99[/] (µs) vs agents (log): {names}")
        chart.draw(arms, xlog=xlog)
        other = self.query_one("#chart-agents-diff", Chart)
        other.set_title("[magenta]governed - ungoverned[/] p50 · [dim]p99[/] (µs) "
                        "vs agents (log)")
        other.draw(diff, xlog=xlog, subtitle="" if diff else "needs both arms in a run")

    def export_frame(self) -> pl.DataFrame | None:
        if self.detail is not None:
            return self.detail.by_service
        return self.data.rounds if self.data else None
