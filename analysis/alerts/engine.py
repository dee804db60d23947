"""The alert state machine: pending -> firing -> resolved, no-data, silences and inhibition.

The engine never queries anything. The caller evaluates each rule (SQL or detector, see
`Evaluator`) and hands the results to `AlertEngine.evaluate`, which returns the transitions,
persists them through an `AlertStateStore` and passes them to the notifiers.

States of one alert instance (a rule plus a label set, identified by its fingerprint):

    inactive --sample--> pending --`for` elapsed--> firing --no sample, `keep_firing_for`
    elapsed--> resolved --next evaluation--> inactive;  pending --no sample--> inactive;
    any --NoData--> nodata --data back--> firing (if it had fired) or pending / resolved / inactive.

`for` and `keep_firing_for` count seconds, or rounds: a rule with `for = "3 rounds"` fires on the
third consecutive round in which its condition holds. The round of an instance is its sample's
`round`, else `now_round` (an int, or a mapping run_id -> round), else the latest round seen for
its run_id; with none of these, each evaluation counts as one round.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal, Protocol

from .alert_rules import (InhibitRule, Matcher, NoData, AlertRule, AlertRuleSet, Sample,
                          matches_all, render_template)

State = Literal["inactive", "pending", "firing", "resolved", "nodata"]
STATES: tuple[State, ...] = ("inactive", "pending", "firing", "resolved", "nodata")


def fingerprint(labels: Mapping[str, str]) -> str:
    """sha256 of the sorted label set (alertname included), first 16 hex digits."""
    canon = json.dumps(sorted(labels.items()), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


def to_epoch(value: Any) -> float | None:
    """Epoch seconds from a float or a datetime (naive datetimes are taken as UTC)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return float(value)


def _json_obj(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        return dict(json.loads(value))
    return dict(value)


# --- records --------------------------------------------------------------------------------------


@dataclass(slots=True)
class AlertState:
    """One alert instance that is not inactive. Times are epoch seconds.

    The first ten fields are the columns of the `alerts` table; the rest is bookkeeping for `for`
    and `keep_firing_for`, stored as JSON in `meta` by `to_row`.
    """

    fingerprint: str
    alertname: str
    state: State
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    active_since: float | None  # when the current episode began (entered pending)
    updated_at: float
    run_id: str | None = None
    severity: str | None = None
    rule_uid: str = ""
    fired_at: float | None = None  # when it (last) went firing: Alertmanager's startsAt
    resolved_at: float | None = None  # Alertmanager's endsAt
    pending_round: int | None = None
    pending_eval: int = 0
    false_since: float | None = None  # keep_firing_for: first evaluation without the condition
    false_round: int | None = None
    false_eval: int = 0
    last_round: int | None = None
    info: dict[str, str] = field(default_factory=dict)
    silenced_by: tuple[str, ...] = ()  # recomputed at every evaluation, not stored
    inhibited: bool = False

    @property
    def suppressed(self) -> bool:
        return bool(self.silenced_by) or self.inhibited

    _META = ("rule_uid", "fired_at", "resolved_at", "pending_round", "pending_eval",
             "false_since", "false_round", "false_eval", "last_round", "info")

    def to_row(self) -> dict[str, Any]:
        """The `alerts` row (epoch floats for the TIMESTAMP columns) plus `meta` JSON."""
        return {
            "fingerprint": self.fingerprint, "alertname": self.alertname, "run_id": self.run_id,
            "state": self.state, "severity": self.severity,
            "labels": json.dumps(self.labels, sort_keys=True),
            "annotations": json.dumps(self.annotations, sort_keys=True),
            "value": self.value, "active_since": self.active_since, "updated_at": self.updated_at,
            "meta": json.dumps({k: getattr(self, k) for k in self._META}, sort_keys=True),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AlertState:
        """Inverse of `to_row`; accepts datetimes, and rows without `meta`."""
        meta = _json_obj(row.get("meta"))
        value = row.get("value")
        return cls(
            fingerprint=str(row["fingerprint"]), alertname=str(row["alertname"]),
            state=row["state"], labels={k: str(v) for k, v in _json_obj(row.get("labels")).items()},
            annotations={k: str(v) for k, v in _json_obj(row.get("annotations")).items()},
            value=None if value is None or (isinstance(value, float) and math.isnan(value))
            else float(value),
            active_since=to_epoch(row.get("active_since")),
            updated_at=to_epoch(row["updated_at"]) or 0.0,
            run_id=row.get("run_id"), severity=row.get("severity"),
            **{k: meta[k] for k in cls._META if k in meta},
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """An instance changing state; `labels` include alertname. Times are epoch seconds."""

    fingerprint: str
    alertname: str
    from_state: State
    to_state: State
    ts: float
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    run_id: str | None = None
    severity: str | None = None
    round: int | None = None
    starts_at: float | None = None
    ends_at: float | None = None
    silenced: bool = False
    inhibited: bool = False

    @property
    def notifiable(self) -> bool:
        """What an Alertmanager receiver hears about: firing and resolved, unsuppressed."""
        return self.to_state in ("firing", "resolved") and not (self.silenced or self.inhibited)

    def to_row(self) -> dict[str, Any]:
        """The `alert_events` row (`ts` as epoch seconds)."""
        return {
            "fingerprint": self.fingerprint, "alertname": self.alertname, "run_id": self.run_id,
            "from_state": self.from_state, "to_state": self.to_state, "value": self.value,
            "labels": json.dumps(self.labels, sort_keys=True), "ts": self.ts,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": self.ts, "fingerprint": self.fingerprint, "alertname": self.alertname,
            "from": self.from_state, "to": self.to_state, "value": self.value,
            "round": self.round, "labels": self.labels, "annotations": self.annotations,
            "starts_at": self.starts_at, "ends_at": self.ends_at,
            "silenced": self.silenced, "inhibited": self.inhibited,
        }


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes notifications of matching alerts between starts_at and ends_at (epoch seconds)."""

    silence_id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    comment: str = ""
    created_by: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.matchers, labels)

    def to_row(self) -> dict[str, Any]:
        """The `silences` row: matchers as a JSON list of matcher strings, epoch-second times."""
        return {
            "silence_id": self.silence_id, "matchers": json.dumps([str(m) for m in self.matchers]),
            "comment": self.comment, "created_by": self.created_by,
            "starts_at": self.starts_at, "ends_at": self.ends_at,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Silence:
        raw = row["matchers"]
        items = json.loads(raw) if isinstance(raw, str) else raw
        return cls(
            silence_id=str(row["silence_id"]),
            matchers=tuple(Matcher.parse(m) for m in items),
            starts_at=to_epoch(row["starts_at"]) or 0.0,
            ends_at=to_epoch(row["ends_at"]) or 0.0,
            comment=row.get("comment") or "", created_by=row.get("created_by") or "",
        )


# --- protocols ---------------------------------------------------------------------------------


class Evaluator(Protocol):
    """Evaluates one rule now: its active samples, or raises NoData. Implemented by the caller
    (SQL against storage for `expr` rules, `detectors.evaluate_detector` for `detector` rules)."""

    def evaluate(self, rule: AlertRule) -> list[Sample]: ...


class AlertStateStore(Protocol):
    """Where alert state lives between evaluations (DuckDB tables alerts, alert_events, silences).

    `save` receives this evaluation's transitions (append to alert_events) and the complete set of
    non-inactive instances (replace the alerts table with it).
    """

    def load_active(self) -> dict[str, AlertState]: ...

    def save(self, transitions: Sequence[Transition], states: Mapping[str, AlertState]) -> None: ...

    def silences(self, now: float) -> list[Silence]: ...

    def add_silence(self, silence: Silence) -> None: ...

    def expire_silence(self, silence_id: str, now: float) -> bool: ...


class Notifier(Protocol):
    def notify(self, transitions: Sequence[Transition], firing: Sequence[AlertState]) -> None: ...


class InMemoryAlertStore:
    """An AlertStateStore in memory, for tests and for running without a database."""

    def __init__(self) -> None:
        self.states: dict[str, AlertState] = {}
        self.events: list[Transition] = []
        self._silences: dict[str, Silence] = {}

    def load_active(self) -> dict[str, AlertState]:
        return {fp: replace(st) for fp, st in self.states.items()}

    def save(self, transitions: Sequence[Transition], states: Mapping[str, AlertState]) -> None:
        self.events.extend(transitions)
        self.states = {fp: replace(st) for fp, st in states.items()}

    def silences(self, now: float) -> list[Silence]:
        return [s for s in self._silences.values() if s.active(now)]

    def all_silences(self) -> list[Silence]:
        return list(self._silences.values())

    def add_silence(self, silence: Silence) -> None:
        self._silences[silence.silence_id] = silence

    def expire_silence(self, silence_id: str, now: float) -> bool:
        s = self._silences.get(silence_id)
        if s is None or s.ends_at <= now:
            return False
        self._silences[silence_id] = replace(s, ends_at=max(s.starts_at, now))
        return True


def _no_data_summary(labels: Mapping[str, str], why: NoData) -> str:
    where = ", ".join(f"{word} {labels[k]}" for k, word in (("run_id", "run"), ("arm", "arm"))
                      if labels.get(k))
    reason = str(why).strip()
    return (f"{labels.get('alertname', 'alert')}: no data" + (f" ({where})" if where else "")
            + (f": {reason}" if reason else ""))


EvalResult = list[Sample] | NoData | Exception


def evaluate_rules(rules: Sequence[AlertRule], evaluator: Evaluator) -> dict[AlertRule, EvalResult]:
    """Run the evaluator on every rule; NoData and errors are results, never raised."""
    out: dict[AlertRule, EvalResult] = {}
    for rule in rules:
        try:
            out[rule] = list(evaluator.evaluate(rule))
        except NoData as exc:
            out[rule] = exc
        except Exception as exc:  # a broken query must not stop the other rules
            out[rule] = exc
    return out


def exit_code(states: Sequence[AlertState] | Mapping[str, AlertState]) -> int:
    """For `tractatus-watch check`: 0 nothing firing, 1 something firing (2 is kept for errors)."""
    items = states.values() if isinstance(states, Mapping) else states
    return 1 if any(s.state == "firing" and not s.silenced_by for s in items) else 0


# --- the engine --------------------------------------------------------------------------------


class AlertEngine:
    def __init__(self, rules: AlertRuleSet | Sequence[AlertRule],
                 store: AlertStateStore | None = None,
                 notifiers: Sequence[Notifier] = (),
                 inhibit_rules: Sequence[InhibitRule] | None = None) -> None:
        if isinstance(rules, AlertRuleSet):
            self.rules = rules.rules
            self.inhibit_rules = list(rules.inhibit_rules if inhibit_rules is None
                                      else inhibit_rules)
        else:
            self.rules = list(rules)
            self.inhibit_rules = list(inhibit_rules or ())
        self.store: AlertStateStore = store if store is not None else InMemoryAlertStore()
        self.notifiers = list(notifiers)
        self.notify_failures = 0
        self.rule_errors: dict[str, str] = {}  # rule uid -> last evaluation error
        self._states: dict[str, AlertState] = self.store.load_active()
        self._evals = 0
        self._run_round: dict[str, int] = {}
        by_uid = {r.uid: r for r in self.rules}
        by_name = {r.name: r for r in self.rules}
        for st in self._states.values():
            # After a reload the position of a rule may have moved: fall back to its name.
            if st.rule_uid not in by_uid and st.alertname in by_name:
                st.rule_uid = by_name[st.alertname].uid

    # --- queries ---

    def states(self) -> list[AlertState]:
        return sorted(self._states.values(), key=lambda s: (s.alertname, s.fingerprint))

    def firing(self) -> list[AlertState]:
        return [s for s in self.states() if s.state == "firing"]

    def get(self, fp: str) -> AlertState | None:
        return self._states.get(fp)

    # --- silences ---

    def add_silence(self, matchers: Sequence[Matcher | str], starts_at: float, ends_at: float,
                    comment: str = "", created_by: str = "",
                    silence_id: str | None = None) -> Silence:
        if ends_at <= starts_at:
            raise ValueError("a silence must end after it starts")
        ms = tuple(m if isinstance(m, Matcher) else Matcher.parse(m) for m in matchers)
        if not ms:
            raise ValueError("a silence needs at least one matcher")
        s = Silence(silence_id or uuid.uuid4().hex, ms, starts_at, ends_at, comment, created_by)
        self.store.add_silence(s)
        return s

    def expire_silence(self, silence_id: str, now: float) -> bool:
        return self.store.expire_silence(silence_id, now)

    # --- evaluation ---

    def _round_for(self, labels: Mapping[str, str], sample_round: int | None,
                   now_round: int | Mapping[str, int] | None) -> int | None:
        if sample_round is not None:
            return sample_round
        run = labels.get("run_id")
        if isinstance(now_round, Mapping):
            if run is not None and run in now_round:
                return int(now_round[run])
        elif now_round is not None:
            return int(now_round)
        # Otherwise the latest round any sample of this evaluation showed for the same run.
        return self._run_round.get(run) if run is not None else None

    def _elapsed_rounds(self, start_round: int | None, start_eval: int,
                        cur_round: int | None) -> int:
        if start_round is not None and cur_round is not None:
            return cur_round - start_round
        return self._evals - start_eval

    def evaluate(self, now: float, now_round: int | Mapping[str, int] | None,
                 results: Mapping[AlertRule, EvalResult]) -> list[Transition]:
        """Advance every instance of the rules in `results`; rules absent from it are untouched."""
        self._evals += 1
        for res in results.values():
            if isinstance(res, list):
                for s in res:
                    run = s.labels.get("run_id")
                    if run is not None and s.round is not None:
                        self._run_round[run] = max(self._run_round.get(run, s.round), s.round)
        changes: list[tuple[AlertState, State, State, int | None]] = []  # st, from, to, round

        def move(st: AlertState, to: State, rnd: int | None) -> None:
            changes.append((st, st.state, to, rnd))
            st.state = to
            st.updated_at = now

        for rule in self.rules:
            if rule not in results:
                continue
            res = results[rule]
            mine = {fp: st for fp, st in self._states.items() if st.rule_uid == rule.uid}
            if isinstance(res, NoData):
                self.rule_errors.pop(rule.uid, None)
                if not mine:
                    labels = {**rule.labels, "alertname": rule.name}
                    st = self._new_state(rule, labels, None, now, None, {})
                    self._states[st.fingerprint] = st
                    mine = {st.fingerprint: st}
                for st in mine.values():
                    if st.state != "nodata":
                        st.value = None
                        # The rule's templates speak of a value and labels a no-data state
                        # does not have: say what is missing instead.
                        st.annotations = {"summary": _no_data_summary(st.labels, res)}
                        move(st, "nodata", self._round_for(st.labels, None, now_round))
                continue
            if isinstance(res, Exception):
                self.rule_errors[rule.uid] = f"{type(res).__name__}: {res}"
                continue
            self.rule_errors.pop(rule.uid, None)
            seen: set[str] = set()
            for sample in res:
                labels = {**{k: str(v) for k, v in sample.labels.items() if v is not None},
                          **rule.labels, "alertname": rule.name}
                fp = fingerprint(labels)
                if fp in seen:
                    continue  # two rows with one label set: the first wins, as in Prometheus
                seen.add(fp)
                rnd = self._round_for(labels, sample.round, now_round)
                # SQL may hand back Decimal or numpy scalars: keep plain floats (JSON, storage).
                value = None if sample.value is None else float(sample.value)
                if fp not in self._states:
                    self._states[fp] = self._new_state(rule, labels, value, now, rnd, sample.info)
                st = self._states[fp]
                st.value = value
                st.updated_at = now
                st.info = dict(sample.info)
                st.last_round = rnd if rnd is not None else st.last_round
                st.annotations = {k: render_template(v, labels, value, sample.info)
                                  for k, v in rule.annotations.items()}
                self._present(rule, st, now, rnd, move)
            for fp, st in mine.items():
                if fp not in seen:
                    self._absent(rule, st, now, self._round_for(st.labels, None, now_round), move)

        for st in list(self._states.values()):
            if st.state == "inactive":
                del self._states[st.fingerprint]
        self._suppress(now)
        transitions = [self._transition(st, frm, to, rnd, now) for st, frm, to, rnd in changes]
        self.store.save(transitions, dict(self._states))
        firing = self.firing()
        for notifier in self.notifiers:
            try:
                notifier.notify(transitions, firing)
            except Exception:  # notifiers count their own failures; this is the last guard
                self.notify_failures += 1
        return transitions

    def _new_state(self, rule: AlertRule, labels: dict[str, str], value: float | None, now: float,
                   rnd: int | None, info: Mapping[str, str]) -> AlertState:
        return AlertState(
            fingerprint=fingerprint(labels), alertname=rule.name, state="inactive",
            labels=labels,
            annotations={k: render_template(v, labels, value, info)
                         for k, v in rule.annotations.items()},
            value=value, active_since=None, updated_at=now, run_id=labels.get("run_id"),
            severity=labels.get("severity"), rule_uid=rule.uid, last_round=rnd, info=dict(info),
        )

    def _for_elapsed(self, rule: AlertRule, st: AlertState, now: float, rnd: int | None) -> bool:
        if rule.for_.zero:
            return True
        if rule.for_.in_rounds:
            return self._elapsed_rounds(st.pending_round, st.pending_eval, rnd) + 1 >= (
                rule.for_.amount)
        return st.active_since is not None and now - st.active_since >= rule.for_.amount

    def _start_pending(self, rule: AlertRule, st: AlertState, now: float, rnd: int | None,
                       move: Callable[[AlertState, State, int | None], None]) -> None:
        st.active_since = now
        st.pending_round = rnd
        st.pending_eval = self._evals
        st.resolved_at = None
        st.false_since, st.false_round = None, None
        if self._for_elapsed(rule, st, now, rnd):
            st.fired_at = now
            move(st, "firing", rnd)
        else:
            st.fired_at = None
            move(st, "pending", rnd)

    def _present(self, rule: AlertRule, st: AlertState, now: float, rnd: int | None,
                 move: Callable[[AlertState, State, int | None], None]) -> None:
        st.false_since, st.false_round = None, None
        if st.state in ("inactive", "resolved"):
            self._start_pending(rule, st, now, rnd, move)
        elif st.state == "pending":
            if self._for_elapsed(rule, st, now, rnd):
                st.fired_at = now
                move(st, "firing", rnd)
        elif st.state == "nodata":
            if st.fired_at is not None and st.resolved_at is None:
                # The condition never demonstrably stopped: resume firing without a new wait.
                move(st, "firing", rnd)
            else:
                self._start_pending(rule, st, now, rnd, move)

    def _absent(self, rule: AlertRule, st: AlertState, now: float, rnd: int | None,
                move: Callable[[AlertState, State, int | None], None]) -> None:
        if st.state in ("pending", "resolved"):
            move(st, "inactive", rnd)
        elif st.state == "nodata":
            if st.fired_at is not None and st.resolved_at is None:
                st.resolved_at = now
                move(st, "resolved", rnd)
            else:
                move(st, "inactive", rnd)
        elif st.state == "firing":
            kff = rule.keep_firing_for
            if not kff.zero:
                if st.false_since is None:
                    st.false_since, st.false_round, st.false_eval = now, rnd, self._evals
                if kff.in_rounds:
                    held = self._elapsed_rounds(st.false_round, st.false_eval, rnd) < kff.amount
                else:
                    held = now - st.false_since < kff.amount
                if held:
                    return
            st.resolved_at = now
            move(st, "resolved", rnd)

    def _suppress(self, now: float) -> None:
        silences = self.store.silences(now)
        states = list(self._states.values())
        sources = [s for s in states if s.state == "firing"]
        for st in states:
            st.silenced_by = tuple(s.silence_id for s in silences
                                   if s.active(now) and s.matches(st.labels))
            st.inhibited = any(
                src.fingerprint != st.fingerprint
                and matches_all(rule.target_matchers, st.labels)
                and matches_all(rule.source_matchers, src.labels)
                and all(src.labels.get(k, "") == st.labels.get(k, "") for k in rule.equal)
                for rule in self.inhibit_rules for src in sources)

    def _transition(self, st: AlertState, frm: State, to: State, rnd: int | None,
                    now: float) -> Transition:
        return Transition(
            fingerprint=st.fingerprint, alertname=st.alertname, from_state=frm,
            to_state=to, ts=now, labels=dict(st.labels), annotations=dict(st.annotations),
            value=st.value, run_id=st.run_id, severity=st.severity, round=rnd,
            starts_at=st.fired_at if st.fired_at is not None else st.active_since,
            ends_at=st.resolved_at, silenced=bool(st.silenced_by), inhibited=st.inhibited,
        )


__all__ = [
    "AlertEngine", "AlertState", "AlertStateStore", "EvalResult", "Evaluator",
    "InMemoryAlertStore", "Notifier", "STATES", "Silence", "State", "Transition",
    "evaluate_rules", "exit_code", "fingerprint", "to_epoch",
]
