"""The Runs view (4): every run; choose the run shown, its baseline, or compare two."""

from __future__ import annotations

from collections.abc import Hashable

import polars as pl
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from .. import data as D
from .. import fmt
from ..messages import BaselineChosen, RunChosen
from ..table import Fit, Table
from ..widgets import Empty, fill_table, right
from .base import LOADING, NO_DATA, Fetch, View, ViewContext


# The run id is never cut (it is what `:run`, `--run` and exports take); the times and
# the arms give way first.
RUNS_FIT = Fit(squeeze={"name": 12, "arms": 10}, drop=("last", "first", "name", "arms"))


class Runs(View):
    KEY, TITLE = "4", "Runs"
    FILTER_HELP = "text matched against run ids and names"
    BINDINGS = [
        Binding("enter", "choose", "Show run", id="runs.choose"),
        Binding("b", "baseline", "Baseline", id="runs.baseline"),
        Binding("c", "compare", "Compare", id="runs.compare"),
    ]

    def __init__(self, context: ViewContext) -> None:
        super().__init__(context)
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
            self.set_text("#compare-head",
                          f"comparing {self.context.scope.run_id} with {self.compare_with} …")

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
        scope = self.context.scope
        # The marks name the runs (long ids would wrap the line at 80 columns).
        self.set_text("#runs-head",
            "runs · ● shown" + (" · B baseline" if scope.baseline_run else
                                " · baseline: its own ungoverned arm")
            + (" · C compared" if self.compare_with else ""))
        runs = data.runs
        self.note("runs-empty", None if runs.height else NO_DATA)
        rows, keys = [], []
        for r in runs.iter_rows(named=True):
            mark = ("●" if r["run_id"] == scope.run_id else "") + \
                   ("B" if r["run_id"] == scope.baseline_run else "") + \
                   ("C" if r["run_id"] == self.compare_with else "")
            # A demo names its run after itself: the name column only says something new.
            name = r["name"] if r["name"] and r["name"] != r["run_id"] else ""
            arms = ",".join(a["arm"] for a in r["arms"] or [])
            rows.append((mark, r["run_id"], name, arms,
                         right(fmt.num(r["rounds"])), right(fmt.num(r["actions"])),
                         right(fmt.num(r["escaped"])), fmt.clock(r["first_ts"], True),
                         fmt.clock(r["last_ts"], True)))
            keys.append(r["run_id"])
        fill_table(self.query_one("#runs-table", Table),
                   ["", "run", "name", "arms", "rounds", "actions (all arms)", "escaped (all arms)",
                    "first", "last"],
                   rows, keys, fit=RUNS_FIT)

    def show_slow(self, data: D.Comparison) -> None:
        self.comparison = data
        self.set_text("#compare-head",
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
            self.ask(RunChosen(run))

    def on_table_row_selected(self, event: Table.RowSelected) -> None:
        event.stop()
        if event.table.id == "runs-table":
            self.action_choose()

    def action_baseline(self) -> None:
        run = self.highlighted()
        if run:
            self.ask(BaselineChosen(None if run == self.context.scope.baseline_run else run))

    def action_compare(self) -> None:
        run = self.highlighted()
        if run:
            self.compare(run)

    def compare(self, run: str | None) -> None:
        self.compare_with = run
        self.comparison = None
        if self.is_mounted:
            self._show_compare_head()
        self.request_refresh()

    def set_filter(self, text: str) -> None:
        super().set_filter(text)
        self.request_refresh()

    def export_frame(self) -> pl.DataFrame | None:
        if self.comparison is not None:
            return self.comparison.table
        return self.data.runs if self.data else None
