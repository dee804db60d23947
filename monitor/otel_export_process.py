"""The OpenTelemetry bridge's export process: spans built and sent over OTLP HTTP away from the
capture process, so the SDK's per-span Python work never competes with the poller and the
writer for the collector's GIL.

The bridge (otel_bridge.py) starts it with `python -c` (otel_bridge.LAUNCH: below the
collector's priority first, then this module's few imports, never the host's main module) and
sends each batch as two Arrow IPC streams (its decisions, their checks) over a pipe; an empty
message means "no more". Back over the same pipe go small tuples: ("ready",) once its imports
are done, ("ack", decisions built, spans sent, spans dropped) after every batch, ("log", level,
message, fields) for the bridge to log in its process, ("done", sent, dropped) at the end.

Times (README, "OpenTelemetry"): a decision's `ts` is taken when its checks are done, so its
span ends at `ts` and starts `latency_us` earlier; its checks follow one another from that
start in their order, each lasting its own `latency_us`.

Attributes: the GenAI conventions where they define one (the decision is the `execute_tool`
operation it governs: gen_ai.operation.name, gen_ai.tool.name = the action kind,
gen_ai.agent.id/name); the guardrail checks are `run_guardrail` child spans, as in the open
guardrail proposal (semantic-conventions-genai #427, unreleased), whose attributes we keep
under our own `tractatus.*` names until it is released: rule id, verdict, enforced, mode,
service, run, arm, round.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import sys
from multiprocessing.connection import Connection
from typing import Any, Callable, Sequence

import pyarrow as pa
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

SERVICE_NAME = "tractatus-watch"
SCOPE = "tractatus_watch.otel_bridge"
BATCH = 2000            # decisions the bridge reads and hands over per step
RETRY_DOWN_S = 5.0      # while the receiver is down, one batch is tried this often
EXPORT_TIMEOUT_S = 5.0  # one export's deadline (the exporter's own retries included)
FLUSH_TIMEOUT_MS = 10_000

Report = Callable[[int, str, dict[str, Any]], None]


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


class GuardedExporter(SpanExporter):
    """The OTLP exporter, reported once when it starts failing and once when it recovers;
    while failing, a batch is tried every RETRY_DOWN_S and the others dropped at once
    (counted)."""

    def __init__(self, inner: SpanExporter, endpoint: str, report: Report) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self.report = report
        self.failing = False
        self._last_try = 0.0
        self.sent = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        if self.failing and time.monotonic() - self._last_try < RETRY_DOWN_S:
            with self._lock:
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
                    self.report(logging.INFO, "otlp: the receiver answers again",
                                {"endpoint": self.endpoint})
            else:
                self.dropped += len(spans)
                if not self.failing:
                    self.failing = True
                    self.report(logging.WARNING, "otlp: export failed; spans are dropped "
                                "until the receiver answers (capture goes on)",
                                {"endpoint": self.endpoint, "error": error or "no answer"})
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _Quiet(logging.Filter):
    """Drops the exporter's own warning and error lines (one per failed batch, each retry):
    the guarded exporter reports a failure once instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


_EXPORTER_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                     "opentelemetry.exporter.otlp.proto.http._common",
                     "opentelemetry.exporter.otlp.proto.http")


def build(tracer: Any, decisions: list[dict[str, Any]], checks: list[dict[str, Any]]) -> None:
    """A span per decision, a child span per check (checks ordered by decision, then idx)."""
    by_decision: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in checks:
        by_decision.setdefault((c["run_id"], c["decision_id"]), []).append(c)
    for d in decisions:
        end_ns = int(d["ts_us"]) * 1000
        start_ns = end_ns - int(d["latency_us"]) * 1000
        span = tracer.start_span(f"execute_tool {d['action_kind']}", start_time=start_ns,
                                 attributes=decision_attributes(d),
                                 kind=trace.SpanKind.INTERNAL)
        parent = trace.set_span_in_context(span)
        at = start_ns
        for c in by_decision.get((d["run_id"], d["decision_id"]), []):
            took = int(c["latency_us"]) * 1000
            child = tracer.start_span(f"run_guardrail {c['service']}", context=parent,
                                      start_time=at, attributes=check_attributes(d, c))
            child.end(end_time=at + took)
            at += took
        span.end(end_time=max(end_ns, at))


def read_table(payload: bytes) -> list[dict[str, Any]]:
    with pa.ipc.open_stream(payload) as reader:
        rows: list[dict[str, Any]] = reader.read_all().to_pylist()
    return rows


def main(conn: Connection, endpoint: str) -> None:
    """The process's entry point: batches from `conn` until the empty message, then a flush
    and the last counts."""
    send_lock = threading.Lock()  # the processor's export thread reports too

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(message)

    def report(level: int, message: str, fields: dict[str, Any]) -> None:
        send(("log", level, message, fields))

    for name in _EXPORTER_LOGGERS:
        logging.getLogger(name).addFilter(_Quiet())
    exporter = GuardedExporter(OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_S),
                               endpoint, report)
    # process.pid: the process that built the spans (this one, not the collector).
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME,
                                                        "process.pid": os.getpid()}))
    provider.add_span_processor(BatchSpanProcessor(
        exporter, max_queue_size=32 * BATCH, max_export_batch_size=512,
        schedule_delay_millis=1000))
    tracer = provider.get_tracer(SCOPE)
    send(("ready",))
    try:
        while True:
            try:
                decisions_ipc = conn.recv_bytes()
            except EOFError:  # the bridge's process ended: flush what we have
                break
            if not decisions_ipc:
                break
            decisions = read_table(decisions_ipc)
            build(tracer, decisions, read_table(conn.recv_bytes()))
            # Backpressure while the receiver keeps up: a full batch goes out before the ack,
            # so the processor's queue never overflows.
            if len(decisions) >= BATCH and not exporter.failing:
                provider.force_flush(FLUSH_TIMEOUT_MS)
            send(("ack", len(decisions), exporter.sent, exporter.dropped))
    finally:
        provider.force_flush(FLUSH_TIMEOUT_MS)
        provider.shutdown()
        try:
            send(("done", exporter.sent, exporter.dropped))
        except OSError:  # the bridge's end is gone: nobody to tell
            pass
        conn.close()


def run() -> None:
    """`python -c LAUNCH FD`: the pipe's end this process inherited; its first message is the
    receiver's URL (not on the command line, where every user's `ps` would show it)."""
    conn = Connection(int(sys.argv[1]))
    main(conn, conn.recv_bytes().decode())
