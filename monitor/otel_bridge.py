"""Governance next to the agent traces: each stored decision as an OpenTelemetry span, each of
its checks as a child span, sent over OTLP HTTP (protobuf, encoded by otel_export_process.py).

Spans are built from what the writer committed (decisions and checks the store holds), after
the fact, with their own times and attributes (otel_export_process.py). This bridge keeps only
the watermark and the reads (two DuckDB queries per batch, returning Arrow tables, run in C);
the spans are built and exported in a child process of their own, on CPU the collector leaves
idle, so the per-span Python work never competes with the poller and the writer for the
collector's GIL or cores. Each batch goes over a pipe as Arrow IPC. While capture runs, a poll
hands over one batch once the previous one is built and never waits for it: a slow receiver or
a starved export process makes the spans lag (logged once), never the capture or the other
bridges. At close, every batch left is handed over, each after the previous one is built,
within CLOSE_TIMEOUT_S.

New decisions are those committed since the bridge started (the table's `rowid`, increasing
with every append; rows are never updated or deleted). A dead receiver never stops capture:
export failures are logged once (and once more when it recovers), and while the receiver is
down batches are dropped at once instead of waiting out the timeout. A dead export process
never hangs the collector: its batches are dropped, counted, and logged once; one that has not
finished by the close deadline is killed.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..storage.transaction import transaction
from .bridges import BridgeContext, PollBudget, PollingBridge
from .otel_export_process import (BATCH, CAPTURE_OVER, END, check_attributes,
                                  decision_attributes)

log = logging.getLogger("tractatus_watch.bridges")

SPAN_DUTY = 0.10        # the share of a core the spans may take: reads and building
LAG_NOTE_S = 30.0       # a batch not built by then while capture runs: logged once
READY_TIMEOUT_S = 15.0  # the export process's start (its imports)
CLOSE_TIMEOUT_S = 60.0  # at close: the batches left, built and sent, and the process's exit
NICE = 10  # the export process's priority below the collector's, from its start
# Niced before its imports, then (otel_export_process.background) only idle CPU while capture
# runs: a capture thread that wakes up takes the core at once, where `nice` alone still takes a
# share of a busy core. The spans are read from the store: late loses nothing. Not
# multiprocessing's spawn: that imports the host's main module again (the CLI, a benchmark).
LAUNCH = ("import os\n"
          f"if hasattr(os, 'nice'): os.nice({NICE})\n"
          "from tractatus_watch.monitor.otel_export_process import run\n"
          "run()")

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


@dataclass
class ExportCounts:
    """Spans the export process sent and dropped (as it last reported)."""

    sent: int = 0
    dropped: int = 0


def _ipc(table: pa.Table) -> Any:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


class OtelBridge(PollingBridge):
    name = "otel"

    def __init__(self, endpoint: str, interval_s: float = 0.25) -> None:
        super().__init__(interval_s)
        # A budget of its own: its work grows with the decisions stored, where the others'
        # polls are snapshots; sharing theirs, it would fall behind a training job's rate.
        self._budget = PollBudget(SPAN_DUTY)
        self.endpoint = endpoint
        self.exporter: ExportCounts | None = None
        self.process: subprocess.Popen[bytes] | None = None  # the export process
        self._conn: Connection | None = None
        self._in_flight = 0  # decisions handed over and not yet built (one batch at most)
        self._ready = False
        self._gone = False  # the export process ended or is stuck: batches are dropped
        self._decision_pos = -1
        self._check_pos = -1
        self._handed_at = 0.0  # when the batch in flight was handed over
        self._built_cost = 0.0  # CPU the export process spent on batches, not yet charged
        self._lag_noted = False
        self._deadline: float | None = None  # of the last poll and flush, once closing
        self.spans = 0  # decisions built as spans (with their checks) by the export process
        self.lost = 0   # decisions dropped because the export process was gone

    def budget(self) -> PollBudget:
        return self._budget

    def poll_cost(self, thread_s: float) -> float:
        """The reads, and the export process's CPU for the batches built since the last poll:
        idle-priority CPU still slows capture (the cores share caches and memory)."""
        cost, self._built_cost = thread_s + self._built_cost, 0.0
        return cost

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self, ctx: BridgeContext) -> None:
        # Only what this session stores: the decisions already there were sent before.
        con = ctx.store.cursor()
        try:
            self._decision_pos, self._check_pos = con.execute(
                "SELECT (SELECT coalesce(max(rowid), -1) FROM decisions), "
                "(SELECT coalesce(max(rowid), -1) FROM checks)").fetchall()[0]
        finally:
            con.close()
        self.exporter = ExportCounts()
        ours, theirs = socket.socketpair()
        with theirs:
            # The same import path as this process (as multiprocessing would pass it).
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            self.process = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        self._conn = Connection(ours.detach())
        self._conn.send_bytes(self.endpoint.encode())
        # Its start-up (its imports) is over before capture begins, not during it.
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._ready and not self._gone and time.monotonic() < deadline:
            self._receive(min(deadline - time.monotonic(), 1.0))
        if not self._ready:
            self._give_up("did not start in time")
        super().start(ctx)

    def poll(self, con: Any) -> None:
        """While capture runs: one batch handed over when the previous one is built (the
        bridge never waits for the export process). At close: every batch left, each after
        the previous one is built, within CLOSE_TIMEOUT_S."""
        while self._receive(0.0):
            pass
        if self.final and self._deadline is None:
            self._deadline = time.monotonic() + CLOSE_TIMEOUT_S
            self._tell(CAPTURE_OVER)
        while True:
            if self._in_flight and not self._gone:
                if self._deadline is None:
                    self._note_lag()
                    return
                self._wait_built(self._deadline)
                continue
            if self._step(con) < BATCH:
                return

    def _step(self, con: Any) -> int:
        with transaction(con):
            decisions = con.execute(_DECISIONS, [self._decision_pos, BATCH]).to_arrow_table()
            if not decisions.num_rows:
                return 0
            span = pc.min_max(decisions.column("ts_us")).as_py()
            con.register("_tw_otel_batch", decisions.select(["run_id", "decision_id"]))
            try:
                checks = con.execute(_CHECKS, [self._check_pos, span["min"], span["max"]]
                                     ).to_arrow_table()
            finally:
                con.unregister("_tw_otel_batch")
        self._decision_pos = decisions.column("pos")[-1].as_py()
        self._hand_over(decisions, checks)
        return int(decisions.num_rows)

    def _hand_over(self, decisions: pa.Table, checks: pa.Table) -> None:
        if self._gone or self._conn is None:
            self.lost += decisions.num_rows
            return
        try:
            self._conn.send_bytes(_ipc(decisions))
            self._conn.send_bytes(_ipc(checks))
            self._in_flight = decisions.num_rows
            self._handed_at = time.monotonic()
        except OSError:
            self.lost += decisions.num_rows
            self._give_up("ended")

    def _tell(self, message: bytes) -> None:
        if self._gone or self._conn is None:
            return
        try:
            self._conn.send_bytes(message)
        except OSError:
            self._give_up("ended")

    def _wait_built(self, deadline: float) -> None:
        """The batch in flight built, or the export process given up at `deadline`."""
        while self._in_flight and not self._gone:
            left = deadline - time.monotonic()
            if left <= 0:
                self._give_up("did not finish in time; killed")
                return
            self._receive(min(left, 1.0))

    def _note_lag(self) -> None:
        """A batch unbuilt for LAG_NOTE_S while capture runs: the machine is busy (the export
        process gets only idle CPU); logged once, spans catch up later."""
        if not self._lag_noted and time.monotonic() - self._handed_at > LAG_NOTE_S:
            self._lag_noted = True
            log.warning("otlp: spans lag behind capture (the export process gets only idle "
                        "CPU); they catch up when capture pauses or at close",
                        extra={"fields": {"endpoint": self.endpoint}})

    def _receive(self, timeout_s: float) -> bool:
        """One message from the export process within `timeout_s`; False if none came."""
        if self._conn is None or self._gone:
            return False
        try:
            if not self._conn.poll(timeout_s):
                return False
            message = self._conn.recv()
        except (EOFError, OSError):
            self._give_up("ended")
            return False
        assert self.exporter is not None
        match message:
            case ("ready",):
                self._ready = True
            case ("ack", int(built), int(sent), int(dropped), float(cpu_s)):
                self._in_flight = 0
                self._built_cost += cpu_s
                self.spans += built
                self.exporter.sent, self.exporter.dropped = sent, dropped
            case ("log", int(level), str(text), dict(fields)):
                log.log(level, text, extra={"fields": fields})
            case ("done", int(sent), int(dropped)):
                self.exporter.sent, self.exporter.dropped = sent, dropped
                self._gone = True
        return True

    def _give_up(self, why: str) -> None:
        """The export process is gone (or stuck: then it is killed); logged once."""
        if self._gone:
            return
        self._gone = True
        self.lost += self._in_flight  # handed over, never built
        self._in_flight = 0
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        log.warning("otlp: the export process " + why + "; spans are dropped (capture goes on)",
                    extra={"fields": {"endpoint": self.endpoint, "exitcode": None if
                                      self.process is None else self.process.poll()}})

    def finish(self) -> None:
        if self.process is None or self._conn is None:
            return
        deadline = self._deadline or time.monotonic() + CLOSE_TIMEOUT_S
        self._tell(END)  # every batch is handed over: flush and exit
        while not self._gone and time.monotonic() < deadline:
            self._receive(min(deadline - time.monotonic(), 1.0))
        try:
            self.process.wait(max(deadline - time.monotonic(), 0.0) + 1.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            log.warning("otlp: the export process did not finish its flush in time; killed",
                        extra={"fields": {"endpoint": self.endpoint}})
        self._conn.close()
        assert self.exporter is not None
        log.info("otlp: decisions sent as spans", extra={"fields": {
            "endpoint": self.endpoint, "decisions": self.spans, "spans_exported":
            self.exporter.sent, "spans_dropped": self.exporter.dropped,
            "decisions_lost": self.lost}})


__all__ = ["ExportCounts", "OtelBridge", "check_attributes", "decision_attributes"]
