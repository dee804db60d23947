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
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ..storage.store import Store
from .health import SourceHealth

log = logging.getLogger("tractatus_watch.bridges")


@dataclass(frozen=True)
class BridgeContext:
    """What a bridge may read: the store, the runs this session collected, its sources'
    health."""

    store: Store
    runs: Callable[[], frozenset[str]]
    health: Callable[[], list[SourceHealth]]


class Bridge(Protocol):
    name: str

    def start(self, ctx: BridgeContext) -> None: ...

    def close(self) -> None:
        """After the writer's last commit: a last pass over what is stored, then stop."""
        ...


# A bridge shares the collector's process (and GIL) with capture: after a poll that took d
# seconds it waits at least d / MAX_DUTY, so polling holds at most this share of the time
# whatever the store's size (bench/collector.py measures the drain with every bridge on).
MAX_DUTY = 0.05


class PollingBridge:
    """A bridge that reads the store every `interval_s` in its own thread (`poll`; longer
    while polls are slow, MAX_DUTY), once more at close. A failing poll is logged and retried
    on the next tick: a bridge never stops capture."""

    name = "bridge"

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.ctx: BridgeContext | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one poll at a time (the thread's and close's)
        self.error: str | None = None  # the last poll's failure, None after a good one

    def start(self, ctx: BridgeContext) -> None:
        self.ctx = ctx
        self._thread = threading.Thread(target=self._loop, name=f"tw-{self.name}",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        wait_s = self.interval_s
        while not self._stop.wait(wait_s):
            started = time.monotonic()
            self._poll_once()
            took = time.monotonic() - started
            wait_s = max(self.interval_s, took / MAX_DUTY - took)

    def _poll_once(self) -> None:
        assert self.ctx is not None
        with self._lock:
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

    def poll(self, con: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.ctx is not None:
            self._poll_once()
        self.finish()

    def finish(self) -> None:
        """After the last poll: flush and release what the bridge holds."""
