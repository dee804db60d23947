"""The OpenTelemetry bridge against a real OTLP HTTP receiver on 127.0.0.1 (http.server, the
protobuf bodies decoded with the OTLP protos): one span per stored decision with the documented
attributes, a child span per check, built in a process of their own; a dead receiver or a
dead export process stops no capture."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)

from support.bridge_spool import new_spool, write_round
from tractatus_watch.collectors.spool_reader import SpoolReader
from tractatus_watch.monitor.bridges import PollingBridge
from tractatus_watch.monitor.otel_bridge import OtelBridge
from tractatus_watch.monitor.otel_export_process import (SCOPE, check_attributes,
                                                         decision_attributes, encode, resource)
from tractatus_watch.monitor.session import CollectionSession
from tractatus_watch.storage.store import Store

RUN = "otel-run"


class Receiver:
    """POST /v1/traces: every span received, as (resource attrs, span)."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                req = ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    for rs in req.resource_spans:
                        res = {a.key: value(a.value) for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            receiver.spans.extend((res, s) for s in ss.spans)
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attrs(span: Any) -> dict[str, Any]:
    return {a.key: value(a.value) for a in span.attributes}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def wait_until(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def stored(store: Store) -> tuple[dict[str, dict[str, Any]], list[tuple[Any, ...]]]:
    con = store.cursor()
    cols = ["decision_id", "agent_id", "round", "arm", "mode", "action_kind", "verdict",
            "executed", "n_checks", "latency_us"]
    decisions = {r[0]: dict(zip(cols, r)) for r in con.execute(
        f"SELECT {', '.join(cols)} FROM decisions WHERE run_id = ?", [RUN]).fetchall()}
    checks = con.execute("SELECT decision_id, idx, service, rule_id, verdict, enforced, "
                         "latency_us FROM checks WHERE run_id = ?", [RUN]).fetchall()
    return decisions, checks


def test_one_span_per_decision_and_a_child_per_check(tmp_path: Path,
                                                     receiver: Receiver) -> None:
    spool = new_spool(tmp_path / "spool")
    store = Store.open(tmp_path / "otel.duckdb")
    bridge = OtelBridge(receiver.url, interval_s=0.2)
    session = CollectionSession(store, [SpoolReader(tmp_path / "spool", settle_s=0.1,
                                                    poll_s=0.05)],
                                run_id=RUN, bridges=[bridge]).start()
    sent = write_round(spool, 0, 12)
    # Live: the spans of the first round arrive while the session runs.
    wait_until(lambda: sum(1 for _, s in receiver.spans if not s.parent_span_id) == sent)
    sent += write_round(spool, 1, 9)
    wait_until(lambda: bridge.spans == sent)
    session.close()
    decisions, checks = stored(store)
    assert len(decisions) == sent == 42

    roots = [(res, s) for res, s in receiver.spans if not s.parent_span_id]
    children = [s for _, s in receiver.spans if s.parent_span_id]
    assert len(roots) == len(decisions)  # exactly one span per decision, none twice
    by_id = {}
    for res, span in roots:
        assert res["service.name"] == "tractatus-watch"
        # Built and sent by the export process, not by the capture process.
        assert res["process.pid"] == bridge.pid != os.getpid()
        a = attrs(span)
        d = decisions[a["tractatus.decision.id"]]
        by_id[span.span_id] = d
        assert span.name == f"execute_tool {d['action_kind']}"
        assert a["gen_ai.operation.name"] == "execute_tool"
        assert a["gen_ai.tool.name"] == d["action_kind"]
        assert a["gen_ai.agent.id"] == a["gen_ai.agent.name"] == d["agent_id"]
        assert (a["tractatus.run.id"], a["tractatus.arm"], a["tractatus.round"],
                a["tractatus.mode"], a["tractatus.verdict"], a["tractatus.executed"]) == (
            RUN, d["arm"], d["round"], d["mode"], d["verdict"], d["executed"])
        assert a["tractatus.checks"] == d["n_checks"]
        # Its time: the decision's latency (its checks laid out inside it).
        assert span.end_time_unix_nano - span.start_time_unix_nano >= d["latency_us"] * 1000
    assert len(children) == len(checks)  # a child per stored check
    per_parent = Counter(s.parent_span_id for s in children)
    assert all(per_parent[sid] == d["n_checks"] for sid, d in by_id.items())
    want = Counter((c[0], c[1], c[2], c[3], c[4], c[5]) for c in checks)
    got = Counter()
    for span in children:
        a = attrs(span)
        parent = by_id[span.parent_span_id]
        assert span.name == f"run_guardrail {a['tractatus.service']}"
        assert a["gen_ai.operation.name"] == "run_guardrail"
        assert (a["tractatus.arm"], a["tractatus.round"], a["tractatus.mode"]) == (
            parent["arm"], parent["round"], parent["mode"])
        assert span.end_time_unix_nano - span.start_time_unix_nano == \
            a["tractatus.latency_us"] * 1000
        got[(a["tractatus.decision.id"], a["tractatus.check.index"], a["tractatus.service"],
             a["tractatus.rule.id"], a["tractatus.verdict"], a["tractatus.enforced"])] += 1
    assert got == want
    assert any(a["tractatus.verdict"] == "block" and a["tractatus.enforced"]
               for a in map(attrs, children))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_receiver_stops_no_capture(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    spool = new_spool(tmp_path / "spool")
    store = Store.open(tmp_path / "dead.duckdb")
    bridge = OtelBridge(f"http://127.0.0.1:{_closed_port()}/v1/traces", interval_s=0.1)
    session = CollectionSession(store, [SpoolReader(tmp_path / "spool", settle_s=0.1,
                                                    poll_s=0.05)],
                                run_id=RUN, bridges=[bridge]).start()
    sent = 0
    for rnd in range(3):
        sent += write_round(spool, rnd, 20)
    wait_until(lambda: bridge.spans == sent)
    started = time.monotonic()
    session.close()
    assert time.monotonic() - started < 20  # bounded: the flush does not wait on a dead peer
    decisions, checks = stored(store)
    assert len(decisions) == sent  # everything captured
    assert bridge.exporter is not None and bridge.exporter.sent == 0
    assert bridge.exporter.dropped == sent + len(checks)
    failures = [r for r in caplog.records if "export failed" in r.getMessage()]
    assert len(failures) == 1  # logged once, not once per batch


def test_a_dead_export_process_stops_no_capture(tmp_path: Path, receiver: Receiver,
                                               caplog: pytest.LogCaptureFixture) -> None:
    spool = new_spool(tmp_path / "spool")
    store = Store.open(tmp_path / "killed.duckdb")
    bridge = OtelBridge(receiver.url, interval_s=0.1)
    session = CollectionSession(store, [SpoolReader(tmp_path / "spool", settle_s=0.1,
                                                    poll_s=0.05)],
                                run_id=RUN, bridges=[bridge]).start()
    sent = write_round(spool, 0, 10)
    wait_until(lambda: bridge.spans == sent)
    assert bridge.process is not None
    bridge.process.kill()
    bridge.process.wait(10)
    later = write_round(spool, 1, 10) + write_round(spool, 2, 10)
    wait_until(lambda: bridge.lost == later)  # dropped and counted, the session goes on
    started = time.monotonic()
    session.close()
    assert time.monotonic() - started < 20
    decisions, _ = stored(store)
    assert len(decisions) == sent + later  # everything captured
    assert bridge.spans == sent
    gone = [r for r in caplog.records if "export process ended" in r.getMessage()]
    assert len(gone) == 1  # logged once, not once per batch


class Counting(PollingBridge):
    """A bridge that only counts its polls: proof that the session's poll budget is free."""

    name = "counting"

    def __init__(self) -> None:
        super().__init__(interval_s=0.05)
        self.polls = 0

    def poll(self, con: Any) -> None:
        self.polls += 1


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policy")
def test_a_stopped_export_process_holds_up_nothing(tmp_path: Path, receiver: Receiver) -> None:
    """While capture runs the export process gets idle CPU only, and the bridge never waits
    for it: stopped (as a starved process is), capture and the other bridges go on; at close
    the spans catch up, every decision once."""
    spool = new_spool(tmp_path / "spool")
    store = Store.open(tmp_path / "stopped.duckdb")
    bridge, counting = OtelBridge(receiver.url, interval_s=0.05), Counting()
    session = CollectionSession(store, [SpoolReader(tmp_path / "spool", settle_s=0.1,
                                                    poll_s=0.05)],
                                run_id=RUN, bridges=[bridge, counting]).start()
    sent = write_round(spool, 0, 10)
    wait_until(lambda: bridge.spans == sent)
    assert bridge.pid is not None
    assert os.sched_getscheduler(bridge.pid) == os.SCHED_IDLE
    os.kill(bridge.pid, signal.SIGSTOP)
    try:
        sent += write_round(spool, 1, 10)
        wait_until(lambda: len(stored(store)[0]) == sent)  # captured
        wait_until(lambda: bridge._in_flight > 0)  # a batch handed to the stopped process
        polls = counting.polls
        sent += write_round(spool, 2, 10)
        wait_until(lambda: len(stored(store)[0]) == sent)
        wait_until(lambda: counting.polls >= polls + 3)  # the other bridges poll on
    finally:
        os.kill(bridge.pid, signal.SIGCONT)
    session.close()
    roots = [s for _, s in receiver.spans if not s.parent_span_id]
    assert bridge.spans == len(roots) == sent == 60
    assert len({attrs(s)["tractatus.decision.id"] for s in roots}) == sent
    assert bridge.lost == 0


def test_encode_makes_a_parent_and_its_children() -> None:
    """encode() alone: one request, a root span per decision with a child per check, the
    children inside their parent's trace and laid out from its start."""
    decisions = pa.table({
        "run_id": ["r", "r"], "decision_id": ["d1", "d2"], "rollout_id": ["ro", None],
        "agent_id": ["a1", "a2"], "round": [3, 3], "arm": ["governed"] * 2,
        "mode": ["enforce"] * 2, "action_kind": ["publish", "read"],
        "verdict": ["block", "allow"], "executed": [False, True], "covered": [True, True],
        "attempted": [True, False], "evasion": [False, False], "n_checks": [2, 0],
        "latency_us": [50, 7], "ts_us": [1_000_000, 2_000_000]})
    checks = pa.table({
        "run_id": ["r", "r"], "decision_id": ["d1", "d1"], "idx": [0, 1],
        "service": ["boundary", "values"], "rule_id": ["R1", "R2"],
        "verdict": ["allow", "block"], "raw_verdict": [None, "deny"],
        "boundary": [None, None], "severity": [None, "high"], "enforced": [False, True],
        "latency_us": [10, 30]})
    [(body, n_spans)] = encode(decisions, checks, resource(4242))
    assert n_spans == 4
    req = ExportTraceServiceRequest.FromString(body)
    [rs] = req.resource_spans
    assert {a.key: value(a.value) for a in rs.resource.attributes} == {
        "service.name": "tractatus-watch", "process.pid": 4242}
    [ss] = rs.scope_spans
    assert ss.scope.name == SCOPE
    roots = {attrs(s)["tractatus.decision.id"]: s for s in ss.spans if not s.parent_span_id}
    kids = [s for s in ss.spans if s.parent_span_id]
    d1 = roots["d1"]
    assert d1.name == "execute_tool publish" and d1.kind == d1.SPAN_KIND_INTERNAL
    rows = decisions.to_pylist()
    assert attrs(d1) == decision_attributes(rows[0])
    assert attrs(roots["d2"]) == decision_attributes(rows[1])
    assert "tractatus.rollout.id" not in attrs(roots["d2"])
    assert (d1.start_time_unix_nano, d1.end_time_unix_nano) == (999_950_000, 1_000_000_000)
    assert [k.name for k in kids] == ["run_guardrail boundary", "run_guardrail values"]
    assert all(k.parent_span_id == d1.span_id and k.trace_id == d1.trace_id for k in kids)
    assert d1.trace_id != roots["d2"].trace_id and len(d1.trace_id) == 16
    assert [(k.start_time_unix_nano, k.end_time_unix_nano) for k in kids] == [
        (999_950_000, 999_960_000), (999_960_000, 999_990_000)]
    assert attrs(kids[1]) == check_attributes(rows[0], checks.to_pylist()[1])
    assert attrs(kids[1])["tractatus.severity"] == "high"
    assert "tractatus.boundary" not in attrs(kids[1])
