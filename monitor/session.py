"""One collection session: sources collected into a store by one writer, with source health, the
alert loop and an optional Quack server, all started and stopped together.

`collect`, `gateway`, `live` and the demo are this session with different parts switched on:
`collect` and `gateway` run it in the foreground until a signal (`run`), `live` and the demo
in the background next to the dashboard or the training job (`start` ... `close`).

The one flush rule: a file commits about 20 times a second (new rows show up fast, each commit is
cheap), a lake about once a second (each lake commit writes a Parquet file per table)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..analysis.alerts.alert_rules import AlertRuleSet
from ..analysis.alerts.engine import Notifier
from ..collectors.runner import RunResult, Source, run_sources
from ..storage.store import Store
from ..storage.writer import Writer
from .alert_loop import AlertLoop
from .bridges import Bridge, BridgeContext
from .health import SourceMonitor

log = logging.getLogger("tractatus_watch.collect")

FILE_FLUSH_S = 0.05
LAKE_FLUSH_S = 1.0


def flush_interval(store: Store) -> float:
    return LAKE_FLUSH_S if store.is_lake else FILE_FLUSH_S


@dataclass(frozen=True)
class ServePlan:
    """What --serve asked for, checked before the store is opened."""

    host: str
    port: int
    public: bool
    token: str | None  # None: generate one into the token file
    timeout_s: float = 30.0  # a served query's deadline


class CollectionSession:
    """Own the writer, the sources' thread(s), source health, the alert loop and the server."""

    def __init__(self, store: Store, sources: Sequence[Source], *, run_id: str,
                 alert_rules: AlertRuleSet | None = None, notifiers: Sequence[Notifier] = (),
                 alert_interval_s: float = 5.0, serve: ServePlan | None = None,
                 ended_by: str = "collector stopped",
                 flush_interval_s: float | None = None,
                 run_meta: Mapping[str, Any] | None = None,
                 bridges: Sequence[Bridge] = ()) -> None:
        self.store = store
        self.run_id = run_id
        # Written to run_events for every run collected, when the session closes: an ended
        # run is judged finished, not stalled (no-data alerts stay quiet). New data after the
        # end (a restarted collector) makes the run live again.
        self.ended_by = ended_by
        self.health = SourceMonitor()
        self.sources = [self.health.wrap(s) for s in sources]
        self.stop = threading.Event()
        # run_meta: the experiment every run collected joins (storage/experiments.py).
        self.writer = Writer(store, flush_interval_s=flush_interval(store)
                             if flush_interval_s is None else flush_interval_s,
                             run_meta=run_meta)
        self.alerts = (AlertLoop(store, alert_rules, notifiers, interval_s=alert_interval_s)
                       if alert_rules is not None else None)
        self.result = RunResult()
        # Started with the sources, closed after the writer's last commit (monitor/bridges.py).
        self.bridges = list(bridges)
        self._serve = serve
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def silence_writer(self) -> Any:
        """Where the dashboard stores a silence (None without the alert loop)."""
        return self.alerts.alert_store.add_silence if self.alerts is not None else None

    @property
    def errors(self) -> dict[str, str]:
        return self.result.errors

    def _start_parts(self) -> None:
        if self.alerts is not None:
            self.alerts.start()
        if self._serve is not None:
            self._server = _start_serving(self.store, self._serve)
        ctx = BridgeContext(self.store, lambda: self.writer.runs_written, self.health)
        for bridge in self.bridges:
            bridge.start(ctx)
        threading.Thread(target=self._watch_writer, name="tw-writer-watch", daemon=True).start()

    def _watch_writer(self, every_s: float = 0.2) -> None:
        # A source idle on a quiet input never calls a dead writer: without this the session
        # would run on, storing nothing; stopped, it ends with the writer's error.
        while not self.stop.wait(every_s):
            if self.writer.error is not None:
                log.error("the writer failed: stopping the sources", extra={"fields": {
                    "error": str(self.writer.error).strip().split("\n")[0]}})
                self.stop.set()
                return

    def run(self) -> RunResult:
        """Collect in the foreground until the sources end or SIGINT/SIGTERM, then close."""
        try:
            self._start_parts()
            self.result = run_sources(self.sources, self.writer, run_id=self.run_id,
                                      stop=self.stop, get_cursor=self.store.get_cursor)
        finally:
            self.close()
        return self.result

    def start(self) -> CollectionSession:
        """Collect in the background (a failing source does not stop the others)."""
        self._start_parts()
        self._thread = threading.Thread(target=self._collect, name="tw-collect", daemon=True)
        self._thread.start()
        return self

    def _collect(self) -> None:
        from ..storage.writer import WriterError

        try:
            self.result = run_sources(self.sources, self.writer, run_id=self.run_id,
                                      stop=self.stop, get_cursor=self.store.get_cursor,
                                      handle_signals=False, stop_on_error=False)
        except WriterError:
            return  # raised again by close(), as the command's one-line error

    def close(self) -> None:
        """Stop the sources (each finishes its pass), the server and the alert loop (one last
        evaluation, notifiers drained), then flush and close the writer (which raises
        WriterError if it failed)."""
        if self._closed:
            return
        self._closed = True
        self.stop.set()
        if self._thread is not None:
            self._thread.join(60)
        try:
            if self._server is not None:
                self._server.stop()
        finally:
            try:
                if self.alerts is not None:
                    self.alerts.stop()
                    _log_notifications(self.alerts.summaries())
            finally:
                self._mark_ended()
                try:
                    self.writer.close()
                finally:
                    self._close_bridges()

    def _close_bridges(self) -> None:
        for bridge in self.bridges:
            try:
                bridge.close()
            except Exception as exc:  # noqa: BLE001 - one bridge's failure stops no other
                log.error("a bridge failed to close", extra={"fields": {
                    "bridge": bridge.name, "error": str(exc).strip().split("\n")[0]}})

    def _mark_ended(self) -> None:
        from ..storage.batch import run_event_batch

        runs = sorted(self.writer.runs_written)
        if runs and self.writer.error is None:
            self.writer.submit(run_event_batch(runs, "ended", source=self.ended_by))


def _start_serving(store: Store, plan: ServePlan) -> Any:
    """Start the Quack server of a plan; logs where, never the token."""
    from ..storage.serve import serve_with_token_file

    server = serve_with_token_file(store, plan.host, plan.port, plan.token, public=plan.public,
                                   timeout_s=plan.timeout_s)
    log.info("serving the database read-only over Quack", extra={"fields": {
        "address": server.uri, "database": str(store.path),
        "token_file": str(server.token_file) if server.token_file else "(--token-file)",
        "query_timeout_s": plan.timeout_s}})
    if plan.public:
        log.warning("serving on a non-loopback address over plain HTTP; put a TLS reverse "
                    "proxy in front", extra={"fields": {"address": server.uri}})
    return server


def _log_notifications(summaries: list[dict[str, Any]]) -> None:
    """The end-of-run line of the notifiers: sent, failed and dropped per notifier (a warning
    when any notification was lost)."""
    if not summaries:
        return
    lost = any(s.get("failed") or s.get("dropped") for s in summaries)
    log.log(logging.WARNING if lost else logging.INFO, "collect finished: alert notifications",
            extra={"fields": {"notifiers": summaries}})


__all__ = ["CollectionSession", "ServePlan", "flush_interval"]
