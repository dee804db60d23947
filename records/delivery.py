"""What every tap hands downstream: normalised records, optionally with the cursor and stats that
must commit in the same transaction as those records. Taps never talk to storage directly; they
call a `Sink` (collectors/sink.py adapts the storage writer to one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .events import Decision, Event, Quarantined, Reward, RolloutTransition, RunEvent
from .witness import WitnessedAction


@dataclass(slots=True)
class Records:
    decisions: list[Decision] = field(default_factory=list)
    rewards: list[Reward] = field(default_factory=list)
    rollouts: list[RolloutTransition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    run_events: list[RunEvent] = field(default_factory=list)  # runs started or ended
    quarantined: list[Quarantined] = field(default_factory=list)
    witnessed: list[WitnessedAction] = field(default_factory=list)  # tool calls the gateway saw
    # (source, value): committed together with the rows, so a restart resumes exactly here.
    cursor: tuple[str, str] | None = None
    # Cumulative per-source figures (capture completeness); they commit with the cursor.
    stats: dict[str, Any] | None = None

    def __len__(self) -> int:
        return (len(self.decisions) + len(self.rewards) + len(self.rollouts) + len(self.events)
                + len(self.run_events) + len(self.quarantined) + len(self.witnessed))

    def extend(self, other: Records) -> None:
        self.decisions.extend(other.decisions)
        self.rewards.extend(other.rewards)
        self.rollouts.extend(other.rollouts)
        self.events.extend(other.events)
        self.run_events.extend(other.run_events)
        self.quarantined.extend(other.quarantined)
        self.witnessed.extend(other.witnessed)
        if other.cursor is not None:
            self.cursor = other.cursor
        if other.stats is not None:
            self.stats = other.stats


Sink = Callable[[Records], None]
