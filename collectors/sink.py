"""Sinks for the records taps deliver (records/delivery.py): `writer_sink` adapts the storage
writer, so the taps can be tested against a plain list and the writer can change without
touching them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..records.delivery import Records, Sink

if TYPE_CHECKING:
    from ..storage.batch import Batch
    from ..storage.writer import Cursor


class _WriterLike(Protocol):
    """What the sink needs of storage.writer.Writer (its `submit`, with the same signature)."""

    def submit(self, batch: Batch, cursor: Cursor | None = None,
               stats: dict[str, Any] | None = None) -> None: ...


def writer_sink(writer: _WriterLike, run_id: str = "default") -> Sink:
    """A sink that turns records into one storage batch per call (rows + cursor + stats)."""
    from ..storage.batch import Batch
    from ..storage.writer import Cursor

    def sink(records: Records) -> None:
        if not len(records) and records.cursor is None:
            return
        batch = Batch.from_records(
            run_id=run_id, decisions=records.decisions, rewards=records.rewards,
            rollouts=records.rollouts, events=records.events, run_events=records.run_events,
            quarantined=records.quarantined, witnessed=records.witnessed)
        cursor = (Cursor(source=records.cursor[0], value=records.cursor[1])
                  if records.cursor else None)
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
