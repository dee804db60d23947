"""A batch of records as Arrow tables, the unit the writer commits.

Arrow columns match the DDL in schema.py by name. Collectors build batches from records
(`Batch.from_records`); bulk producers (benchmarks, migrations) may hand Arrow tables directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Iterable

import pyarrow as pa

from ..records.events import Decision, Event, Quarantined, Reward, RolloutTransition

TS = pa.timestamp("us")
MAX_EVENT_PAYLOAD_BYTES: Final = 16_384  # model_request bodies run ~100 KB; keep a head only

ARROW_SCHEMAS: Final[dict[str, pa.Schema]] = {
    "rollouts": pa.schema([
        ("run_id", pa.string()), ("rollout_id", pa.string()), ("status", pa.string()),
        ("ts", TS), ("agent_id", pa.string()), ("round", pa.int32()), ("arm", pa.string()),
        ("duration_s", pa.float64()), ("metadata", pa.string()),
    ]),
    "decisions": pa.schema([
        ("run_id", pa.string()), ("decision_id", pa.string()), ("rollout_id", pa.string()),
        ("agent_id", pa.string()), ("round", pa.int32()), ("arm", pa.string()),
        ("mode", pa.string()), ("action_kind", pa.string()), ("action_summary", pa.string()),
        ("action_digest", pa.string()), ("verdict", pa.string()), ("executed", pa.bool_()),
        ("covered", pa.bool_()), ("attempted", pa.bool_()), ("evasion", pa.bool_()),
        ("n_checks", pa.int16()), ("latency_us", pa.int64()), ("ts", TS), ("extra", pa.string()),
    ]),
    "checks": pa.schema([
        ("run_id", pa.string()), ("decision_id", pa.string()), ("idx", pa.int16()),
        ("round", pa.int32()), ("arm", pa.string()), ("agent_id", pa.string()),
        ("service", pa.string()), ("rule_id", pa.string()), ("verdict", pa.string()),
        ("raw_verdict", pa.string()), ("boundary", pa.string()), ("severity", pa.string()),
        ("enforced", pa.bool_()), ("latency_us", pa.int64()), ("reason", pa.string()),
        ("ts", TS), ("extra", pa.string()),
    ]),
    "rewards": pa.schema([
        ("run_id", pa.string()), ("reward_id", pa.string()), ("rollout_id", pa.string()),
        ("agent_id", pa.string()), ("round", pa.int32()), ("arm", pa.string()),
        ("value", pa.float64()), ("ts", TS),
    ]),
    "events": pa.schema([
        ("run_id", pa.string()), ("event_id", pa.string()), ("rollout_id", pa.string()),
        ("event_type", pa.string()), ("ts", TS), ("payload", pa.string()),
    ]),
    "quarantine": pa.schema([
        ("source", pa.string()), ("ts", TS), ("reason", pa.string()), ("raw", pa.string()),
    ]),
}
EVENT_TABLES: Final = ("rollouts", "decisions", "checks", "rewards", "events")


def _us(ts: float) -> int:
    return int(round(ts * 1_000_000))


def _json_or_none(value: dict[str, Any]) -> str | None:
    return json.dumps(value, separators=(",", ":"), default=str) if value else None


def trim_payload(payload: Any) -> str | None:
    if payload is None:
        return None
    text = payload if isinstance(payload, str) else json.dumps(payload, default=str)
    if len(text) <= MAX_EVENT_PAYLOAD_BYTES:
        return text
    return json.dumps({"_trimmed": True, "bytes": len(text), "head": text[:1024]})


def _table(name: str, columns: dict[str, list[Any]]) -> pa.Table:
    return pa.Table.from_pydict(columns, schema=ARROW_SCHEMAS[name])


@dataclass
class Batch:
    tables: dict[str, pa.Table] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.tables.values())

    @classmethod
    def from_records(
        cls, *, run_id: str = "default",
        decisions: Iterable[Decision] = (), rewards: Iterable[Reward] = (),
        rollouts: Iterable[RolloutTransition] = (), events: Iterable[Event] = (),
        quarantined: Iterable[Quarantined] = (),
    ) -> Batch:
        """Arrow tables from records; a record with an empty run_id takes `run_id`."""
        d: dict[str, list[Any]] = {f.name: [] for f in ARROW_SCHEMAS["decisions"]}
        c: dict[str, list[Any]] = {f.name: [] for f in ARROW_SCHEMAS["checks"]}
        for dec in decisions:
            run = dec.run_id or run_id
            ts = _us(dec.ts)
            for key, value in (
                ("run_id", run), ("decision_id", dec.decision_id), ("rollout_id", dec.rollout_id),
                ("agent_id", dec.agent_id), ("round", dec.round), ("arm", dec.arm),
                ("mode", dec.mode), ("action_kind", dec.action.kind),
                ("action_summary", dec.action.summary), ("action_digest", dec.action.digest),
                ("verdict", dec.verdict), ("executed", dec.executed), ("covered", dec.covered),
                ("attempted", dec.attempted), ("evasion", dec.evasion),
                ("n_checks", len(dec.checks)), ("latency_us", dec.latency_us), ("ts", ts),
                ("extra", _json_or_none({**dec.extra, **({"action": dec.action.extra}
                                                         if dec.action.extra else {})})),
            ):
                d[key].append(value)
            for idx, chk in enumerate(dec.checks):
                for key, value in (
                    ("run_id", run), ("decision_id", dec.decision_id), ("idx", idx),
                    ("round", dec.round), ("arm", dec.arm), ("agent_id", dec.agent_id),
                    ("service", chk.service), ("rule_id", chk.rule_id), ("verdict", chk.verdict),
                    ("raw_verdict", chk.raw_verdict), ("boundary", chk.boundary),
                    ("severity", chk.severity), ("enforced", chk.enforced),
                    ("latency_us", chk.latency_us), ("reason", chk.reason), ("ts", ts),
                    ("extra", _json_or_none(chk.extra)),
                ):
                    c[key].append(value)
        tables: dict[str, pa.Table] = {}
        if d["decision_id"]:
            tables["decisions"] = _table("decisions", d)
        if c["decision_id"]:
            tables["checks"] = _table("checks", c)
        rw = [(r.run_id or run_id, r.reward_id, r.rollout_id, r.agent_id, r.round, r.arm,
               r.value, _us(r.ts)) for r in rewards]
        if rw:
            tables["rewards"] = _table("rewards", dict(zip(
                ARROW_SCHEMAS["rewards"].names, map(list, zip(*rw)))))
        ro = [(r.run_id or run_id, r.rollout_id, r.status, _us(r.ts), r.agent_id, r.round, r.arm,
               r.duration_s, _json_or_none(r.metadata)) for r in rollouts]
        if ro:
            tables["rollouts"] = _table("rollouts", dict(zip(
                ARROW_SCHEMAS["rollouts"].names, map(list, zip(*ro)))))
        ev = [(e.run_id or run_id, e.event_id, e.rollout_id, e.event_type, _us(e.ts),
               trim_payload(e.payload)) for e in events]
        if ev:
            tables["events"] = _table("events", dict(zip(
                ARROW_SCHEMAS["events"].names, map(list, zip(*ev)))))
        qu = [(q.source, _us(q.ts), q.reason, q.raw) for q in quarantined]
        if qu:
            tables["quarantine"] = _table("quarantine", dict(zip(
                ARROW_SCHEMAS["quarantine"].names, map(list, zip(*qu)))))
        return cls(tables)
