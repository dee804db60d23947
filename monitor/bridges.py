"""Bridges: the stored figures sent where teams already look (Prometheus, TensorBoard, W&B,
OpenTelemetry).

A bridge never touches the capture path: it reads what the writer committed, with a cursor of
its own, in a thread of its own, off the figures of analysis/metrics.py and storage/queries.py
(one definition for every surface). The session starts its bridges with the sources and
closes them after the writer's last commit, so a bridge's last pass sees everything stored."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..storage.store import Store
from .health import SourceHealth

log = logging.getLogger("tractatus_watch.bridges")


# Bridges share the collector's process (and GIL, and the store's CPU) with capture: together
# their polls take at most this share of a core, whatever the store's size and however many
# bridges are on (bench/collector.py measures the drain with every bridge on).
MAX_DUTY = 0.02


class PollBudget:
    """The CPU time a session's bridges may spend polling, shared: one poll runs at a time,
    turns go in the order asked for (a bridge that polls often never starves one that polls
    slowly), and a poll that cost c seconds of its thread's CPU lets the next start no sooner
    than c / duty after it started. Its thread's CPU, not the wall: a poll waiting for the
    GIL, the disk or a tracker's service costs the capture nothing. A bridge's last poll, at
    close (capture is over), waits only for the one running."""

    def __init__(self, duty: float = MAX_DUTY) -> None:
        self.duty = duty
        self._cond = threading.Condition()
        self._busy = False
        self._not_before = 0.0
        self._queue: deque[object] = deque()  # the paced polls waiting, first come first

    def acquire(self, stop: threading.Event | None) -> bool:
        """A turn to poll; with `stop` (a paced poll), False once it is set."""
        with self._cond:
            if stop is None:
                while self._busy:
                    self._cond.wait()
                self._busy = True
                return True
            ticket = object()
            self._queue.append(ticket)
            try:
                while not stop.is_set():
                    left = self._not_before - time.monotonic()
                    if not self._busy and left <= 0 and self._queue[0] is ticket:
                        self._busy = True
                        return True
                    self._cond.wait(left if not self._busy and left > 0 else None)
                return False
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()  # the next in line may go

    def release(self, started: float, cost_s: float) -> None:
        """The poll that started at `started` (monotonic) is over; it cost `cost_s`."""
        with self._cond:
            self._busy = False
            self._not_before = max(self._not_before, started + cost_s / self.duty)
            self._cond.notify_all()

    def wake(self) -> None:
        """A stop was set: its waiting poll returns."""
        with self._cond:
            self._cond.notify_all()


@dataclass(frozen=True)
class BridgeContext:
    """What a bridge may read: the store, the runs this session collected, its sources'
    health; and the polling time it shares with the session's other bridges."""

    store: Store
    runs: Callable[[], frozenset[str]]
    health: Callable[[], list[SourceHealth]]
    budget: PollBudget = field(default_factory=PollBudget)


class Bridge(Protocol):
    name: str

    def start(self, ctx: BridgeContext) -> None: ...

    def close(self) -> None:
        """After the writer's last commit: a last pass over what is stored, then stop."""
        ...


class PollingBridge:
    """A bridge that reads the store every `interval_s` in its own thread (`poll`; less often
    while the session's polls are slow, PollBudget), and once more at close with `final` set.
    A failing poll is logged and retried on the next tick: a bridge never stops capture."""

    name = "bridge"

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.ctx: BridgeContext | None = None
        self.final = False  # the last poll: the writer's last commit is in the store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None  # the last poll's failure, None after a good one

    def start(self, ctx: BridgeContext) -> None:
        self.ctx = ctx
        self._thread = threading.Thread(target=self._loop, name=f"tw-{self.name}",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll_once(self._stop)

    def _poll_once(self, stop: threading.Event | None = None) -> None:
        """One poll in its budget: paced while `stop` is given, else right after the poll
        running."""
        assert self.ctx is not None
        budget = self.budget()
        if not budget.acquire(stop):
            return
        started, cpu = time.monotonic(), time.thread_time()
        con = self.ctx.store.cursor()
        try:
            self.poll(con)
            self.error = None
        except Exception as exc:  # noqa: BLE001 - reported, retried on the next tick
            reason = str(exc).strip().split("\n")[0]
            if reason != self.error:
                log.warning("bridge poll failed", extra={"fields": {
                    "bridge": self.name, "error": reason}})
            self.error = reason
        finally:
            con.close()
            budget.release(started, self.poll_cost(time.thread_time() - cpu))

    def budget(self) -> PollBudget:
        """The budget this bridge's polls take turns in: the session's, shared."""
        assert self.ctx is not None
        return self.ctx.budget

    def poll_cost(self, thread_s: float) -> float:
        """What the poll cost the capture: the CPU of its thread."""
        return thread_s

    def poll(self, con: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        if self.ctx is not None:
            self.budget().wake()
        if self._thread is not None:
            self._thread.join(30)
        if self.ctx is not None:
            self.final = True
            self._poll_once()
        self.finish()

    def finish(self) -> None:
        """After the last poll: flush and release what the bridge holds."""
