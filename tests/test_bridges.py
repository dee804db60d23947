"""The bridges' shared poll budget (monitor/bridges.PollBudget): one poll at a time across a
session's bridges, the next paced by how long the last one took, the last poll at close not
paced."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from tractatus_watch.monitor.bridges import BridgeContext, PollBudget, PollingBridge
from tractatus_watch.storage.store import Store


class Timed(PollingBridge):
    """Each poll burns `hold_s` of its thread's CPU, as a poll's queries and Python do, and
    records (name, start, end, CPU it cost)."""

    def __init__(self, name: str, spans: list[tuple[str, float, float, float]],
                 lock: threading.Lock, hold_s: float) -> None:
        super().__init__(interval_s=0.01)
        self.name = name
        self.spans = spans
        self.lock = lock
        self.hold_s = hold_s
        self.finals = 0

    def poll(self, con: Any) -> None:
        started, cpu = time.monotonic(), time.thread_time()
        while time.thread_time() - cpu < self.hold_s:
            pass
        with self.lock:
            self.spans.append((self.name, started, time.monotonic(), time.thread_time() - cpu))
        self.finals += self.final


def test_polls_share_one_budget(tmp_path: Path) -> None:
    spans: list[tuple[str, float, float, float]] = []
    lock = threading.Lock()
    with Store.open(tmp_path / "b.duckdb") as store:
        ctx = BridgeContext(store, lambda: frozenset(), lambda: [], PollBudget(duty=0.25))
        bridges = [Timed(f"b{i}", spans, lock, 0.02) for i in range(3)]
        for bridge in bridges:
            bridge.start(ctx)
        deadline = time.monotonic() + 60
        while len(spans) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        for bridge in bridges:
            bridge.close()
    paced = sorted(spans, key=lambda s: s[1])[:-3]  # the last three: the polls at close
    assert len(paced) >= 9
    # Turns in the order asked for: each bridge polls again only after the other two.
    names = [name for name, _, _, _ in paced]
    assert all(len(set(names[i:i + 3])) == 3 for i in range(len(names) - 2)), names
    for (_, start, end, cpu), (_, nxt, _, _) in zip(paced, paced[1:]):
        # One at a time, and a poll that cost c starts the next c / duty = 4 c after its start.
        assert nxt >= max(end, start + cpu / 0.25) - 0.001
    assert [b.finals for b in bridges] == [1, 1, 1]


def test_the_last_poll_is_not_paced(tmp_path: Path) -> None:
    """A slow poll pushes the next one far back; close's poll runs at once all the same."""
    spans: list[tuple[str, float, float, float]] = []
    with Store.open(tmp_path / "b.duckdb") as store:
        ctx = BridgeContext(store, lambda: frozenset(), lambda: [], PollBudget(duty=0.001))
        bridge = Timed("slow", spans, threading.Lock(), 0.2)  # then 200 s to the next
        bridge.start(ctx)
        deadline = time.monotonic() + 30
        while not spans and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        bridge.close()
        assert time.monotonic() - started < 20
    assert len(spans) == 2 and bridge.finals == 1
