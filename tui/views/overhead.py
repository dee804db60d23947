"""The Overhead view (6): governance latency per round, per service and per agent count."""

from __future__ import annotations

from collections.abc import Hashable

import polars as pl
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from .. import data as D
from .. import fmt
from ..table import Fit, Table
from ..widgets import Chart, Empty, fill_table, right
from .base import LOADING, NO_DATA, Fetch, View, ViewContext


OVERHEAD_FIT = Fit(drop=("share of rollout time",))


class Overhead(View):
    KEY, TITLE = "6", "Overhead"

    def __init__(self, context: ViewContext) -> None:
        super().__init__(context)
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
                    for r in data.by_agents.iter_rows(named=True)], fit=OVERHEAD_FIT)

    def export_frame(self) -> pl.DataFrame | None:
        if self.detail is not None:
            return self.detail.by_service
        return self.data.rounds if self.data else None
