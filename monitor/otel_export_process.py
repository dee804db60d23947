"""The OpenTelemetry bridge's export process: spans built and sent over OTLP HTTP away from the
capture process, so their per-span Python work never competes with the poller and the writer
for the collector's GIL.

The spans are encoded straight into OTLP protobuf requests (ExportTraceServiceRequest) and
POSTed over one kept-alive connection: the SDK's span objects, its batch processor and its
exporter's pure-Python encoder cost about 90 us of CPU per span, this about a sixth of it.

The bridge (otel_bridge.py) starts it with `python -c` (otel_bridge.LAUNCH: below the
collector's priority first, then this module's few imports, never the host's main module) and
sends each batch as two Arrow IPC streams (its decisions, their checks) over a pipe; END means
"no more", CAPTURE_OVER that the collector's capture is over. While capture runs the process
gets only CPU the collector leaves idle (SCHED_IDLE, where Linux has it); after CAPTURE_OVER it
builds the rest at its launch priority where the system lets it (root, or RLIMIT_NICE), else
still idle. Back over the same pipe go small tuples: ("ready",) once its imports are done,
("ack", decisions built, spans sent, spans dropped, CPU seconds the batch cost) after every
batch, ("log", level, message, fields) for the bridge to log in its process, ("done", sent,
dropped) at the end.

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

import http.client
import logging
import os
import sys
import time
from multiprocessing.connection import Connection
from typing import Any, Callable
from urllib.parse import urlsplit

import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

SERVICE_NAME = "tractatus-watch"
SCOPE = "tractatus_watch.otel_bridge"
BATCH = 10_000          # decisions the bridge reads and hands over at most per step
END = b""               # from the bridge: every batch is handed over, flush and exit
CAPTURE_OVER = b"!"     # from the bridge: capture is over, build the rest in the foreground
REQUEST_DECISIONS = 512  # decisions (with their checks) per OTLP request
RETRY_DOWN_S = 5.0      # while the receiver is down, one request is tried this often
EXPORT_TIMEOUT_S = 5.0  # one request's socket deadline

Report = Callable[[int, str, dict[str, Any]], None]
Row = dict[str, Any]

# The attributes, each with the column it comes from, by value type: the one definition both
# the encoder and decision_attributes/check_attributes read. A check's span also carries some
# of its decision's columns (CHECK_FROM_DECISION_*).
DECISION_STR = (("gen_ai.tool.name", "action_kind"), ("gen_ai.agent.id", "agent_id"),
                ("gen_ai.agent.name", "agent_id"), ("tractatus.run.id", "run_id"),
                ("tractatus.arm", "arm"), ("tractatus.mode", "mode"),
                ("tractatus.decision.id", "decision_id"), ("tractatus.verdict", "verdict"))
DECISION_INT = (("tractatus.round", "round"), ("tractatus.checks", "n_checks"),
                ("tractatus.latency_us", "latency_us"))
DECISION_BOOL = (("tractatus.executed", "executed"), ("tractatus.covered", "covered"),
                 ("tractatus.attempted", "attempted"), ("tractatus.evasion", "evasion"))
DECISION_OPTIONAL = (("tractatus.rollout.id", "rollout_id"),)  # only when set
CHECK_FROM_DECISION_STR = (("gen_ai.agent.id", "agent_id"), ("tractatus.mode", "mode"),
                           ("tractatus.run.id", "run_id"), ("tractatus.arm", "arm"),
                           ("tractatus.decision.id", "decision_id"))
CHECK_FROM_DECISION_INT = (("tractatus.round", "round"),)
CHECK_STR = (("tractatus.service", "service"), ("tractatus.rule.id", "rule_id"),
             ("tractatus.verdict", "verdict"))
CHECK_INT = (("tractatus.check.index", "idx"), ("tractatus.latency_us", "latency_us"))
CHECK_BOOL = (("tractatus.enforced", "enforced"),)
CHECK_OPTIONAL = (("tractatus.raw_verdict", "raw_verdict"), ("tractatus.boundary", "boundary"),
                  ("tractatus.severity", "severity"))


def decision_attributes(d: Row) -> dict[str, Any]:
    attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool"}
    attrs.update((key, d[col]) for key, col in DECISION_STR)
    attrs.update((key, int(d[col])) for key, col in DECISION_INT)
    attrs.update((key, bool(d[col])) for key, col in DECISION_BOOL)
    attrs.update((key, d[col]) for key, col in DECISION_OPTIONAL if d.get(col))
    return attrs


def check_attributes(d: Row, c: Row) -> dict[str, Any]:
    attrs: dict[str, Any] = {"gen_ai.operation.name": "run_guardrail"}
    attrs.update((key, d[col]) for key, col in CHECK_FROM_DECISION_STR)
    attrs.update((key, int(d[col])) for key, col in CHECK_FROM_DECISION_INT)
    attrs.update((key, c[col]) for key, col in CHECK_STR)
    attrs.update((key, int(c[col])) for key, col in CHECK_INT)
    attrs.update((key, bool(c[col])) for key, col in CHECK_BOOL)
    attrs.update((key, c[col]) for key, col in CHECK_OPTIONAL if c.get(col))
    return attrs


def resource(pid: int) -> Resource:
    """process.pid: the process that built the spans (this one, not the collector)."""
    res = Resource()
    res.attributes.add(key="service.name").value.string_value = SERVICE_NAME
    res.attributes.add(key="process.pid").value.int_value = pid
    return res


_EXECUTE_TOOL = KeyValue(key="gen_ai.operation.name")
_EXECUTE_TOOL.value.string_value = "execute_tool"
_RUN_GUARDRAIL = KeyValue(key="gen_ai.operation.name")
_RUN_GUARDRAIL.value.string_value = "run_guardrail"
_INTERNAL = Span.SpanKind.SPAN_KIND_INTERNAL


def _put(attributes: Any, columns: dict[str, list[Any]], i: int,
         strs: tuple[tuple[str, str], ...], ints: tuple[tuple[str, str], ...] = (),
         bools: tuple[tuple[str, str], ...] = (),
         optional: tuple[tuple[str, str], ...] = ()) -> None:
    """Row `i`'s attributes, set in place (no KeyValue/AnyValue built and copied per value)."""
    for key, col in strs:
        attributes.add(key=key).value.string_value = columns[col][i]
    for key, col in ints:
        attributes.add(key=key).value.int_value = columns[col][i]
    for key, col in bools:
        attributes.add(key=key).value.bool_value = columns[col][i]
    for key, col in optional:
        if columns[col][i]:
            attributes.add(key=key).value.string_value = columns[col][i]


def encode(decisions: pa.Table, checks: pa.Table, res: Resource) -> list[tuple[bytes, int]]:
    """The batch as OTLP requests of at most REQUEST_DECISIONS decisions each, with their
    span counts: a root span per decision (a trace of its own), a child span per check
    (checks ordered by decision, then idx, as the bridge reads them)."""
    d = decisions.to_pydict()  # one list per column: no dict per row
    c = checks.to_pydict()
    by_decision: dict[tuple[str, str], list[int]] = {}
    for j, key in enumerate(zip(c["run_id"], c["decision_id"]) if checks.num_rows else ()):
        by_decision.setdefault(key, []).append(j)
    requests: list[tuple[bytes, int]] = []
    for first in range(0, decisions.num_rows, REQUEST_DECISIONS):
        rows = range(first, min(first + REQUEST_DECISIONS, decisions.num_rows))
        kids = [by_decision.get(key, []) for key in
                zip(d["run_id"][rows.start:rows.stop], d["decision_id"][rows.start:rows.stop])]
        n_checks = sum(map(len, kids))
        # All ids of the request at once: 16-byte trace and 8-byte span id per decision,
        # an 8-byte span id per check.
        ids = memoryview(os.urandom(24 * len(rows) + 8 * n_checks))
        at_id = 0
        req = ExportTraceServiceRequest()
        resource_spans = req.resource_spans.add()
        resource_spans.resource.CopyFrom(res)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = SCOPE
        spans = scope_spans.spans
        for i, mine in zip(rows, kids):
            trace_id = ids[at_id:at_id + 16].tobytes()
            span_id = ids[at_id + 16:at_id + 24].tobytes()
            at_id += 24
            # Times (module doc): the decision ends at ts, its checks follow one another
            # from its start; it lasts at least as long as they do.
            end_ns = d["ts_us"][i] * 1000
            start_ns = end_ns - d["latency_us"][i] * 1000
            root = spans.add(trace_id=trace_id, span_id=span_id, kind=_INTERNAL,
                             name=f"execute_tool {d['action_kind'][i]}",
                             start_time_unix_nano=start_ns)
            root.attributes.append(_EXECUTE_TOOL)
            _put(root.attributes, d, i, DECISION_STR, DECISION_INT, DECISION_BOOL,
                 DECISION_OPTIONAL)
            at = start_ns
            for j in mine:
                took = c["latency_us"][j] * 1000
                child = spans.add(trace_id=trace_id, span_id=ids[at_id:at_id + 8].tobytes(),
                                  parent_span_id=span_id, kind=_INTERNAL,
                                  name=f"run_guardrail {c['service'][j]}",
                                  start_time_unix_nano=at, end_time_unix_nano=at + took)
                at_id += 8
                child.attributes.append(_RUN_GUARDRAIL)
                _put(child.attributes, d, i, CHECK_FROM_DECISION_STR, CHECK_FROM_DECISION_INT)
                _put(child.attributes, c, j, CHECK_STR, CHECK_INT, CHECK_BOOL, CHECK_OPTIONAL)
                at += took
            root.end_time_unix_nano = max(end_ns, at)
        requests.append((req.SerializeToString(), len(rows) + n_checks))
    return requests


class OtlpHttp:
    """POSTs requests to the receiver's URL over one kept-alive connection (http or https)."""

    def __init__(self, endpoint: str) -> None:
        url = urlsplit(endpoint)
        # A URL that is not http(s) fails every request (reported once), as a dead peer does.
        self.bad_url = url.scheme not in ("http", "https") or not url.hostname
        self.https = url.scheme == "https"
        self.host = url.hostname or ""
        self.port = url.port
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._conn: http.client.HTTPConnection | None = None
        self._used = False  # the connection has answered before (it may since have closed)

    def post(self, body: bytes) -> None:
        """One request; raises OSError/HTTPException, or RuntimeError on a non-2xx answer."""
        try:
            self._post(body)
        except (OSError, http.client.HTTPException):
            # A kept-alive connection the receiver closed while idle: once more on a new one.
            if not self._used:
                raise
            self.close()
            self._post(body)

    def _post(self, body: bytes) -> None:
        if self.bad_url:
            raise ValueError("not an http(s) URL")
        if self._conn is None:
            kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._conn = kind(self.host, self.port, timeout=EXPORT_TIMEOUT_S)
            self._used = False
        try:
            self._conn.request("POST", self.path, body,
                               {"Content-Type": "application/x-protobuf"})
            answer = self._conn.getresponse()
            answer.read()  # the whole answer, so the connection can be reused
        except BaseException:
            self.close()
            raise
        self._used = True
        if answer.will_close:
            self.close()
        if not 200 <= answer.status < 300:
            raise RuntimeError(f"HTTP {answer.status} {answer.reason}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class GuardedExporter:
    """The OTLP requests, reported once when they start failing and once when they recover;
    while failing, a request is tried every RETRY_DOWN_S and the others dropped at once
    (their spans counted)."""

    def __init__(self, inner: OtlpHttp, endpoint: str, report: Report) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self.report = report
        self.failing = False
        self._last_try = 0.0
        self.sent = 0
        self.dropped = 0

    def export(self, body: bytes, spans: int) -> bool:
        if self.failing and time.monotonic() - self._last_try < RETRY_DOWN_S:
            self.dropped += spans
            return False
        self._last_try = time.monotonic()
        try:
            self.inner.post(body)
        except Exception as exc:  # noqa: BLE001 - the request's failure is reported here
            self.dropped += spans
            if not self.failing:
                self.failing = True
                error = str(exc).strip().split("\n")[0] or type(exc).__name__
                self.report(logging.WARNING, "otlp: export failed; spans are dropped "
                            "until the receiver answers (capture goes on)",
                            {"endpoint": self.endpoint, "error": error})
            return False
        self.sent += spans
        if self.failing:
            self.failing = False
            self.report(logging.INFO, "otlp: the receiver answers again",
                        {"endpoint": self.endpoint})
        return True


def read_table(payload: bytes) -> pa.Table:
    with pa.ipc.open_stream(payload) as reader:
        return reader.read_all()


def background(on: bool) -> None:
    """Only idle CPU (on) or the launch priority back (off, where the system allows it)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE if on else os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux; or not allowed: the priority stays
        pass


def main(conn: Connection, endpoint: str) -> None:
    """The process's entry point: batches from `conn` until the empty message (each sent
    before its ack: one batch in flight, so a slow receiver slows the bridge), then the last
    counts."""
    def report(level: int, message: str, fields: dict[str, Any]) -> None:
        conn.send(("log", level, message, fields))

    http_out = OtlpHttp(endpoint)
    exporter = GuardedExporter(http_out, endpoint, report)
    res = resource(os.getpid())
    background(True)
    conn.send(("ready",))
    try:
        while True:
            try:
                decisions_ipc = conn.recv_bytes()
            except EOFError:  # the bridge's process ended: nothing more to send
                break
            if decisions_ipc == CAPTURE_OVER:
                background(False)
                continue
            if decisions_ipc == END:
                break
            cpu = time.process_time()
            decisions = read_table(decisions_ipc)
            for body, spans in encode(decisions, read_table(conn.recv_bytes()), res):
                exporter.export(body, spans)
            conn.send(("ack", decisions.num_rows, exporter.sent, exporter.dropped,
                       time.process_time() - cpu))
    finally:
        http_out.close()
        try:
            conn.send(("done", exporter.sent, exporter.dropped))
        except OSError:  # the bridge's end is gone: nobody to tell
            pass
        conn.close()


def run() -> None:
    """`python -c LAUNCH FD`: the pipe's end this process inherited; its first message is the
    receiver's URL (not on the command line, where every user's `ps` would show it)."""
    conn = Connection(int(sys.argv[1]))
    main(conn, conn.recv_bytes().decode())
