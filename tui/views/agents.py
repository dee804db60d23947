"""The Agents view (5): one row per agent and arm, sorted, filtered and paged."""

from __future__ import annotations

import math
from collections.abc import Hashable

import polars as pl
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from .. import data as D
from .. import fmt
from ..table import Fit, Table
from ..widgets import Empty, fill_table, right
from .base import LOADING, NO_DATA, Fetch, View, ViewContext


# At 80 columns latency gives way first (the Overhead view has it per arm), then reward.
AGENTS_FIT = Fit(drop=("latency", "reward"))


class Agents(View):
    KEY, TITLE = "5", "Agents"
    FILTER_HELP = "agent id text, or column>value / column=value (e.g. escaped>0 arm=governed)"
    BINDINGS = [
        Binding("o", "sort", "Sort", id="agents.sort"),
        Binding("O", "reverse", "Reverse", id="agents.reverse"),
        Binding("n", "page(1)", "Next page", id="agents.next_page"),
        Binding("p", "page(-1)", "Prev page", id="agents.prev_page"),
    ]
    PAGE = 50

    def __init__(self, context: ViewContext) -> None:
        super().__init__(context)
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
            self.request_refresh()
        self.set_text("#agents-head",
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
                    "reward", "latency"], rows, fit=AGENTS_FIT)

    def action_sort(self) -> None:
        self.sort = D.AGENT_SORTS[(D.AGENT_SORTS.index(self.sort) + 1) % len(D.AGENT_SORTS)]
        # Counts read best largest first; names alphabetically.
        self.descending = self.sort != "agent_id"
        self.page = 0
        self.request_refresh()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self.page = 0
        self.request_refresh()

    def action_page(self, step: int) -> None:
        if self.data is None:
            return
        pages = max(1, math.ceil(self.data.matched / self.PAGE))
        new = min(max(self.page + step, 0), pages - 1)
        if new != self.page:
            self.page = new
            self.request_refresh()

    def set_filter(self, text: str) -> None:
        D.parse_agent_filter(text)
        super().set_filter(text)
        self.page = 0
        self.request_refresh()

    def export_frame(self) -> pl.DataFrame | None:
        return self.data.rows if self.data else None
