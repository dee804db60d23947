"""What every tap hands downstream: normalised records, optionally with the cursor and stats that
must commit in the same transaction as those records.

Taps never talk to storage directly; they call a `Sink`. `writer_sink` adapts the storage writer,
so the taps can be tested against a plain list and the writer can change without touching them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..governance.events import Decision, Event, Quarantined, Reward, RolloutTransition


@dataclass(slots=True)
class Records:
    decisions: list[Decision] = field(default_factory=list)
    rewards: list[Reward] = field(default_factory=list)
    rollouts: list[RolloutTransition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    # (source, value): committed together with the rows, so a restart resumes exactly here.
    cursor: tuple[str, str] | None = None
    # Cumulative per-source figures (capture completeness); they commit with the cursor.
    stats: dict[str, Any] | None = None

    def __len__(self) -> int:
        return (len(self.decisions) + len(self.rewards) + len(self.rollouts) + len(self.events)
                + len(self.quarantined))

    def extend(self, other: Records) -> None:
        self.decisions.extend(other.decisions)
        self.rewards.extend(other.rewards)
        self.rollouts.extend(other.rollouts)
        self.events.extend(other.events)
        self.quarantined.extend(other.quarantined)
        if other.cursor is not None:
            self.cursor = other.cursor
        if other.stats is not None:
            self.stats = other.stats


Sink = Callable[[Records], None]


class _WriterLike(Protocol):
    def submit(self, batch: Any, cursor: Any = None, **kwargs: Any) -> Any: ...


def writer_sink(writer: _WriterLike, run_id: str = "default") -> Sink:
    """A sink that turns records into one storage batch per call (rows + cursor + stats)."""
    from ..storage.batch import Batch
    from ..storage.writer import Cursor

    def sink(records: Records) -> None:
        if not len(records) and records.cursor is None:
            return
        batch = Batch.from_records(
            run_id=run_id, decisions=records.decisions, rewards=records.rewards,
            rollouts=records.rollouts, events=records.events, quarantined=records.quarantined)
        cursor = Cursor(source=records.cursor[0], value=records.cursor[1]) if records.cursor else None
        if records.stats is not None:
            writer.submit(batch, cursor, stats=records.stats)
        else:
            writer.submit(batch, cursor)

    return sink


class ListSink:
    """A sink that keeps everything in memory (tests, dry runs)."""

    def __init__(self) -> None:
        self.calls: list[Records] = []
        self.all = Records()

    def __call__(self, records: Records) -> None:
        self.calls.append(records)
        self.all.extend(records)
