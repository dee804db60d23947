"""Alert evaluation next to a running collector: every few seconds, judge the stored data and
notify. It reads and writes through its own cursors, so it never blocks ingestion."""

from __future__ import annotations

import logging
import threading
from typing import Sequence

from ...storage.alert_store import DuckDBAlertStore
from ...storage.store import Store
from .engine import AlertEngine, Notifier, Transition
from .rules import RuleSet
from .store_evaluator import evaluate_once

log = logging.getLogger(__name__)


class AlertLoop:
    def __init__(self, store: Store, rules: RuleSet, notifiers: Sequence[Notifier] = (), *,
                 interval_s: float = 5.0, runs: Sequence[str] | None = None) -> None:
        self.engine = AlertEngine(rules, DuckDBAlertStore(store), notifiers=list(notifiers))
        self.store = store
        self.interval_s = interval_s
        self.runs = list(runs) if runs else None
        self.transitions: list[Transition] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tw-alerts", daemon=True)

    def start(self) -> AlertLoop:
        self._thread.start()
        return self

    def evaluate(self) -> list[Transition]:
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

    def stop(self) -> None:
        """Stop, after one last evaluation of everything collected."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        try:
            self.evaluate()
        except Exception as exc:
            log.warning("final alert evaluation failed: %s", exc)
