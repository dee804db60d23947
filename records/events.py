"""Typed records for everything we store, and the validation that turns payloads into them.

The decision payload follows DESIGN.md (`tractatus.decision/1`). Parsing is strict about what we
need and lenient about the rest: unknown fields are kept in `extra` (so a newer producer never
loses data through an older collector) and every error names the offending field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, Mapping

from .rulesets import RuleSetError, RuleSetInfo
from .verdicts import VERDICTS, UnknownVerdict, Verdict, normalise, strongest

DECISION_SCHEMA: Final = "tractatus.decision/1"
DECISION_EVENT: Final = "tractatus.decision"
DECISIONS_EVENT: Final = "tractatus.decisions"  # several decisions of one rollout, packed
REWARD_EVENT: Final = "reward"

# enforce: a stopping verdict stops the action (the governed arm); penalize: the checks are
# enforced but a stopping verdict costs a reward penalty and the action runs (the penalized
# arm); shadow: checks recorded, nothing stopped or penalized (the ungoverned baseline); off: no
# checks. Strongest first.
Mode = Literal["enforce", "penalize", "shadow", "off"]
MODES: Final[tuple[Mode, ...]] = ("enforce", "penalize", "shadow", "off")
# The modes whose checks govern the action (stop it or penalize it): they count in coverage.
CHECKED_MODES: Final[frozenset[str]] = frozenset({"enforce", "penalize"})
# The verdicts that stop an action in enforce mode and cost the penalty in penalize mode.
STOPPING: Final[frozenset[str]] = frozenset({"block", "escalate"})
# The decision's field (kept in `extra`, so every reader carries it) saying what a penalized
# action cost: present only on penalized decisions.
PENALTY_KEY: Final = "penalty"
ROLLOUT_STATUSES: Final = (
    "queuing", "preparing", "running", "succeeded", "failed", "requeuing", "cancelled",
)
RUN_EVENTS: Final = ("started", "ended")


class ValidationError(ValueError):
    """A payload that cannot become a record; `field` names where it went wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# --- small field readers: each names the field in its error -----------------------------------

def _str(d: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
    value = d.get(key, default)
    if value is None:
        raise ValidationError(path + key, "missing")
    if not isinstance(value, str):
        raise ValidationError(path + key, f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(d: Mapping[str, Any], key: str, path: str) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValidationError(path + key, f"expected a string, got {type(value).__name__}")
    return value


def _int(d: Mapping[str, Any], key: str, path: str, default: int | None = None) -> int:
    value = d.get(key, default)
    if value is None:
        raise ValidationError(path + key, "missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(path + key, f"expected an integer, got {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise ValidationError(path + key, f"expected an integer, got {value}")
    if value < 0:
        raise ValidationError(path + key, f"must be >= 0, got {value}")
    return int(value)


def _float(d: Mapping[str, Any], key: str, path: str, default: float | None = None) -> float:
    value = d.get(key, default)
    if value is None:
        raise ValidationError(path + key, "missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(path + key, f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValidationError(path + key, f"must be finite, got {value}")
    return float(value)


def _bool(d: Mapping[str, Any], key: str, path: str, default: bool | None = None) -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        raise ValidationError(path + key, "missing" if value is None else "expected true or false")
    return value


def parse_ts(value: Any, path: str = "ts") -> float:
    """Epoch seconds from a number (s or ms), an ISO-8601 string or a Mongo `{"$date": …}`."""
    if isinstance(value, Mapping) and "$date" in value:
        value = value["$date"]
        if isinstance(value, Mapping) and "$numberLong" in value:
            value = int(value["$numberLong"]) / 1000.0
    if isinstance(value, bool) or value is None:
        raise ValidationError(path, "missing" if value is None else "expected a timestamp")
    if isinstance(value, (int, float)):
        ts = float(value)
        if ts > 1e11:  # milliseconds since the epoch
            ts /= 1000.0
        if not math.isfinite(ts) or ts < 0:
            raise ValidationError(path, f"not a valid timestamp: {value}")
        return ts
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ValidationError(path, f"not an ISO-8601 timestamp: {value!r}") from None
    raise ValidationError(path, f"expected a timestamp, got {type(value).__name__}")


def _verdict(raw: Any, path: str) -> Verdict:
    if not isinstance(raw, str):
        raise ValidationError(path, "expected a verdict string")
    try:
        return normalise(raw)
    except UnknownVerdict:
        raise ValidationError(path, f"unknown verdict {raw!r}") from None


# --- records ------------------------------------------------------------------------------------

@dataclass(slots=True)
class Check:
    service: str
    verdict: Verdict
    raw_verdict: str
    rule_id: str = ""
    boundary: str | None = None
    severity: str | None = None
    enforced: bool = True
    latency_us: int = 0
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # The version of the rule set the service evaluated (records/rulesets.py); "" = unknown.
    ruleset: str = ""

    _KNOWN = frozenset({"service", "verdict", "raw_verdict", "rule_id", "boundary", "severity",
                        "enforced", "latency_us", "reason", "ruleset"})

    @classmethod
    def from_payload(cls, d: Any, path: str = "checks[0].") -> Check:
        if not isinstance(d, Mapping):
            raise ValidationError(path.rstrip("."), "expected an object")
        raw = d.get("raw_verdict") or d.get("verdict")
        if raw is None:
            raise ValidationError(path + "verdict", "missing")
        verdict = _verdict(d["verdict"], path + "verdict") if "verdict" in d \
            else _verdict(raw, path + "raw_verdict")
        if d.get("raw_verdict") is not None:
            _verdict(d["raw_verdict"], path + "raw_verdict")  # reject raw values we cannot read
        return cls(
            service=_str(d, "service", path),
            verdict=verdict,
            raw_verdict=str(raw).strip().upper(),
            rule_id=_opt_str(d, "rule_id", path) or "",
            boundary=_opt_str(d, "boundary", path),
            severity=_opt_str(d, "severity", path),
            enforced=_bool(d, "enforced", path, True),
            latency_us=_int(d, "latency_us", path, 0),
            reason=_opt_str(d, "reason", path) or "",
            extra={k: v for k, v in d.items() if k not in cls._KNOWN},
            ruleset=_opt_str(d, "ruleset", path) or "",
        )

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "service": self.service, "rule_id": self.rule_id, "verdict": self.verdict,
            "raw_verdict": self.raw_verdict, "boundary": self.boundary, "severity": self.severity,
            "enforced": self.enforced, "latency_us": self.latency_us, "reason": self.reason,
        }
        if self.ruleset:
            out["ruleset"] = self.ruleset
        out.update(self.extra)
        return out


@dataclass(slots=True)
class Action:
    kind: str
    summary: str = ""
    digest: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, d: Any, path: str = "action.") -> Action:
        if not isinstance(d, Mapping):
            raise ValidationError(path.rstrip("."), "expected an object")
        return cls(
            kind=_str(d, "kind", path),
            summary=_opt_str(d, "summary", path) or "",
            digest=_opt_str(d, "digest", path) or "",
            extra={k: v for k, v in d.items() if k not in ("kind", "summary", "digest")},
        )

    def to_payload(self) -> dict[str, Any]:
        return {"kind": self.kind, "summary": self.summary, "digest": self.digest, **self.extra}


@dataclass(slots=True)
class Decision:
    decision_id: str
    agent_id: str
    round: int
    arm: str
    mode: Mode
    action: Action
    checks: list[Check]
    verdict: Verdict
    executed: bool
    latency_us: int
    ts: float
    run_id: str = ""
    rollout_id: str = ""
    schema: str = DECISION_SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)
    # Rule sets announced with this decision (optional; see records/rulesets.py): the rule ids
    # behind the versions its checks (and later decisions' checks) name.
    rulesets: list[RuleSetInfo] = field(default_factory=list)

    _KNOWN = frozenset({"schema", "decision_id", "agent_id", "round", "arm", "mode", "action",
                        "checks", "verdict", "executed", "latency_us", "ts", "run_id",
                        "rollout_id", "rulesets"})

    # The definitions of DESIGN.md, in one place.
    @property
    def covered(self) -> bool:
        """Checked in a governing mode (enforce or penalize): counts towards coverage."""
        return self.mode in CHECKED_MODES and any(c.enforced for c in self.checks)

    @property
    def attempted(self) -> bool:
        """An attempted violation: at least one `block` check, in any mode."""
        return any(c.verdict == "block" for c in self.checks)

    @property
    def blocked(self) -> bool:
        return self.attempted and not self.executed

    @property
    def escaped(self) -> bool:
        return self.attempted and self.executed

    @property
    def penalized(self) -> bool:
        """Penalize mode and a stopping verdict: the action ran and cost the penalty."""
        return self.mode == "penalize" and self.verdict in STOPPING

    @property
    def penalty(self) -> float:
        """The reward the action cost (`penalty` in the payload); 0 when it cost nothing."""
        value = self.extra.get(PENALTY_KEY)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return 0.0
        return float(value) if math.isfinite(value) else 0.0

    @property
    def evasion(self) -> bool:
        """Passed every enforced check but a shadow (non-enforced) check flagged it."""
        enforced = [c for c in self.checks if c.enforced]
        return (bool(enforced) and all(c.verdict in ("allow", "warn") for c in enforced)
                and any(c.verdict == "block" for c in self.checks if not c.enforced))

    @classmethod
    def from_payload(cls, d: Any) -> Decision:
        if not isinstance(d, Mapping):
            raise ValidationError("decision", "expected an object")
        schema = d.get("schema", DECISION_SCHEMA)
        if not isinstance(schema, str) or not schema.startswith("tractatus.decision/"):
            raise ValidationError("schema", f"not a decision schema: {schema!r}")
        mode = _str(d, "mode", "")
        if mode not in MODES:
            raise ValidationError("mode", f"expected one of {', '.join(MODES)}, got {mode!r}")
        raw_checks = d.get("checks", [])
        if not isinstance(raw_checks, list):
            raise ValidationError("checks", "expected a list")
        checks = [Check.from_payload(c, f"checks[{i}].") for i, c in enumerate(raw_checks)]
        verdict = (_verdict(d["verdict"], "verdict") if d.get("verdict") is not None
                   else strongest([c.verdict for c in checks if c.enforced]))
        raw_sets = d.get("rulesets") or []
        if not isinstance(raw_sets, list):
            raise ValidationError("rulesets", "expected a list")
        try:
            rulesets = [RuleSetInfo.from_payload(r, f"rulesets[{i}].")
                        for i, r in enumerate(raw_sets)]
        except RuleSetError as exc:
            raise ValidationError(exc.field, exc.reason) from None
        return cls(
            decision_id=_str(d, "decision_id", ""),
            agent_id=_str(d, "agent_id", ""),
            round=_int(d, "round", ""),
            arm=_str(d, "arm", ""),
            mode=mode,
            action=Action.from_payload(d.get("action"), "action."),
            checks=checks,
            verdict=verdict,
            executed=_bool(d, "executed", ""),
            latency_us=_int(d, "latency_us", "", 0),
            ts=parse_ts(d.get("ts")),
            run_id=_opt_str(d, "run_id", "") or "",
            rollout_id=_opt_str(d, "rollout_id", "") or "",
            schema=schema,
            extra={k: v for k, v in d.items() if k not in cls._KNOWN},
            rulesets=rulesets,
        )

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": self.schema, "decision_id": self.decision_id, "agent_id": self.agent_id,
            "round": self.round, "arm": self.arm, "mode": self.mode,
            "action": self.action.to_payload(), "checks": [c.to_payload() for c in self.checks],
            "verdict": self.verdict, "executed": self.executed, "latency_us": self.latency_us,
            "ts": self.ts,
        }
        if self.run_id:
            out["run_id"] = self.run_id
        if self.rollout_id:
            out["rollout_id"] = self.rollout_id
        if self.rulesets:
            out["rulesets"] = [r.to_payload() for r in self.rulesets]
        out.update(self.extra)
        return out


@dataclass(slots=True)
class Reward:
    """One reward of a rollout; `reward_id` is unique within the run (rollout + position)."""

    reward_id: str
    rollout_id: str
    agent_id: str
    round: int
    arm: str
    value: float
    ts: float
    run_id: str = ""

    @classmethod
    def from_payload(cls, d: Any) -> Reward:
        if not isinstance(d, Mapping):
            raise ValidationError("reward", "expected an object")
        return cls(
            reward_id=_str(d, "reward_id", ""),
            rollout_id=_opt_str(d, "rollout_id", "") or "",
            agent_id=_str(d, "agent_id", "", ""),
            round=_int(d, "round", ""),
            arm=_str(d, "arm", ""),
            value=_float(d, "value", ""),
            ts=parse_ts(d.get("ts")),
            run_id=_opt_str(d, "run_id", "") or "",
        )


@dataclass(slots=True)
class RolloutTransition:
    """A rollout reaching a status; a rollout's history is its transitions."""

    rollout_id: str
    status: str
    ts: float
    agent_id: str = ""
    round: int = 0
    arm: str = ""
    duration_s: float | None = None
    run_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, d: Any) -> RolloutTransition:
        if not isinstance(d, Mapping):
            raise ValidationError("rollout", "expected an object")
        status = _str(d, "status", "")
        if status not in ROLLOUT_STATUSES:
            raise ValidationError("status", f"unknown rollout status {status!r}")
        meta = d.get("metadata") or {}
        if not isinstance(meta, Mapping):
            raise ValidationError("metadata", "expected an object")
        duration = d.get("duration_s")
        return cls(
            rollout_id=_str(d, "rollout_id", ""),
            status=status,
            ts=parse_ts(d.get("ts")),
            agent_id=_opt_str(d, "agent_id", "") or "",
            round=_int(d, "round", "", 0),
            arm=_opt_str(d, "arm", "") or "",
            duration_s=None if duration is None else _float(d, "duration_s", ""),
            run_id=_opt_str(d, "run_id", "") or "",
            metadata=dict(meta),
        )


@dataclass(slots=True)
class Event:
    """Any other Agent Lightning event, kept with a trimmed payload."""

    event_id: str
    event_type: str
    ts: float
    rollout_id: str = ""
    payload: Any = None
    run_id: str = ""


@dataclass(slots=True)
class RunEvent:
    """A run started or ended, as its producer saw it (the `run_events` table). The hooks file
    records the end when the trainer process exits; a run is ended when an end is recorded at
    or after its last data. `run_id` "" stands for the collector's run, as in other records."""

    run_id: str
    event: str
    ts: float
    source: str = ""
    detail: str | None = None

    @classmethod
    def from_payload(cls, d: Any) -> RunEvent:
        if not isinstance(d, Mapping):
            raise ValidationError("run", "expected an object")
        # Required (unlike other records' run_id): an end must say which run it ends; ""
        # says so explicitly.
        run_id = _opt_str(d, "run_id", "")
        if run_id is None:
            raise ValidationError("run_id", "missing")
        event = _str(d, "event", "")
        if event not in RUN_EVENTS:
            raise ValidationError("event", f"expected {' or '.join(RUN_EVENTS)}, got {event!r}")
        return cls(run_id=run_id, event=event, ts=parse_ts(d.get("ts")),
                   source=_opt_str(d, "source", "") or "", detail=_opt_str(d, "detail", ""))

    def to_payload(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "event": self.event, "ts": self.ts,
                "source": self.source, "detail": self.detail}


@dataclass(slots=True)
class Quarantined:
    source: str
    reason: str
    raw: str
    ts: float


@dataclass(slots=True)
class AlertRecord:
    """The current state of one alert instance (a rule and its label set)."""

    fingerprint: str
    alertname: str
    state: Literal["inactive", "pending", "firing", "resolved", "nodata"]
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    active_since: float | None
    updated_at: float
    run_id: str = ""
    severity: str = "warning"


__all__ = [
    "Action", "AlertRecord", "CHECKED_MODES", "Check", "DECISIONS_EVENT", "DECISION_EVENT",
    "DECISION_SCHEMA", "Decision", "Event", "MODES", "Mode", "PENALTY_KEY", "Quarantined",
    "REWARD_EVENT", "RUN_EVENTS", "Reward", "RolloutTransition", "RunEvent", "STOPPING",
    "VERDICTS", "ValidationError", "parse_ts",
]
