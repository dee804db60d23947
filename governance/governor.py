"""The Governor: the one object a governed agent calls.

    gov = Governor.from_env(services=default_services(load_rules(path)), agent_id="agent-3")
    decision = gov.check({"kind": "publish", "text": article}, round=12)
    if decision.executed:        # or Governor.allowed(decision)
        publish(article)

`check` runs every service on the action and returns the `Decision` record of `events.py`
(`tractatus.decision/1`), which it also hands to the sink (the background Agent Lightning
sender, or a spool writer). Modes:

- `enforce` (the governed arm): the checks are enforced; a `block` verdict stops the action
  (`executed=False`), and so does `escalate`: escalation asks a human, and an agent in a
  training loop cannot wait for one, so the action is not executed (it counts as stopped, not as
  an attempted violation). `warn` lets it through.
- `penalize` (the penalized arm: the other governance design, a violation turned into a reward
  penalty): the checks run and are enforced as in `enforce` (they count in coverage), but a
  stopping verdict (block or escalate) does not stop the action: it runs (`executed=True`, so a
  violation counts as escaped) and costs `penalty` reward, which the decision states in its
  `penalty` field (`Decision.penalty`; absent when it cost nothing). The job subtracts it from
  the rollout's reward.
- `shadow` (the ungoverned baseline): every check runs and is recorded with `enforced=False`;
  nothing is stopped, so would-be violations show up as escaped.
- `off`: no checks at all; the action is recorded as executed (coverage 0).

`service_modes` overrides the mode per service name, but can only weaken it (off < shadow <
penalize < enforce): a service cannot be enforced when the Governor is in shadow, and a service
of a penalizing Governor in `enforce` is penalized. `penalize` is refused for a service of an
enforcing Governor: a decision either stops its action or penalizes it, never some of each.
Auditors are extra services run in shadow on a seeded random sample (`audit_sample`) of the
actions; their checks carry `enforced=False` and `audit=True`, which is how evasion (passed every
enforced check, flagged by an auditor) becomes visible.

The decision's `verdict` is what governance imposed: the strongest verdict of the enforced
checks (`allow` in shadow and off mode; the would-be verdicts stay on the checks).

A service that raises is recorded as an ESCALATE check (rule `SERVICE-ERROR`): the action is
stopped in enforce mode, but the failure is not counted as the agent's violation. Nothing in
`check` raises into the agent except a malformed call (an action without `kind`, a negative
round), which is the caller's bug.

Environment read by `from_env`: `AGL_EVENT_URL`, `AGL_KEY` or `AGL_KEY_FILE` (the sender);
without a URL, `TRACTATUS_WATCH_SPOOL` (a spool folder); and optionally
`TRACTATUS_WATCH_RUN_ID`, `TRACTATUS_WATCH_AGENT_ID`, `TRACTATUS_WATCH_ARM`,
`TRACTATUS_WATCH_MODE`, `TRACTATUS_WATCH_PENALTY`. Keyword arguments win over the environment.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import re
import secrets
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Final, Iterable, Iterator, Mapping, Protocol, TypeVar

from ..records.events import MODES, PENALTY_KEY, STOPPING, Action, Check, Decision, Mode, Reward
from ..records.rulesets import NO_RULES, RuleSetInfo
from .sender import Sender, parse_event_url
from .services import ActionInput, CustomRule, Service, default_services
from .spool_writer import SpoolWriter
from ..records.verdicts import strongest
from ..records.witness import CALL_DIGEST_KEY, TOOL_KEY, call_digest, tool_call_parts

log = logging.getLogger(__name__)

_MODE_RANK: Final = {"off": 0, "shadow": 1, "penalize": 2, "enforce": 3}
# The reward a penalized action costs unless the Governor is told otherwise (README).
DEFAULT_PENALTY: Final = 1.0
# The arm a Governor names in its records when it is not told one.
_DEFAULT_ARMS: Final = {"enforce": "governed", "penalize": "penalized"}
_SUMMARY_CHARS: Final = 160
# Rule sets are announced with the first decision of every rollout and at least once every this
# many decisions (a job without rollout ids), so a collector that starts late still learns them.
_ANNOUNCE_EVERY: Final = 500
_EMAIL: Final = re.compile(r"[\w.%+-]+@[\w.-]+\.[a-z]{2,}", re.I)
_LONG_NUMBER: Final = re.compile(r"\+?\d[\d ().-]{6,}\d")

T = TypeVar("T")


class Sink(Protocol):
    def emit_decision(self, decision: Decision) -> None: ...
    def emit_reward(self, reward: Reward) -> None: ...
    def close(self, timeout: float | None = ...) -> Any: ...


class Blocked(Exception):
    """Raised by the guards when governance stopped an action; carries the decision."""

    def __init__(self, decision: Decision) -> None:
        stopping = [c for c in decision.checks if c.enforced and c.verdict in STOPPING]
        why = "; ".join(f"{c.service} {c.rule_id}: {c.reason}" for c in stopping) \
            or decision.verdict
        super().__init__(f"action {decision.action.kind!r} stopped ({decision.verdict}): {why}")
        self.decision = decision


def _summary(a: ActionInput) -> str:
    """A short line for dashboards. Derived from the content, it is cut and has e-mail
    addresses and long numbers masked: decisions travel to stores that must not collect
    the personal data the rules exist to stop."""
    if a.summary:
        return a.summary
    text = a.headline or a.text
    if len(text) > _SUMMARY_CHARS:
        text = text[:_SUMMARY_CHARS - 1] + "…"
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    text = _LONG_NUMBER.sub("[number]", text)
    return text


def _check_mode(mode: str, what: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"{what}: expected one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _check_penalty(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"penalty: expected a finite number >= 0, got {value!r}")
    return float(value)


class Governor:
    """Runs the services on each action and decides; see the module docstring for the modes.

    `services`: services or plain rule callables (default: `default_services()`); `auditors`:
    services run in shadow on a seeded sample (`audit_sample`, `seed`) of the actions; `sink`:
    where decisions and rewards go (a `Sender`, a `SpoolWriter`, or None); `context`: defaults
    merged under each call's context; `penalty`: what a penalized action costs (penalize mode).
    """

    def __init__(self, services: Iterable[Service | Callable[..., Any]] | None = None, *,
                 mode: Mode = "enforce", service_modes: Mapping[str, Mode] | None = None,
                 auditors: Iterable[Service | Callable[..., Any]] = (), audit_sample: float = 0.1,
                 seed: int = 0, agent_id: str = "agent-0", arm: str | None = None,
                 run_id: str = "", rollout_id: str = "", sink: Sink | None = None,
                 context: Mapping[str, Any] | None = None,
                 penalty: float = DEFAULT_PENALTY) -> None:
        self.mode: Mode = _check_mode(mode, "mode")
        self.penalty = _check_penalty(penalty)
        self.services = [self._as_service(s) for s in
                         (default_services() if services is None else services)]
        self.service_modes = {name: _check_mode(m, f"service_modes[{name!r}]")
                              for name, m in (service_modes or {}).items()}
        if self.mode == "enforce" and "penalize" in self.service_modes.values():
            raise ValueError("service_modes: penalize needs the Governor in penalize mode (a "
                             "decision either stops its action or penalizes it)")
        self.auditors = [self._as_service(s) for s in auditors]
        if not 0.0 <= audit_sample <= 1.0:
            raise ValueError("audit_sample must be in [0, 1]")
        self.audit_sample = audit_sample
        self._rng = random.Random(seed)
        self.agent_id = agent_id
        self.arm = arm if arm is not None else _DEFAULT_ARMS.get(mode, "ungoverned")
        self.run_id = run_id
        self.rollout_id = rollout_id
        self.sink = sink
        self.context = dict(context or {})
        self.decisions = 0
        self.sink_errors = 0
        self._reward_seq: dict[str, int] = {}
        # In default reward ids: a new Governor (a restarted agent reusing a rollout id, two
        # agents in one rollout) never repeats the id of another one's reward.
        self.instance_id = secrets.token_hex(6)
        # Rule-set versions by service, cached on the identity of its `rule_ids` tuple.
        self._sets: dict[str, tuple[tuple[str, ...], RuleSetInfo]] = {}
        self._known_sets: dict[tuple[str, str], RuleSetInfo] = {}  # (service, version)
        self._announced_rollout: str | None = None
        self._sent: set[tuple[str, str]] = set()
        self._since_announce = 0
        # (service, enforced) for every service that runs, fixed once: modes do not change.
        self._plan: list[tuple[Service, bool]] = []
        for service in self.services:
            effective = min(self.mode, self.service_modes.get(service.name, self.mode),
                            key=_MODE_RANK.__getitem__)
            if effective != "off":
                self._plan.append((service, effective in ("enforce", "penalize")))

    @staticmethod
    def _as_service(s: Service | Callable[..., Any]) -> Service:
        if hasattr(s, "check") and hasattr(s, "name"):
            return s
        if callable(s):
            return CustomRule(s)
        raise TypeError(f"not a service or a rule callable: {s!r}")

    @classmethod
    def from_env(cls, services: Iterable[Service | Callable[..., Any]] | None = None, *,
                 env: Mapping[str, str] | None = None, **kw: Any) -> Governor:
        """A Governor whose sink comes from the environment (see the module docstring)."""
        env = os.environ if env is None else env
        for key, var in (("run_id", "TRACTATUS_WATCH_RUN_ID"),
                         ("agent_id", "TRACTATUS_WATCH_AGENT_ID"),
                         ("arm", "TRACTATUS_WATCH_ARM"), ("mode", "TRACTATUS_WATCH_MODE")):
            if env.get(var):
                kw.setdefault(key, env[var])
        if env.get("TRACTATUS_WATCH_PENALTY") and "penalty" not in kw:
            try:
                kw["penalty"] = float(env["TRACTATUS_WATCH_PENALTY"])
            except ValueError:
                raise ValueError("TRACTATUS_WATCH_PENALTY: expected a number, got "
                                 f"{env['TRACTATUS_WATCH_PENALTY']!r}") from None
        if "sink" not in kw:
            url = env.get("AGL_EVENT_URL", "").strip()
            if url:
                agl_key = env.get("AGL_KEY") or ""
                if not agl_key and env.get("AGL_KEY_FILE"):
                    agl_key = Path(env["AGL_KEY_FILE"]).read_text(encoding="utf-8").strip()
                kw["sink"] = Sender(url, key=agl_key or None)
                kw.setdefault("rollout_id", parse_event_url(url)[1])
            elif env.get("TRACTATUS_WATCH_SPOOL"):
                kw["sink"] = SpoolWriter(env["TRACTATUS_WATCH_SPOOL"])
            else:
                log.warning("no AGL_EVENT_URL or TRACTATUS_WATCH_SPOOL: decisions are not recorded")
        return cls(services, **kw)

    # --- checking --------------------------------------------------------------------------------

    def _run(self, service: Service, a: ActionInput, context: Mapping[str, Any]) -> Check:
        try:
            return service.check(a, context)
        except Exception as exc:
            return self._failed(service, exc)

    @staticmethod
    def _failed(service: Service, exc: Exception) -> Check:
        return Check(service=getattr(service, "name", type(service).__name__), verdict="escalate",
                     raw_verdict="ESCALATE", rule_id="SERVICE-ERROR", severity="HIGH",
                     reason=f"service error: {type(exc).__name__}: {exc}", ruleset=NO_RULES)

    def _stamp(self, service: Service, c: Check) -> None:
        """Give the check its rule-set version: the one the service set (NO_RULES), else the
        version of the service's `rule_ids`; none when the service does not list its rules."""
        if c.ruleset == NO_RULES:
            key = (c.service, NO_RULES)
            if key not in self._known_sets:
                self._known_sets[key] = RuleSetInfo(c.service, NO_RULES, ())
            return
        ids = getattr(service, "rule_ids", None)
        if ids is None or c.ruleset:
            return
        cached = self._sets.get(c.service)
        if cached is None or cached[0] is not ids:
            info = RuleSetInfo.of(c.service, ids)
            self._sets[c.service] = (ids, info)
            self._known_sets.setdefault((c.service, info.version), info)
        else:
            info = cached[1]
        c.ruleset = info.version

    def _announcement(self, checks: list[Check], rollout_id: str) -> list[RuleSetInfo]:
        """The rule sets this decision carries: every set known so far with the first decision
        of a rollout and every `_ANNOUNCE_EVERY`-th one (a collector that starts late, or a
        poller that misses rollouts, still learns them); else only sets not sent before."""
        self._since_announce += 1
        if rollout_id != self._announced_rollout or self._since_announce >= _ANNOUNCE_EVERY:
            self._announced_rollout = rollout_id
            self._since_announce = 0
            self._sent.update(self._known_sets)
            return list(self._known_sets.values())
        out = []
        for c in checks:
            key = (c.service, c.ruleset)
            if c.ruleset and key not in self._sent and key in self._known_sets:
                self._sent.add(key)
                out.append(self._known_sets[key])
        return out

    def check(self, action: Any, *, round: int, rollout_id: str | None = None,
              context: Mapping[str, Any] | None = None, tool_call: Any = None) -> Decision:
        """Govern one action and return its decision (also sent to the sink).

        `tool_call`: the model's tool call this action comes from (OpenAI's `{"function":
        {"name", "arguments"}}`). Its name and argument digest go into the decision, which is
        how the gateway's witness matches the call to this decision (witnessed coverage)."""
        start = time.perf_counter_ns()
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise ValueError(f"round: expected an integer >= 0, got {round!r}")
        a = ActionInput.coerce(action)
        called = tool_call_parts(tool_call) if tool_call is not None else None
        ctx: Mapping[str, Any] = ({**self.context, **(context or {})} if self.context
                                  else (context or {}))
        checks: list[Check] = []
        if self.mode != "off":
            for service, enforced in self._plan:
                try:  # inlined rather than self._run: a call per service shows at this budget
                    c = service.check(a, ctx)
                except Exception as exc:
                    c = self._failed(service, exc)
                c.enforced = enforced
                self._stamp(service, c)
                checks.append(c)
            if self.auditors and self._rng.random() < self.audit_sample:
                for service in self.auditors:
                    c = self._run(service, a, ctx)
                    c.enforced = False
                    c.extra["audit"] = True
                    self._stamp(service, c)
                    checks.append(c)
        verdict = strongest([c.verdict for c in checks if c.enforced])
        stopping = verdict in STOPPING
        executed = not (stopping and self.mode == "enforce")
        extra: dict[str, Any] = {"domain": a.domain} if a.domain else {}
        if called is not None:
            extra[TOOL_KEY], extra[CALL_DIGEST_KEY] = called[0], call_digest(called[1])
        rollout = rollout_id or self.rollout_id
        decision = Decision(
            decision_id=secrets.token_hex(16), agent_id=self.agent_id, round=round, arm=self.arm,
            mode=self.mode, action=Action(kind=a.kind, summary=_summary(a), digest=a.digest(),
                                          extra=extra),
            checks=checks, verdict=verdict, executed=executed, latency_us=0, ts=time.time(),
            run_id=self.run_id, rollout_id=rollout,
            rulesets=self._announcement(checks, rollout) if checks else [],
            extra={PENALTY_KEY: self.penalty} if stopping and self.mode == "penalize" else {},
        )
        decision.latency_us = (time.perf_counter_ns() - start) // 1000
        self.decisions += 1
        if self.sink is not None:
            try:
                self.sink.emit_decision(decision)
            except Exception:  # recording must never break the agent
                self.sink_errors += 1
        return decision

    @staticmethod
    def allowed(decision: Decision) -> bool:
        """Whether the agent may run the action (the decision's `executed`)."""
        return decision.executed

    # --- guards ----------------------------------------------------------------------------------

    @contextmanager
    def guard(self, action: Any, *, round: int, rollout_id: str | None = None,
              context: Mapping[str, Any] | None = None) -> Iterator[Decision]:
        """`with gov.guard(action, round=r): run(action)`; raises `Blocked` when stopped."""
        decision = self.check(action, round=round, rollout_id=rollout_id, context=context)
        if not decision.executed:
            raise Blocked(decision)
        yield decision

    def guarded(self, to_action: Callable[..., Any], *, round: int | Callable[[], int],
                on_block: str = "raise") -> Callable[[Callable[..., T]], Callable[..., T | None]]:
        """Decorator: govern each call; `to_action(*args, **kwargs)` builds the action.
        When stopped, raise `Blocked` (`on_block="raise"`) or return None (`"skip"`)."""
        if on_block not in ("raise", "skip"):
            raise ValueError("on_block must be 'raise' or 'skip'")

        def decorate(fn: Callable[..., T]) -> Callable[..., T | None]:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> T | None:
                r = round() if callable(round) else round
                decision = self.check(to_action(*args, **kwargs), round=r)
                if not decision.executed:
                    if on_block == "raise":
                        raise Blocked(decision)
                    return None
                return fn(*args, **kwargs)
            return wrapper
        return decorate

    # --- rewards and closing ---------------------------------------------------------------------

    def reward(self, value: float, *, round: int, rollout_id: str | None = None,
               reward_id: str | None = None) -> Reward:
        """Record a rollout's reward (sent like the decisions; Agent Lightning's `reward` event)."""
        rollout = rollout_id or self.rollout_id
        seq = self._reward_seq.get(rollout, 0)
        self._reward_seq[rollout] = seq + 1
        default_id = f"{rollout or self.agent_id}:{self.instance_id}:{seq}"
        reward = Reward(reward_id=reward_id or default_id,
                        rollout_id=rollout, agent_id=self.agent_id, round=round, arm=self.arm,
                        value=float(value), ts=time.time(), run_id=self.run_id)
        if self.sink is not None:
            try:
                self.sink.emit_reward(reward)
            except Exception:
                self.sink_errors += 1
        return reward

    def close(self, timeout: float | None = 5.0) -> None:
        if self.sink is not None:
            self.sink.close(timeout)

    def __enter__(self) -> Governor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DEFAULT_PENALTY", "Blocked", "Governor", "Sink"]
