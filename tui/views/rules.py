"""The Rules view (2): per arm, service and rule: evaluations, fires, blocks, would-have-
blocked and the rule's rate; enter drills into Events."""

from __future__ import annotations

from collections.abc import Hashable

import polars as pl
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from .. import data as D
from .. import fmt
from ..messages import ShowEvents
from ..table import Fit, Table
from ..widgets import Empty, fill_table, right
from .base import LOADING, NO_DATA, Fetch, View, ViewContext


ARMS: tuple[str | None, ...] = (None, "governed", "penalized", "ungoverned")


# Narrow: the reason is cut, then the trend loses its oldest rounds; the time of the last
# block and then the reason go before the counts and the rate are ever touched.
RULES_FIT = Fit(squeeze={"last reason": 12, "trend": 8}, drop=("last", "last reason"),
                keep_end=frozenset({"trend"}))


class Rules(View):
    KEY, TITLE = "2", "Rules"
    FILTER_HELP = "text matched against service and rule id"
    BINDINGS = [
        Binding("enter", "drill", "Decisions", id="rules.drill"),
        Binding("a", "arm", "Arm", id="rules.arm"),
    ]

    def __init__(self, context: ViewContext) -> None:
        super().__init__(context)
        self.arm: str | None = None
        self.data: D.RulesData | None = None
        self.extras: D.RuleExtras | None = None  # from the background lane

    def compose(self) -> ComposeResult:
        yield Static("", id="rules-head", classes="view-head")
        yield Empty(LOADING, id="rules-empty", classes="empty-note")
        yield Table(id="rules-table")

    def fetch(self) -> tuple[Hashable, Fetch]:
        arm, text = self.arm, self.filter_text
        return ("rules", arm, text), lambda con, run: D.fetch_rules(con, run, arm, text)

    def slow(self, run_id: str) -> tuple[Hashable, Fetch] | None:
        arm = self.arm
        return (("rule-extras", run_id, arm),
                lambda con, run: D.fetch_rule_extras(con, run, arm))

    def show_slow(self, data: D.RuleExtras) -> None:
        self.extras = data
        if self.data is not None:
            self.show(self.data)

    def _extras(self) -> D.RuleExtras | None:
        """The extras fetched for the run and arm shown, if any yet."""
        e = self.extras
        if self.data is None or e is None or (e.run_id, e.arm) != (self.data.run_id,
                                                                   self.data.arm):
            return None
        return e

    def show(self, data: D.RulesData) -> None:
        self.data = data
        extras = self._extras()
        t = D.with_extras(data.table, extras)
        self.set_text("#rules-head",
            f"per service and rule · arm: {data.arm or 'all (one row per arm)'} · rate = block "
            "verdicts / evaluations (blocks: enforced; would block: shadow)"
            + (f" · filter: {self.filter_text}" if self.filter_text else ""))
        self.note("rules-empty", None if t.height else
                  (f"no rule matches {self.filter_text!r}" if self.filter_text else NO_DATA))
        rows = []
        keys = []
        every_arm = data.arm is None
        for r in t.iter_rows(named=True):
            reason = r["last_reason"] or ""
            # A rule's rate is per arm; unknown (the rules evaluated were not recorded, as in
            # audit logs) is "?", never a rate computed from the rule's own fires.
            unknown = r["evaluations"] is None
            rows.append(((r["arm"],) if every_arm else ()) + (
                r["service"], r["rule_id"],
                right("?" if unknown else fmt.num(r["evaluations"])),
                right(fmt.num(r["fires"])), right(fmt.num(r["blocks"])),
                right(fmt.num(r["would_have_blocked"])),
                right("?" if unknown else fmt.pct(r["rule_rate"], 2)),
                fmt.spark(r["trend"], 16),
                fmt.clock(r["last_ts"]) if r["last_ts"] else "–" if extras is not None
                else "…",
                reason[:60]))
            keys.append(f"{r['service']}\x1f{r['rule_id']}\x1f{r['arm']}")
        fill_table(self.query_one("#rules-table", Table),
                   (["arm"] if every_arm else []) + [
                       "service", "rule", "evals", "fires", "blocks", "would block", "rate",
                       "trend", "last", "last reason"], rows, keys, fit=RULES_FIT)

    def action_drill(self) -> None:
        key = self.query_one("#rules-table", Table).cursor_key
        if not key:
            return
        _service, rule_id, arm = key.split("\x1f", 2)
        self.ask(ShowEvents(rule_id=rule_id, arm=self.arm or arm))

    def on_table_row_selected(self, event: Table.RowSelected) -> None:
        event.stop()
        self.action_drill()

    def action_arm(self) -> None:
        self.arm = ARMS[(ARMS.index(self.arm) + 1) % len(ARMS)]
        self.request_refresh()

    def set_filter(self, text: str) -> None:
        super().set_filter(text)
        self.request_refresh()

    def export_frame(self) -> pl.DataFrame | None:
        return D.with_extras(self.data.table, self._extras()) if self.data else None
