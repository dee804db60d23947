"""A demo session: the training job, the capture into our store, and alert evaluation after
every round, wired together. The CLI runs it headless or under the dashboard."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..analysis.alerts.engine import AlertEngine, Transition
from ..analysis.alerts.notify import CallbackNotifier
from ..analysis.alerts.alert_rules import AlertRuleSet, load_default_alert_rules
from ..monitor.session import CollectionSession
from ..monitor.store_evaluator import evaluate_once
from ..storage.alert_store import DuckDBAlertStore
from ..storage.experiments import update_run_meta
from ..storage.store import Store
from ..storage.writer import Writer
from .job import DemoJob, RoundResult
from .scenarios import Scenario

log = logging.getLogger(__name__)


@dataclass
class FiredAlert:
    alertname: str
    labels: dict[str, str]
    round: int            # the training round after which it fired
    severity: str


@dataclass
class DemoSession:
    store: Store
    scenario: Scenario
    seed: int
    run_id: str
    speed: float | None = None
    agl_url: str | None = None        # an external gateway (captured by the poller)
    agl_key: str | None = None
    # The model the external gateway proxies (its `default_proxy.model_name`; None: Agent
    # Lightning's default). The in-process gateway's is read from its configuration.
    model_name: str | None = None
    rules: AlertRuleSet | None = None
    # The writer's longest wait before a commit (None: the store's rule). Each round is
    # flushed once it is complete anyway; headless, nobody reads the store in between.
    flush_interval_s: float | None = None
    # The demo's own gateway in a process of its own (collectors/gateway_process.py), so that
    # serving requests does not share this process's interpreter lock with the trainer, the
    # agents and the writer; False: the tap in this process (GatewayTap).
    gateway_process: bool = True
    # The run's experiment and what makes it a replicate (storage/experiments.py).
    run_meta: dict[str, Any] | None = None
    on_round: Callable[[RoundResult], None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    fired: list[FiredAlert] = field(default_factory=list)
    rounds: list[RoundResult] = field(default_factory=list)
    source_health: dict[str, Any] = field(default_factory=dict)

    # Run state, for the status line and the per-round wait.
    _started: float | None = field(default=None, init=False)
    _last_round_at: float | None = field(default=None, init=False)
    _expected: int = field(default=0, init=False)   # decisions the store must hold by now
    _round: int = field(default=0, init=False)
    _tap: Any = field(default=None, init=False)

    def run(self) -> list[RoundResult]:
        """Train every round, capturing as we go; returns the rounds' results."""
        self._started = time.monotonic()
        spool = tempfile.mkdtemp(prefix="tw-demo-hooks-")
        self._engine = AlertEngine(self.rules or load_default_alert_rules(),
                                   DuckDBAlertStore(self.store),
                                   notifiers=[CallbackNotifier(self._alerted)])
        model_name = self.model_name
        if self.agl_url is None:
            from ..collectors.gateway_process import GatewayProcess
            from ..collectors.gateway_tap import GatewayTap, server_config

            key: str | None = secrets.token_urlsafe(24)  # the in-process gateway's, never shown
            config = server_config(host="127.0.0.1", port=0, key=key)
            model_name = str(config["default_proxy"]["model_name"])
            # Live, records reach the store as they come; headless (a writer that commits
            # every flush_interval_s) no sooner than the writer takes them: fewer, larger
            # deliveries, each vetted and converted once. A judged round asks for its own.
            tap = GatewayProcess if self.gateway_process else GatewayTap
            capture: Any = tap(lambda _records: None, run_id=self.run_id,
                               batch_interval_s=min(0.25, self.flush_interval_s or 0.01),
                               config=config)
            self._tap = capture
        else:
            from ..collectors.poller import Poller

            key = self.agl_key
            capture = Poller(self.agl_url, key=self.agl_key, run_id=self.run_id,
                             interval_s=0.1)
        # Alerts are judged here, after each complete round, so the session runs none.
        session = CollectionSession(self.store, [capture], run_id=self.run_id,
                                    ended_by="demo finished",
                                    flush_interval_s=self.flush_interval_s,
                                    run_meta=self.run_meta).start()
        try:
            base_url = self.agl_url or self._wait_listening(capture, session)
            self.source_health = {"name": capture.source, "state": "connected"}
            hooks = _load_hooks(self.run_id, spool)
            job = DemoJob(self.scenario, self.run_id, self.seed, base_url, key or None,
                          hooks=hooks, on_round=lambda r: self._after_round(r, session.writer),
                          stop=self.stop, speed=self.speed, model_name=model_name)
            results = job.run()
        finally:
            session.close()
            shutil.rmtree(spool, ignore_errors=True)
            self.source_health["state"] = "stopped"
        if self.run_meta is not None:
            # What only the environment knows, for `research` (q5): the capture is closed, so
            # nothing else writes the run's row.
            con = self.store.cursor()
            try:
                update_run_meta(con, self.run_id, {"crowding_loss": job.crowding_losses()})
            finally:
                con.close()
        return results

    @staticmethod
    def _wait_listening(tap: Any, session: CollectionSession, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while not tap.listening.wait(0.05):
            if session.errors or time.monotonic() > deadline:
                why = "; ".join(session.errors.values()) or f"not listening after {timeout_s:g} s"
                raise RuntimeError(f"the demo's gateway did not start: {why}")
        return str(tap.url)

    def _after_round(self, result: RoundResult, writer: Writer) -> None:
        """Judge the round once it is in the store: alerts are evaluated on complete rounds
        only, so the same seed fires the same alerts. In long runs every k-th round is judged
        (and the last), since each evaluation reads the whole per-round history; the rounds in
        between go on without waiting for the store, since the gateway tap has seen all of
        them before the trainer deletes anything. A poller reads the gateway from outside:
        with it, every round waits until it is stored, so that no rollout is deleted unread."""
        self._expected += result.decisions
        self._round = result.round
        every = max(1, self.scenario.rounds // 100)
        judged = (result.round % every == every - 1
                  or result.round == self.scenario.rounds - 1)
        if judged or self._tap is None:
            con = self.store.cursor()
            try:
                self._wait_stored(con, writer)
                if judged:
                    evaluate_once(self._engine, con, runs=[self.run_id])
            finally:
                con.close()
        self.rounds.append(result)
        self._last_round_at = time.time()
        if self.on_round is not None:
            self.on_round(result)

    def _wait_stored(self, con: Any, writer: Writer, timeout_s: float = 60.0) -> None:
        """Wait until the store holds every decision made so far."""
        deadline = time.monotonic() + timeout_s
        if self._tap is not None:
            self._tap.deliver_now()
        while True:
            # The tap counts what it handed to the writer; only then is a flush worth it.
            if self._tap is None or self._tap.handed_decisions >= self._expected:
                writer.flush()
                stored = con.execute("SELECT coalesce(sum(actions), 0) FROM rollup_round "
                                     "WHERE run_id = ?", [self.run_id]).fetchall()[0][0]
                if stored >= self._expected:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"capture fell behind: {self._expected} decisions expected "
                                   f"in the store after {timeout_s:g} s")
            time.sleep(0.005)

    def health(self) -> list[dict[str, Any]]:
        """The capture source's health for the dashboard's status line."""
        info = dict(self.source_health)
        if not info:
            return []
        done = len(self.rounds)
        elapsed = max(1e-9, time.monotonic() - self._started) if self._started else None
        info["rate"] = self._expected / elapsed if elapsed else None
        info["last_update"] = self._last_round_at
        info["detail"] = f"training round {done}/{self.scenario.rounds}"
        return [info]

    def _alerted(self, transitions: list[Transition]) -> None:
        for t in transitions:
            if t.to_state == "firing":
                self.fired.append(FiredAlert(t.alertname, dict(t.labels), self._round,
                                             t.severity or ""))


def _load_hooks(run_id: str, spool: str) -> Any:
    """Our hooks file, loaded the way Agent Lightning loads it: it stamps each rollout's round
    and run (its spool copy of the records goes to a scratch folder: the demo captures through
    the gateway)."""
    from agentlightning.hooks import load_hooks

    from ..governance import hooks_path

    saved = {k: os.environ.get(k) for k in ("TRACTATUS_WATCH_RUN_ID", "TRACTATUS_WATCH_SPOOL")}
    os.environ["TRACTATUS_WATCH_RUN_ID"] = run_id
    os.environ["TRACTATUS_WATCH_SPOOL"] = spool
    try:
        return load_hooks(str(hooks_path()))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
