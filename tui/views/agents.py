"""The Agents view (5): one row per agent and arm, sorted, filtered and paged."""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import polars as pl
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from .. import data as D
from .. import fmt
from ..table import Fit, Table
from ..widgets import Empty, fill_table, right
from .base import LOADING, NO_DATA, Fetch, View, ViewContext


# At 80 columns latency gives way first (the Overhead view has it per arm), then reward;
# with the witness columns shown, evasions too.
AGENTS_FIT = Fit(drop=("latency", "reward", "evasions"))


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
        self.witness: D.AgentWitness | None = None  # from the background lane

    def compose(self) -> ComposeResult:
        yield Static("", id="agents-head", classes="view-head")
        yield Empty(LOADING, id="agents-empty", classes="empty-note")
        yield Table(id="agents-table")

    def fetch(self) -> tuple[Hashable, Fetch]:
        params = (self.filter_text, self.sort, self.descending, self.page)
        size = self.PAGE
        return (("agents",) + params, lambda con, run: D.fetch_agents(con, D.AgentsQuery(
            run, *params, page_size=size)))

    def slow(self, run_id: str) -> tuple[Hashable, Fetch] | None:
        """The per-agent witness, only for a run the gateway witnessed (the rollup said so)."""
        if self.data is None or self.data.query.run_id != run_id or not self.data.witnessed:
            return None
        return ("agent-witness", run_id), D.fetch_agent_witness

    def show_slow(self, data: D.AgentWitness) -> None:
        self.witness = data
        if self.data is not None:
            self.show(self.data)

    def _witness(self) -> D.AgentWitness | None:
        """The witness fetched for the run shown, if any yet."""
        w = self.witness
        return w if self.data is not None and w is not None and \
            w.run_id == self.data.query.run_id else None

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
            + f" · page {min(q.page, pages - 1) + 1}/{pages}"
            + self._undecided_note())
        self.note("agents-empty", None if data.matched else
                  (f"no agent matches {q.text_filter!r}" if q.text_filter else NO_DATA))
        # The witness columns only for a run the gateway witnessed: "…" until the background
        # match lands, n/a for an agent it saw nothing of (never 0%).
        witnessed = bool(data.witnessed)
        witness = self._witness()
        page = D.with_witness(data.rows, witness) if witnessed else data.rows
        rows = [(r["arm"], r["agent_id"], right(fmt.num(r["actions"])),
                 right(fmt.pct(r["coverage"])),
                 *(self._witness_cells(r, witness is not None) if witnessed else ()),
                 right(fmt.num(r["blocked"])),
                 right(fmt.num(r["escaped"])), right(fmt.num(r["evasions"])),
                 right(fmt.dec(r["reward_mean"], 4)), right(fmt.us(r["latency_us_mean"])))
                for r in page.iter_rows(named=True)]
        fill_table(self.query_one("#agents-table", Table),
                   ["arm", "agent", "actions", "coverage",
                    *(("witnessed", "ungoverned") if witnessed else ()),
                    "blocked", "escaped", "evasions", "reward", "latency"], rows, fit=AGENTS_FIT)

    def _undecided_note(self) -> str:
        """The agents witnessed that never asked the Governor (not in the table: no row)."""
        witness = self._witness()
        if witness is None:
            return ""
        undecided = witness.without_decisions()
        if undecided.is_empty():
            return ""
        named = [f"{r['agent_id'] or '?'} ({r['arm']}, {fmt.num(r['witnessed'])} "
                 f"call{'s' if r['witnessed'] != 1 else ''})"
                 for r in undecided.head(3).iter_rows(named=True)]
        more = f" and {undecided.height - 3} more" if undecided.height > 3 else ""
        return f" · witnessed, no decision at all: {', '.join(named)}{more}"

    @staticmethod
    def _witness_cells(r: dict[str, Any], fetched: bool) -> tuple[Text, Text]:
        """Witnessed coverage and ungoverned actions of one agent row."""
        if not fetched:
            return right("…"), right("…")
        if not r["witnessed"]:
            return right(D.NOT_WITNESSED), right(D.NOT_WITNESSED)
        ungoverned = r["ungoverned_actions"]
        # A call no decision governed, from an agent that enforces: the Governor was bypassed.
        alarm = "bold red" if ungoverned and r["covered"] else ""
        return (right(fmt.pct(r["witnessed_coverage"])),
                Text(fmt.num(ungoverned), style=alarm, justify="right"))

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
        if self.data is None:
            return None
        return D.with_witness(self.data.rows, self._witness()) if self.data.witnessed \
            else self.data.rows
