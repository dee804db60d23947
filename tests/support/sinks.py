"""A Governor sink for tests that write the decisions themselves (with the witness)."""

from __future__ import annotations

from typing import Any

from tractatus_watch.records.events import Decision


class DecisionList:
    """Keeps every decision the Governor emits; rewards are dropped."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def emit_decision(self, decision: Decision) -> None:
        self.decisions.append(decision)

    def emit_reward(self, reward: Any) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass
