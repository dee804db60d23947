"""Alert evaluation next to a running collector: every few seconds, judge the stored data and
notify. It reads and writes through its own cursors, so it never blocks ingestion.

Several collectors may write one lake, some watching the same run. One of them at a time leads
(a lock held in the lake's catalog for as long as its process lives) and evaluates every rule
for every run; the others stand by and take over when the leader exits, starting from the alert
state it stored. So each rule and run is evaluated once, and nobody is notified twice."""

from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

from ..storage.alert_store import DuckDBAlertStore
from ..storage.store import Store
from ..analysis.alerts.engine import AlertEngine, Notifier, Transition
from ..analysis.alerts.alert_rules import AlertRuleSet
from .store_evaluator import evaluate_once

log = logging.getLogger(__name__)


class AlertLoop:
    LEAD = "alerts"

    def __init__(self, store: Store, rules: AlertRuleSet, notifiers: Sequence[Notifier] = (), *,
                 interval_s: float = 5.0, runs: Sequence[str] | None = None) -> None:
        self.alert_store = DuckDBAlertStore(store)
        self._rules = rules
        self._notifiers = list(notifiers)
        self._coordinator = store.coordinator()
        # Built on taking the lead, so it starts from the state the previous leader stored.
        self.engine: AlertEngine | None = None
        self.store = store
        self.interval_s = interval_s
        self.runs = list(runs) if runs else None
        self.transitions: list[Transition] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tw-alerts", daemon=True)

    def start(self) -> AlertLoop:
        self._thread.start()
        return self

    @property
    def leading(self) -> bool:
        return self.engine is not None

    def evaluate(self) -> list[Transition]:
        """Evaluate if this process leads (taking the lead if it is free); else nothing."""
        if self.engine is None:
            if not self._coordinator.try_lead(self.LEAD):
                return []
            self.engine = AlertEngine(self._rules, self.alert_store, notifiers=self._notifiers)
            log.info("alert evaluation: this collector leads")
        con = self.store.cursor()
        try:
            out = evaluate_once(self.engine, con, runs=self.runs)
        finally:
            con.close()
        self.transitions.extend(out)
        for t in out:
            log.info("alert %s: %s -> %s", t.alertname, t.from_state, t.to_state,
                     extra={"fields": {"alert": t.alertname, "from": t.from_state,
                                       "to": t.to_state, "labels": t.labels}})
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.evaluate()
            except Exception as exc:  # a failed evaluation must not stop collection
                log.warning("alert evaluation failed: %s", exc)

    def stop(self, notify_timeout_s: float = 10.0) -> None:
        """Stop, after one last evaluation of everything collected; then give the notifiers up
        to `notify_timeout_s` to deliver what they hold."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        try:
            if self.leading:
                self.evaluate()
        except Exception as exc:
            log.warning("final alert evaluation failed: %s", exc)
        finally:
            self._coordinator.close()  # hands the lead to a standby collector
            for notifier in self._notifiers:
                close = getattr(notifier, "close", None)
                if callable(close):
                    close(notify_timeout_s)

    def summaries(self) -> list[dict[str, Any]]:
        """What each notifier sent, failed and dropped (for the end-of-run line)."""
        # `summary` is optional: the Notifier protocol asks only for `notify`.
        return [s() for n in self._notifiers if callable(s := getattr(n, "summary", None))]
