"""The Alerts view (3): alert instances, silences and the firing history."""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

import polars as pl
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from .. import data as D
from .. import fmt
from ..messages import ExpireRequested, SilenceRequested
from ..table import Fit, Table
from ..widgets import Empty, fill_table, right
from .base import Fetch, View, ViewContext


# The labels say which arm, rule or service an alert is about: the severity, the start and
# the age give way first; labels still too long are cut in the table and shown whole in the
# line below it (the highlighted alert's).
ALERTS_FIT = Fit(drop=("severity", "since", "for"), squeeze={"labels": 16, "alert": 18},
                 drop_first=True)


class Alerts(View):
    KEY, TITLE = "3", "Alerts"
    FILTER_HELP = "text matched against alert names and labels"
    BINDINGS = [Binding("x", "silence", "Silence", id="alerts.silence"),
                Binding("d", "expire", "Expire", id="alerts.expire")]

    def __init__(self, context: ViewContext) -> None:
        super().__init__(context)
        self.data: D.AlertsData | None = None

    def compose(self) -> ComposeResult:
        yield Static("alert instances, firing first", id="alerts-head", classes="view-head")
        yield Empty("", id="alerts-empty", classes="empty-note")
        yield Table(id="alerts-table")
        yield Static("", id="alert-detail")
        yield Static("silences", classes="section")
        yield Empty("", id="silences-empty")
        yield Table(id="silences-table")
        yield Static("firing history", classes="section")
        yield Empty("", id="history-empty")
        yield Table(id="history-table")

    def fetch(self) -> tuple[Hashable, Fetch]:
        text = self.filter_text
        now = fmt.utc_naive(self.context.clock())
        # The clock only moves silences in and out of effect: a minute key is enough.
        return (("alerts", text, int(self.context.clock() // 60)),
                lambda con, run: D.fetch_alerts(con, run, now, text))

    def show(self, data: D.AlertsData) -> None:
        self.data = data
        now = self.context.clock()
        cur = data.current
        self.note("alerts-empty", None if cur.height else
                  "no alerts: rules come from analysis/alerts/default_rules.toml and are "
                  "evaluated by `tractatus-watch live`/`check`; nothing is pending or firing")
        rows, keys = [], []
        for r in cur.iter_rows(named=True):
            labels = D.labels_of(r["labels"])
            labels.pop("alertname", None)
            since = fmt.epoch(r["active_since"])
            state = r["state"] + (" (silenced)" if r["silenced"] else "")
            style = {"firing": "bold red", "pending": "yellow"}.get(r["state"], "")
            rows.append((Text(state, style=style), r["alertname"], r["severity"] or "",
                         " ".join(f"{k}={v}" for k, v in sorted(labels.items())),
                         fmt.clock(r["active_since"]) if since else "–",
                         fmt.ago(now - since) if since else "–",
                         right(fmt.dec(r["value"], 4) if r["value"] is not None else "–")))
            keys.append(r["fingerprint"])
        fill_table(self.query_one("#alerts-table", Table),
                   ["state", "alert", "severity", "labels", "since", "for", "value"], rows, keys,
                   fit=ALERTS_FIT)
        self._show_detail()
        sil = data.silences
        self.note("silences-empty", None if sil.height else "no active silences")
        self.query_one("#silences-table").display = bool(sil.height)
        fill_table(self.query_one("#silences-table", Table),
                   ["matchers", "until", "comment", "by", "id"],
                   [(_matchers(r["matchers"])[:60], fmt.clock(r["ends_at"], True),
                     r["comment"] or "",
                     r["created_by"] or "", r["silence_id"]) for r in sil.iter_rows(named=True)],
                   sil["silence_id"].to_list())
        hist = data.history
        self.note("history-empty", None if hist.height else "no alert has changed state yet")
        self.query_one("#history-table").display = bool(hist.height)
        fill_table(self.query_one("#history-table", Table),
                   ["time", "alert", "from", "to", "value"],
                   [(fmt.clock(r["ts"], True), r["alertname"], r["from_state"], r["to_state"],
                     right(fmt.dec(r["value"], 4) if r["value"] is not None else "–"))
                    for r in hist.iter_rows(named=True)])

    def on_table_row_highlighted(self, event: Table.RowHighlighted) -> None:
        if event.table.id == "alerts-table":
            event.stop()
            self._show_detail()

    def _show_detail(self) -> None:
        """The highlighted alert in full: every label, when it started, its summary."""
        alert = self.selected()
        detail = self.query_one("#alert-detail", Static)
        detail.display = alert is not None
        if alert is None:
            return
        labels = D.labels_of(alert["labels"])
        labels.pop("alertname", None)
        text = Text()
        text.append(str(alert["alertname"]), style="bold")
        text.append(f"  {alert['severity'] or ''}  since "
                    f"{fmt.clock(alert['active_since'], True)}\n", style="dim")
        text.append(" ".join(f"{k}={v}" for k, v in sorted(labels.items())))
        summary = D.labels_of(alert.get("annotations")).get("summary")
        if summary:
            text.append(f"\n{summary}", style="italic")
        detail.update(text)

    def selected(self) -> dict[str, Any] | None:
        fp = self.query_one("#alerts-table", Table).cursor_key
        if fp is None or self.data is None:
            return None
        rows = self.data.current.filter(pl.col("fingerprint") == fp).to_dicts()
        return rows[0] if rows else None

    def action_silence(self) -> None:
        alert = self.selected()
        if alert is None:
            self.notify("no alert selected", severity="warning", markup=False)
            return
        self.ask(SilenceRequested(alert))

    def action_expire(self) -> None:
        """The silence under the silences table's cursor when it has focus (tab moves
        there), else the first silence muting the selected alert."""
        if self.data is None or not self.data.silences.height:
            self.notify("no active silence to expire", severity="warning", markup=False)
            return
        table = self.query_one("#silences-table", Table)
        sid = table.cursor_key if table.has_focus else self._silence_of(self.selected())
        if sid is None:
            self.notify("the selected alert is not silenced: tab to the silences table",
                        severity="warning", markup=False)
            return
        rows = self.data.silences.filter(pl.col("silence_id") == sid).to_dicts()
        if rows:
            self.ask(ExpireRequested(rows[0]))

    def _silence_of(self, alert: dict[str, Any] | None) -> str | None:
        from ...analysis.alerts.engine import Silence

        if alert is None or not alert.get("silenced") or self.data is None:
            return None
        labels = {**D.labels_of(alert.get("labels")), "alertname": str(alert["alertname"])}
        for row in self.data.silences.iter_rows(named=True):
            try:
                if Silence.from_row(row).matches(labels):
                    return str(row["silence_id"])
            except (ValueError, KeyError):
                continue
        return None

    def set_filter(self, text: str) -> None:
        super().set_filter(text)
        self.request_refresh()

    def export_frame(self) -> pl.DataFrame | None:
        return self.data.current if self.data else None


def _matchers(raw: str | None) -> str:
    try:
        return " ".join(json.loads(raw or "[]"))
    except (ValueError, TypeError):
        return str(raw)
