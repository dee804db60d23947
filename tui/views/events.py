"""The Events view (7): pages of raw decisions, newest first, with the checks of one."""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime

import polars as pl
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from .. import data as D
from .. import fmt
from ..messages import LoadRequested
from ..table import Fit, Table
from ..widgets import Empty, fill_table, right
from .base import LOADING, NO_DATA, Fetch, View, ViewContext


# The verdict and whether it executed are what the view is for: the action is cut and the
# mode (the arm says it for the runs the tools write) hidden first.
EVENTS_FIT = Fit(squeeze={"action": 7, "agent": 7}, drop=("mode", "action"))


def _dates(rows: pl.DataFrame) -> str:
    """The day(s) of a page, once in the head line: the time column has only the clock."""
    if rows.is_empty():
        return ""
    days = sorted({fmt.clock(t, True)[:10] for t in rows["ts"].to_list()})
    return " · " + " – ".join(days)


class Events(View):
    KEY, TITLE = "7", "Events"
    FILTER_HELP = "key=value words: arm=governed verdict=block rule=STR-001"
    BINDINGS = [
        Binding("n", "older", "Older", id="events.older"),
        Binding("p", "newer", "Newer", id="events.newer"),
        # Before the table's g (first row): here the top is the newest page.
        Binding("g", "newest", "Newest", id="events.newest", priority=True),
    ]
    PAGE = 50

    def __init__(self, context: ViewContext) -> None:
        super().__init__(context)
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
        self.set_text("#events-head",
            f"decisions, newest first · page {page}"
            + (" (following new data)" if q.before is None else "") + _dates(data.rows)
            + (f" · filter: {q.filter_text}" if q.filter_text else ""))
        self.note("events-empty", None if data.rows.height else
                  (f"no decision matches {q.filter_text!r}" if q.filter_text else NO_DATA))
        rows, keys = [], []
        for r in data.rows.iter_rows(named=True):
            style = {"block": "red", "escalate": "yellow", "warn": "yellow"}.get(r["verdict"], "")
            rows.append((fmt.clock(r["ts"]), right(str(r["round"])), r["agent_id"],
                         r["arm"], r["mode"], r["action_kind"], Text(r["verdict"], style=style),
                         "yes" if r["executed"] else "no", right(fmt.us(r["latency_us"]))))
            keys.append(r["decision_id"])
        fill_table(self.query_one("#events-table", Table),
                   ["time", "round", "agent", "arm", "mode", "action", "verdict", "executed",
                    "latency"], rows, keys, fit=EVENTS_FIT)
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
        self.ask(LoadRequested(lambda con: D.fetch_decision(con, run, rows[0]),
                               self._show_detail, group="detail"))

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
            self.notify("this is the oldest page", timeout=2, markup=False)
            return
        self.anchors.append(nxt)
        self.request_refresh()

    def action_newer(self) -> None:
        if len(self.anchors) > 1:
            self.anchors.pop()
            self.request_refresh()

    def action_newest(self) -> None:
        self.anchors = [(None, 0)]
        self.query_one("#events-table", Table).cursor_row = 0  # g: the top, as in tables
        self.request_refresh()

    def set_filter(self, text: str) -> None:
        self.filters = D.parse_event_filter(text)
        super().set_filter(text)
        self.anchors = [(None, 0)]
        self.request_refresh()

    def export_frame(self) -> pl.DataFrame | None:
        return self.data.rows if self.data else None
