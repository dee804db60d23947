"""Agent Lightning 1.0.2 vocabulary shared by the hooks, poller and gateway taps.

One rule makes the three taps agree: an event's identity is its position. Agent Lightning gives
events no id ("position in the list is the identity"), so every tap names an event
`{rollout_id}:{attempt_id}:{event_type}:{position}`, where position counts events *of that type*
in the attempt's list. That is exactly what `GET /api/rollouts/{id}/events?event_type=T` returns,
so a poller reading by type, a hook reading the whole list and the gateway tee watching appends
produce the same ids, and running two taps at once stores nothing twice.

Rewards are the exception where the producer names them: our SDK's reward carries its own
`reward_id` (unique per Governor instance), and that is its identity (`reward_key`). Position
alone cannot tell a replay of a rollout (same payloads: must store once) from a new rollout
that reuses the id after the gateway lost its memory (must store both); the producer's id can.
A reward without one (Agent Lightning's plain `{"value": ...}`) keeps the position id, which
the poller qualifies with its restart epoch once it has seen the gateway restart.

Training round, run id and group are not on the server (metadata empty, model_version 0), so the
hooks tap stamps them into rollout metadata under `STAMP_KEY`; every tap reads them back here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final, Mapping

from .events import (
    DECISION_EVENT, DECISIONS_EVENT, REWARD_EVENT, Decision, Event, Quarantined, Reward,
    RolloutTransition,
)
from .delivery import Records
from .witness import witnessed_actions

STAMP_KEY: Final = "tractatus_watch"
MODEL_REQUEST: Final = "model_request"
# What the poller reads by type: the governance signal, the reward, and the model requests
# (~100 KB each), whose tool calls are the witness of coverage (records/witness.py).
CAPTURE_TYPES: Final = (DECISION_EVENT, DECISIONS_EVENT, MODEL_REQUEST, REWARD_EVENT)
# Of a model_request we keep what answers "what did the model cost", not the request/response.
MODEL_REQUEST_KEEP: Final = ("model", "model_version", "latency_ms", "usage", "status",
                             "http_status", "finish_reason", "retry_count")
TERMINAL: Final = frozenset({"succeeded", "failed"})
UNKNOWN_ARM: Final = "unknown"
MAX_QUARANTINE_RAW: Final = 65_536


def event_id(rollout_id: str, attempt_id: str, event_type: str, position: int) -> str:
    return f"{rollout_id}:{attempt_id}:{event_type}:{position}"


def reward_key(rollout_id: str, position_id: str, data: Any, epoch: int = 0) -> str:
    """A reward's identity: the producer's `reward_id` where the payload has one (scoped to the
    rollout, so an id a user reuses across rollouts stays distinct), else its position id,
    qualified by the reading poller's gateway epoch after a restart (`@<epoch>`)."""
    given = data.get("reward_id") if isinstance(data, Mapping) else None
    if isinstance(given, str) and given.strip():
        return f"{rollout_id}:reward-id:{given}"
    return f"{position_id}@{epoch}" if epoch else position_id


def trim_model_request(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: data[k] for k in MODEL_REQUEST_KEEP if k in data}


def stamp(metadata: Mapping[str, Any] | None, **values: Any) -> dict[str, Any]:
    """Rollout metadata with our stamp added (existing keys, including a user's own, kept)."""
    out = dict(metadata or {})
    mine = dict(out.get(STAMP_KEY) or {})
    mine.update({k: v for k, v in values.items() if v is not None})
    out[STAMP_KEY] = mine
    return out


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


@dataclass(slots=True)
class RolloutContext:
    """What we know about one rollout, used to fill the records of its events."""

    rollout_id: str
    run_id: str = ""
    round: int | None = None  # None: not stamped, keep what each decision says
    group: str = ""
    agent_id: str = ""
    arm: str = ""
    is_train: bool = True
    attempt_id: str = "0"
    state: str = ""
    created_at: float | None = None
    updated_at: float | None = None
    error_message: str | None = None

    @classmethod
    def from_rollout(cls, rollout: Mapping[str, Any], *, run_id: str = "") -> RolloutContext:
        """From an Agent Lightning `Rollout` as JSON (HTTP body or `model_dump()`)."""
        meta = rollout.get("metadata") or {}
        mine = meta.get(STAMP_KEY) if isinstance(meta, Mapping) else None
        mine = mine if isinstance(mine, Mapping) else {}
        status = rollout.get("status") or {}
        state = status.get("state", "")
        return cls(
            rollout_id=str(rollout.get("rollout_id", "")),
            run_id=str(mine.get("run_id") or run_id or ""),
            round=_as_int(mine.get("round")),
            group=str(mine.get("group") or ""),
            agent_id=str(mine.get("agent_id") or ""),
            arm=str(mine.get("arm") or ""),
            is_train=bool(rollout.get("is_train", True)),
            attempt_id=str(status.get("last_attempt_id") or "0"),
            state=str(getattr(state, "value", state) or ""),
            created_at=_float_or_none(status.get("created_at")),
            updated_at=_float_or_none(status.get("updated_at")),
            error_message=status.get("error_message"),
        )

    def refresh(self, newer: RolloutContext) -> None:
        """Take what a newer view of the same rollout says (in place: normalisers hold us)."""
        for name in ("state", "attempt_id", "created_at", "updated_at", "error_message", "round",
                     "run_id", "agent_id", "arm", "group", "is_train"):
            setattr(self, name, getattr(newer, name))

    def transition(self, state: str | None = None, ts: float | None = None) -> RolloutTransition:
        """The rollout reaching `state` (default: its current state)."""
        state = state or self.state
        when = ts if ts is not None else (
            self.created_at if state == "queuing" else self.updated_at)
        duration = None
        if state in TERMINAL and self.created_at is not None and self.updated_at is not None:
            duration = max(0.0, self.updated_at - self.created_at)
        meta: dict[str, Any] = {"is_train": self.is_train, "attempt_id": self.attempt_id}
        if self.group:
            meta["group"] = self.group
        if self.error_message:
            meta["error_message"] = self.error_message
        return RolloutTransition(
            rollout_id=self.rollout_id, status=state, ts=when if when is not None else time.time(),
            agent_id=self.agent_id, round=self.round or 0, arm=self.arm, duration_s=duration,
            run_id=self.run_id, metadata=meta)


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _raw(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except Exception:  # too deep, unserialisable: quarantining must not fail on it
        try:
            text = repr(value)
        except Exception:
            text = f"<unprintable {type(value).__name__}>"
    return text[:MAX_QUARANTINE_RAW]


@dataclass
class EventNormaliser:
    """Turns the events of one rollout into records.

    Rewards carry no agent or arm in Agent Lightning; they take them from the stamp or, failing
    that, from the rollout's decisions, which is why one normaliser lives as long as its rollout.
    """

    ctx: RolloutContext
    source: str
    default_arm: str = UNKNOWN_ARM
    # The poller's count of gateway restarts it has seen (0 for the taps that cannot see one).
    epoch: int = 0
    _learned_agent: str = field(default="", init=False)
    _learned_arm: str = field(default="", init=False)

    def add(self, out: Records, *, event_type: str, position: int, data: Any, ts: float,
            attempt_id: str | None = None) -> None:
        attempt = attempt_id if attempt_id is not None else self.ctx.attempt_id
        eid = event_id(self.ctx.rollout_id, attempt, event_type, position)
        try:
            self._add(out, eid, event_type, data, ts, position)
        except Exception as exc:  # one odd payload is quarantined; it never stops a tap
            self._quarantine(out, eid, f"cannot normalise: {type(exc).__name__}: {exc}", data)

    def _add(self, out: Records, eid: str, event_type: str, data: Any, ts: float,
             position: int) -> None:
        if event_type == DECISION_EVENT:
            self._decision(out, eid, data)
        elif event_type == DECISIONS_EVENT:
            items = data.get("decisions") if isinstance(data, Mapping) else data
            if not isinstance(items, list):
                self._quarantine(out, eid, "decisions: expected a list", data)
                return
            for i, item in enumerate(items):
                self._decision(out, f"{eid}[{i}]", item)
        elif event_type == REWARD_EVENT:
            self._reward(out, eid, data, ts)
        else:
            payload = data
            if event_type == MODEL_REQUEST and isinstance(data, Mapping):
                payload = trim_model_request(data)
                self._witness(out, eid, data, ts, position)
            out.events.append(Event(event_id=eid, event_type=event_type, ts=ts,
                                    rollout_id=self.ctx.rollout_id, payload=payload,
                                    run_id=self.ctx.run_id))

    def _witness(self, out: Records, eid: str, data: Mapping[str, Any], ts: float,
                 position: int) -> None:
        """The tool calls of a model response: the actions the agent's model proposed."""
        out.witnessed.extend(witnessed_actions(
            data, event_id=eid, rollout_id=self.ctx.rollout_id, position=position, ts=ts,
            run_id=self.ctx.run_id, agent_id=self.ctx.agent_id,
            arm=self.ctx.arm or self.default_arm, round=self.ctx.round or 0))

    def _quarantine(self, out: Records, where: str, reason: str, data: Any) -> None:
        out.quarantined.append(Quarantined(source=self.source, reason=f"{where}: {reason}",
                                           raw=_raw(data), ts=time.time()))

    def _decision(self, out: Records, where: str, data: Any) -> None:
        try:
            dec = Decision.from_payload(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self._quarantine(out, where, str(exc), data)
            return
        if self.ctx.round is not None and dec.round != self.ctx.round:
            # The trainer's global step is the authority on rounds; keep what the agent said.
            dec.extra["agent_round"] = dec.round
            dec.round = self.ctx.round
        if self.ctx.run_id:
            dec.run_id = self.ctx.run_id
        if not dec.rollout_id:
            dec.rollout_id = self.ctx.rollout_id
        self._learned_agent = self._learned_agent or dec.agent_id
        self._learned_arm = self._learned_arm or dec.arm
        out.decisions.append(dec)

    def _reward(self, out: Records, eid: str, data: Any, ts: float) -> None:
        value = data.get("value") if isinstance(data, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            self._quarantine(out, eid, "reward: value must be a finite number", data)
            return
        value = float(value)
        if value in (float("inf"), float("-inf")):
            self._quarantine(out, eid, "reward: value must be a finite number", data)
            return
        given = data if isinstance(data, Mapping) else {}
        round_ = self.ctx.round if self.ctx.round is not None else _as_int(given.get("round")) or 0
        out.rewards.append(Reward(
            reward_id=reward_key(self.ctx.rollout_id, eid, data, self.epoch),
            rollout_id=self.ctx.rollout_id,
            agent_id=self.ctx.agent_id or str(given.get("agent_id") or "") or self._learned_agent,
            round=round_,
            arm=(self.ctx.arm or str(given.get("arm") or "") or self._learned_arm
                 or self.default_arm),
            value=value, ts=ts, run_id=self.ctx.run_id))

    def transition(self, state: str | None = None) -> RolloutTransition:
        """The rollout's transition, with the agent and arm learned from its decisions."""
        tr = self.ctx.transition(state)
        tr.agent_id = tr.agent_id or self._learned_agent
        tr.arm = tr.arm or self._learned_arm
        return tr

    def add_typed_list(self, out: Records, event_type: str, events: list[Mapping[str, Any]],
                       start: int = 0) -> int:
        """Records for positions >= `start` of a list already filtered to one type (as the
        server returns it); returns the new length, the next `start`."""
        for position in range(start, len(events)):
            ev = events[position]
            if not isinstance(ev, Mapping):
                self._quarantine(out, event_id(self.ctx.rollout_id, self.ctx.attempt_id,
                                               event_type, position), "not an event object", ev)
                continue
            self.add(out, event_type=event_type, position=position, data=ev.get("data", {}),
                     ts=_float_or_none(ev.get("timestamp")) or time.time(),
                     attempt_id=str(ev.get("attempt_id") or self.ctx.attempt_id))
        return len(events)

    def add_mixed_list(self, out: Records, events: list[Any], attempt_id: str) -> None:
        """Records for a whole attempt's list of events (any types, pydantic or JSON); positions
        are counted per type so they match the server's type-filtered lists."""
        counts: dict[str, int] = {}
        numbered: list[tuple[int, str, Any]] = []
        for ev in events:
            etype = str(_field(ev, "event_type"))
            numbered.append((counts.get(etype, 0), etype, ev))
            counts[etype] = counts.get(etype, 0) + 1
        # Decisions first so a reward learns the agent and arm; positions stay per type, so the
        # order in which we visit them changes no id.
        numbered.sort(key=lambda n: 0 if n[1] in (DECISION_EVENT, DECISIONS_EVENT) else 1)
        for position, etype, ev in numbered:
            self.add(out, event_type=etype, position=position, data=_field(ev, "data") or {},
                     ts=_float_or_none(_field(ev, "timestamp")) or time.time(),
                     attempt_id=str(_field(ev, "attempt_id") or attempt_id))


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)
