"""Governance next to the agent traces: each stored decision as an OpenTelemetry span, each of
its checks as a child span, sent over OTLP HTTP (opentelemetry-sdk, BatchSpanProcessor).

Spans are built from what the writer committed (decisions and checks the store holds), after
the fact, with their own times: a decision's `ts` is taken when its checks are done, so its span
ends at `ts` and starts `latency_us` earlier; its checks follow one another from that start in
their order, each lasting its own `latency_us`.

Attributes (README, "OpenTelemetry"): the GenAI conventions where they define one (the decision
is the `execute_tool` operation it governs: gen_ai.operation.name, gen_ai.tool.name = the
action kind, gen_ai.agent.id/name); the guardrail checks are `run_guardrail` child spans, as in
the open guardrail proposal (semantic-conventions-genai #427, unreleased), whose attributes we
keep under our own `tractatus.*` names until it is released: rule id, verdict, enforced, mode,
service, run, arm, round.

New decisions are those committed since the bridge started (the table's `rowid`, increasing
with every append; rows are never updated or deleted). A dead receiver never stops capture:
the bridge only reads, export failures are logged once (and once more when it recovers), and
while the receiver is down batches are dropped at once instead of waiting out the timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Sequence

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from ..storage.transaction import transaction
from .bridges import BridgeContext, PollingBridge

log = logging.getLogger("tractatus_watch.bridges")

SERVICE_NAME = "tractatus-watch"
SCOPE = "tractatus_watch.otel_bridge"
BATCH = 2000            # decisions read and sent per step of a poll
RETRY_DOWN_S = 5.0      # while the receiver is down, one batch is tried this often
EXPORT_TIMEOUT_S = 5.0  # one export's deadline (the exporter's own retries included)
FLUSH_TIMEOUT_MS = 10_000

_DECISIONS = """
    SELECT rowid AS pos, run_id, decision_id, rollout_id, agent_id, round, arm, mode,
           action_kind, verdict, executed, covered, attempted, evasion, n_checks, latency_us,
           epoch_us(ts) AS ts_us
    FROM decisions WHERE rowid > ? ORDER BY rowid LIMIT ?"""
# The checks of a batch of decisions: a check has its decision's ts, so the ts window keeps
# the scan to the batch's row groups; rowid to what was appended after the bridge started.
_CHECKS = """
    SELECT c.run_id, c.decision_id, c.idx, c.service, c.rule_id, c.verdict, c.raw_verdict,
           c.boundary, c.severity, c.enforced, c.latency_us
    FROM checks c SEMI JOIN _tw_otel_batch b USING (run_id, decision_id)
    WHERE c.rowid > ? AND c.ts BETWEEN make_timestamp(?) AND make_timestamp(?)
    ORDER BY c.run_id, c.decision_id, c.idx"""


def decision_attributes(d: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": d["action_kind"],
        "gen_ai.agent.id": d["agent_id"],
        "gen_ai.agent.name": d["agent_id"],
        "tractatus.run.id": d["run_id"],
        "tractatus.arm": d["arm"],
        "tractatus.round": int(d["round"]),
        "tractatus.mode": d["mode"],
        "tractatus.decision.id": d["decision_id"],
        "tractatus.verdict": d["verdict"],
        "tractatus.executed": bool(d["executed"]),
        "tractatus.covered": bool(d["covered"]),
        "tractatus.attempted": bool(d["attempted"]),
        "tractatus.evasion": bool(d["evasion"]),
        "tractatus.checks": int(d["n_checks"]),
        "tractatus.latency_us": int(d["latency_us"]),
    }
    if d.get("rollout_id"):
        attrs["tractatus.rollout.id"] = d["rollout_id"]
    return attrs


def check_attributes(d: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "run_guardrail",
        "gen_ai.agent.id": d["agent_id"],
        "tractatus.service": c["service"],
        "tractatus.rule.id": c["rule_id"],
        "tractatus.verdict": c["verdict"],
        "tractatus.enforced": bool(c["enforced"]),
        "tractatus.mode": d["mode"],
        "tractatus.run.id": d["run_id"],
        "tractatus.arm": d["arm"],
        "tractatus.round": int(d["round"]),
        "tractatus.decision.id": d["decision_id"],
        "tractatus.check.index": int(c["idx"]),
        "tractatus.latency_us": int(c["latency_us"]),
    }
    for key in ("raw_verdict", "boundary", "severity"):
        if c.get(key):
            attrs[f"tractatus.{key}"] = c[key]
    return attrs


class _GuardedExporter(SpanExporter):
    """The OTLP exporter, logged once when it starts failing and once when it recovers; while
    failing, a batch is tried every RETRY_DOWN_S and the others dropped at once (counted)."""

    def __init__(self, inner: SpanExporter, endpoint: str) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self.failing = False
        self._last_try = 0.0
        self.sent = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        if self.failing and time.monotonic() - self._last_try < RETRY_DOWN_S:
            self.dropped += len(spans)
            return SpanExportResult.FAILURE
        self._last_try = time.monotonic()
        error = ""
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # noqa: BLE001 - the exporter's failure is reported here
            result, error = SpanExportResult.FAILURE, str(exc).strip().split("\n")[0]
        with self._lock:
            if result == SpanExportResult.SUCCESS:
                self.sent += len(spans)
                if self.failing:
                    self.failing = False
                    log.info("otlp: the receiver answers again", extra={"fields": {
                        "endpoint": self.endpoint}})
            else:
                self.dropped += len(spans)
                if not self.failing:
                    self.failing = True
                    log.warning("otlp: export failed; spans are dropped until the receiver "
                                "answers (capture goes on)", extra={"fields": {
                                    "endpoint": self.endpoint, "error": error or "no answer"}})
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _Quiet(logging.Filter):
    """Drops the exporter's own warning and error lines (one per failed batch, each retry):
    the exporter wrapper reports a failure once instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


_EXPORTER_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                     "opentelemetry.exporter.otlp.proto.http._common",
                     "opentelemetry.exporter.otlp.proto.http")


class OtelBridge(PollingBridge):
    name = "otel"

    def __init__(self, endpoint: str, interval_s: float = 1.0) -> None:
        super().__init__(interval_s)
        self.endpoint = endpoint
        self.provider: Any = None
        self.tracer: Any = None
        self.exporter: _GuardedExporter | None = None
        self._decision_pos = -1
        self._check_pos = -1
        self.spans = 0  # decisions sent (with their checks)

    def start(self, ctx: BridgeContext) -> None:
        for name in _EXPORTER_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, _Quiet) for f in logger.filters):
                logger.addFilter(_Quiet())
        self.exporter = _GuardedExporter(
            OTLPSpanExporter(endpoint=self.endpoint, timeout=EXPORT_TIMEOUT_S), self.endpoint)
        # Our own provider, not the global one: a host process's tracing is left alone.
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        self.provider.add_span_processor(BatchSpanProcessor(
            self.exporter, max_queue_size=32 * BATCH, max_export_batch_size=512,
            schedule_delay_millis=1000))
        self.tracer = self.provider.get_tracer(SCOPE)
        # Only what this session stores: the decisions already there were sent before.
        con = ctx.store.cursor()
        try:
            self._decision_pos, self._check_pos = con.execute(
                "SELECT (SELECT coalesce(max(rowid), -1) FROM decisions), "
                "(SELECT coalesce(max(rowid), -1) FROM checks)").fetchall()[0]
        finally:
            con.close()
        super().start(ctx)

    def poll(self, con: Any) -> None:
        while self._step(con) == BATCH:
            # Backpressure while the receiver keeps up: wait for the batch to go out.
            if self.exporter is not None and not self.exporter.failing:
                self.provider.force_flush(FLUSH_TIMEOUT_MS)

    def _step(self, con: Any) -> int:
        with transaction(con):
            decisions = con.execute(_DECISIONS, [self._decision_pos, BATCH]).to_arrow_table()
            if not decisions.num_rows:
                return 0
            con.register("_tw_otel_batch", decisions.select(["run_id", "decision_id"]))
            try:
                ts = decisions.column("ts_us").to_pylist()
                checks = con.execute(_CHECKS, [self._check_pos, min(ts), max(ts)]
                                     ).to_arrow_table().to_pylist()
            finally:
                con.unregister("_tw_otel_batch")
        by_decision: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for c in checks:
            by_decision.setdefault((c["run_id"], c["decision_id"]), []).append(c)
        rows = decisions.to_pylist()
        for d in rows:
            self._send(d, by_decision.get((d["run_id"], d["decision_id"]), []))
        self._decision_pos = rows[-1]["pos"]
        return len(rows)

    def _send(self, d: dict[str, Any], checks: list[dict[str, Any]]) -> None:
        end_ns = int(d["ts_us"]) * 1000
        start_ns = end_ns - int(d["latency_us"]) * 1000
        span = self.tracer.start_span(f"execute_tool {d['action_kind']}", start_time=start_ns,
                                      attributes=decision_attributes(d),
                                      kind=trace.SpanKind.INTERNAL)
        parent = trace.set_span_in_context(span)
        at = start_ns
        for c in checks:
            took = int(c["latency_us"]) * 1000
            child = self.tracer.start_span(f"run_guardrail {c['service']}", context=parent,
                                           start_time=at, attributes=check_attributes(d, c))
            child.end(end_time=at + took)
            at += took
        span.end(end_time=max(end_ns, at))
        self.spans += 1

    def finish(self) -> None:
        if self.provider is None:
            return
        self.provider.force_flush(FLUSH_TIMEOUT_MS)
        self.provider.shutdown()
        assert self.exporter is not None
        log.info("otlp: decisions sent as spans", extra={"fields": {
            "endpoint": self.endpoint, "decisions": self.spans, "spans_exported":
            self.exporter.sent, "spans_dropped": self.exporter.dropped}})


__all__ = ["OtelBridge", "check_attributes", "decision_attributes"]
