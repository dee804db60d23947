"""Governor modes, per-service overrides, sampled auditors, guards and the decision record."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tractatus_watch.records.events import Decision, Reward
from tractatus_watch.governance.governor import Blocked, Governor
from tractatus_watch.governance.sender import Sender
from tractatus_watch.governance.services import (
    ActionInput, BoundaryEnforcer, default_services, load_rules,
)
from tractatus_watch.governance.spool_writer import SpoolWriter

# Tractatus rules written for the tests (see tests/fixtures/rules/README.md).
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "rules" / "governance-rules.json"

CLICKBAIT = {"kind": "publish", "params": {"headline": "You won't believe this!!!"},
             "text": "The council met on Tuesday."}
INFORMATIVE = {"kind": "publish", "params": {"headline": "Council approves budget"},
               "text": "The council approved the budget on Tuesday.", "sources": ["minutes.pdf"]}


@dataclass
class ListSink:
    decisions: list[Decision] = field(default_factory=list)
    rewards: list[Reward] = field(default_factory=list)
    closed: bool = False

    def emit_decision(self, decision: Decision) -> None:
        self.decisions.append(decision)

    def emit_reward(self, reward: Reward) -> None:
        self.rewards.append(reward)

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def allow_all(action: ActionInput, context: Any) -> None:
    return None


@pytest.fixture(scope="module")
def services() -> list[Any]:
    return default_services(load_rules(SAMPLE))


def test_enforce_blocks_and_records(services: list[Any]) -> None:
    sink = ListSink()
    gov = Governor(services, mode="enforce", agent_id="agent-3", run_id="run-1", sink=sink)
    d = gov.check(CLICKBAIT, round=12, rollout_id="ro-1")
    assert (d.mode, d.arm, d.verdict, d.executed) == ("enforce", "governed", "block", False)
    assert Governor.allowed(d) is False
    assert d.covered and d.attempted and d.blocked and not d.escaped and not d.evasion
    assert [c.service for c in d.checks] == [
        "BoundaryEnforcer", "CrossReferenceValidator", "ContextPressureMonitor",
        "MetacognitiveVerifier", "InstructionPersistenceClassifier"]
    assert all(c.enforced for c in d.checks)
    assert d.checks[0].rule_id == "CONTENT-CLICKBAIT"
    assert (d.agent_id, d.round, d.run_id, d.rollout_id) == ("agent-3", 12, "run-1", "ro-1")
    assert d.latency_us >= sum(c.latency_us for c in d.checks) > 0
    assert sink.decisions == [d]
    ok = gov.check(INFORMATIVE, round=12)
    assert (ok.verdict, ok.executed) == ("allow", True) and Governor.allowed(ok)


def test_escalate_stops_warn_passes() -> None:
    gov = Governor([lambda a, c: "REQUEST_APPROVAL" if a.kind == "pay" else "WARN"])
    paid = gov.check({"kind": "pay", "text": "send 10 EUR"}, round=0)
    assert (paid.verdict, paid.executed, paid.attempted) == ("escalate", False, False)
    warned = gov.check({"kind": "read"}, round=0)
    assert (warned.verdict, warned.executed) == ("warn", True)


def test_shadow_records_but_never_stops(services: list[Any]) -> None:
    gov = Governor(services, mode="shadow")
    d = gov.check(CLICKBAIT, round=1)
    assert (d.mode, d.arm, d.executed, d.verdict) == ("shadow", "ungoverned", True, "allow")
    assert len(d.checks) == 5 and not any(c.enforced for c in d.checks)
    assert d.attempted and d.escaped and not d.covered and not d.blocked
    assert d.checks[0].verdict == "block"  # the would-be verdict stays on the check


def test_off_runs_nothing(services: list[Any]) -> None:
    d = Governor(services, mode="off").check(CLICKBAIT, round=1)
    assert (d.mode, d.checks, d.executed, d.verdict, d.covered) == ("off", [], True, "allow", False)


def test_per_service_modes_only_weaken(services: list[Any]) -> None:
    gov = Governor(services, service_modes={"BoundaryEnforcer": "shadow",
                                            "InstructionPersistenceClassifier": "off"})
    d = gov.check(CLICKBAIT, round=1)
    assert [(c.service, c.enforced) for c in d.checks] == [
        ("BoundaryEnforcer", False), ("CrossReferenceValidator", True),
        ("ContextPressureMonitor", True), ("MetacognitiveVerifier", True)]
    assert d.executed and d.verdict == "allow"
    assert d.evasion  # passed every enforced check, flagged by a shadow one
    shadow = Governor(services, mode="shadow", service_modes={"BoundaryEnforcer": "enforce"})
    assert not any(c.enforced for c in shadow.check(CLICKBAIT, round=1).checks)
    with pytest.raises(ValueError, match="service_modes"):
        Governor(services, service_modes={"BoundaryEnforcer": "loud"})  # type: ignore[dict-item]


def test_penalize_runs_the_action_and_states_its_cost(services: list[Any]) -> None:
    sink = ListSink()
    gov = Governor(services, mode="penalize", penalty=0.25, sink=sink)
    d = gov.check(CLICKBAIT, round=2)
    # The checks govern as in enforce mode (covered, enforced, the verdict imposed), but the
    # action runs: its violation is escaped, never blocked, and it costs the penalty.
    assert (d.mode, d.arm, d.verdict, d.executed) == ("penalize", "penalized", "block", True)
    assert all(c.enforced for c in d.checks) and len(d.checks) == 5
    assert d.covered and d.attempted and d.escaped and not d.blocked and d.penalized
    assert d.penalty == 0.25 and d.extra == {"penalty": 0.25}
    assert Governor.allowed(d) and sink.decisions == [d]
    # The cost travels in the payload and survives a reader (spool, gateway WAL, store).
    payload = json.loads(json.dumps(d.to_payload()))
    assert payload["penalty"] == 0.25 and Decision.from_payload(payload).penalty == 0.25
    ok = gov.check(INFORMATIVE, round=2)
    assert (ok.verdict, ok.executed, ok.penalized, ok.penalty) == ("allow", True, False, 0.0)
    assert "penalty" not in ok.to_payload() and ok.covered
    # Escalation stops an enforced action; penalized, it runs and costs the penalty too.
    asked = Governor([lambda a, c: "REQUEST_APPROVAL"], mode="penalize").check(
        {"kind": "pay"}, round=0)
    assert (asked.verdict, asked.executed, asked.attempted, asked.penalty) == (
        "escalate", True, False, 1.0)
    with gov.guard(CLICKBAIT, round=3) as guarded:  # nothing is stopped: the guard never raises
        assert guarded.penalized


def test_penalize_modes_and_penalty_are_checked(services: list[Any]) -> None:
    assert Governor(services, mode="penalize").penalty == 1.0  # the README's default
    # A service can be weakened below penalize, and enforce is penalized in a penalize Governor.
    gov = Governor(services, mode="penalize", service_modes={"BoundaryEnforcer": "shadow",
                                                             "CrossReferenceValidator": "enforce"})
    d = gov.check(CLICKBAIT, round=1)
    assert [(c.service, c.enforced) for c in d.checks][:2] == [
        ("BoundaryEnforcer", False), ("CrossReferenceValidator", True)]
    assert (d.executed, d.verdict, d.penalty, d.evasion) == (True, "allow", 0.0, True)
    with pytest.raises(ValueError, match="penalize needs the Governor in penalize mode"):
        Governor(services, service_modes={"BoundaryEnforcer": "penalize"})
    for bad in (-1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="penalty"):
            Governor(services, mode="penalize", penalty=bad)  # type: ignore[arg-type]
    # Shadow and off Governors never penalize.
    for mode in ("shadow", "off", "enforce"):
        assert Governor(services, mode=mode).check(CLICKBAIT, round=0).penalty == 0.0


def test_from_env_penalize(services: list[Any]) -> None:
    gov = Governor.from_env(services, env={"TRACTATUS_WATCH_MODE": "penalize",
                                           "TRACTATUS_WATCH_PENALTY": "0.5"})
    assert (gov.mode, gov.arm, gov.penalty) == ("penalize", "penalized", 0.5)
    assert gov.check(CLICKBAIT, round=0).penalty == 0.5
    assert Governor.from_env(services, env={"TRACTATUS_WATCH_PENALTY": "0.5"},
                             penalty=2.0).penalty == 2.0  # keyword arguments win
    with pytest.raises(ValueError, match="TRACTATUS_WATCH_PENALTY: expected a number"):
        Governor.from_env(services, env={"TRACTATUS_WATCH_PENALTY": "lots"})
    with pytest.raises(ValueError, match="mode: expected one of enforce, penalize, shadow, off"):
        Governor.from_env(services, env={"TRACTATUS_WATCH_MODE": "fine"})


def test_sampled_auditor_reveals_evasion() -> None:
    auditor = BoundaryEnforcer()
    gov = Governor([allow_all], auditors=[auditor], audit_sample=1.0)
    d = gov.check(CLICKBAIT, round=3)
    assert d.executed and d.verdict == "allow"
    assert [(c.service, c.enforced) for c in d.checks] == [("allow_all", True),
                                                           ("BoundaryEnforcer", False)]
    assert d.checks[1].extra["audit"] is True and d.checks[1].verdict == "block"
    assert d.evasion and d.escaped and d.covered
    unsampled = Governor([allow_all], auditors=[auditor], audit_sample=0.0)
    assert not unsampled.check(CLICKBAIT, round=3).evasion


def test_audit_sampling_is_seeded() -> None:
    def audited(seed: int) -> list[int]:
        gov = Governor([allow_all], auditors=[BoundaryEnforcer()], audit_sample=0.25, seed=seed)
        return [i for i in range(400) if len(gov.check(INFORMATIVE, round=0).checks) == 2]
    first = audited(7)
    assert first == audited(7)
    assert first != audited(8)
    assert 60 <= len(first) <= 140  # 25% of 400, loosely


def test_action_record_digest_and_summary() -> None:
    gov = Governor([allow_all])
    as_dict = {"kind": "publish", "text": "Hello", "params": {"headline": "Hi"}, "domain": "news"}
    d1 = gov.check(as_dict, round=0)
    d2 = gov.check(ActionInput(kind="publish", text="Hello", params={"headline": "Hi"},
                               domain="news"), round=0)
    canonical = json.dumps({"domain": "news", "kind": "publish", "params": {"headline": "Hi"},
                            "text": "Hello"}, sort_keys=True, separators=(",", ":"))
    expected = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert d1.action.digest == d2.action.digest == expected
    assert d1.action.to_payload() == {"kind": "publish", "summary": "Hi", "digest": expected,
                                      "domain": "news"}
    assert d1.decision_id != d2.decision_id and len(d1.decision_id) == 32
    private = gov.check({"kind": "publish",
                         "text": "Mail jane.doe@example.com or call +1 555 123 4567"}, round=0)
    assert "jane" not in private.action.summary and "4567" not in private.action.summary
    assert private.action.summary == "Mail [email] or call [number]"
    with pytest.raises(ValueError, match="kind"):
        gov.check({"text": "no kind"}, round=0)


def test_payload_round_trips(services: list[Any]) -> None:
    d = Governor(services, run_id="r").check(CLICKBAIT, round=4, rollout_id="ro")
    payload = json.loads(json.dumps(d.to_payload()))
    assert payload["schema"] == "tractatus.decision/1"
    back = Decision.from_payload(payload)
    assert back.to_payload() == payload
    assert back.checks[0].extra.get("matched", []) == d.checks[0].extra.get("matched", [])


def test_service_errors_and_sink_errors_never_reach_the_agent() -> None:
    class Broken:
        name = "Broken"

        def check(self, action: ActionInput, context: Any) -> Any:
            raise RuntimeError("boom")

    class BadSink(ListSink):
        def emit_decision(self, decision: Decision) -> None:
            raise OSError("disk full")

    gov = Governor([Broken()], sink=BadSink())
    d = gov.check(INFORMATIVE, round=0)
    c = d.checks[0]
    assert (c.verdict, c.raw_verdict, c.rule_id) == ("escalate", "ESCALATE", "SERVICE-ERROR")
    assert "boom" in c.reason and not d.executed and not d.attempted
    assert gov.sink_errors == 1


def test_guards(services: list[Any]) -> None:
    gov = Governor(services)
    with gov.guard(INFORMATIVE, round=0) as d:
        assert d.executed
    ran: list[str] = []
    with pytest.raises(Blocked) as info:
        with gov.guard(CLICKBAIT, round=0):
            ran.append("published")
    assert ran == [] and info.value.decision.verdict == "block"
    assert "CONTENT-CLICKBAIT" in str(info.value)

    @gov.guarded(lambda headline, body: {"kind": "publish", "params": {"headline": headline},
                                         "text": body}, round=lambda: 2, on_block="skip")
    def publish(headline: str, body: str) -> str:
        return f"published {headline}"

    assert publish("Council approves budget", "The council approved the budget.") == \
        "published Council approves budget"
    assert publish("You won't believe this!!!", "Nothing happened.") is None
    strict = gov.guarded(lambda x: {"kind": "publish", "text": x}, round=0)(lambda x: x)
    with pytest.raises(Blocked):
        strict("Doctors hate this one weird trick")


def test_rewards_go_to_the_sink() -> None:
    sink = ListSink()
    gov = Governor([allow_all], agent_id="a1", arm="governed", run_id="r", rollout_id="ro",
                   sink=sink)
    r1 = gov.reward(0.89, round=5)
    r2 = gov.reward(0.5, round=5)
    ids = [f"ro:{gov.instance_id}:0", f"ro:{gov.instance_id}:1"]
    assert [r.reward_id for r in sink.rewards] == ids == [r1.reward_id, r2.reward_id]
    # Another Governor (a restarted agent reusing the rollout id) names its rewards apart.
    other = Governor([allow_all], agent_id="a1", rollout_id="ro")
    assert other.reward(0.1, round=5).reward_id not in ids
    assert (r1.value, r1.round, r1.arm, r1.agent_id, r1.run_id) == (0.89, 5, "governed", "a1", "r")
    gov.close()
    assert sink.closed


def test_from_env_spool_and_none(tmp_path: Path, services: list[Any]) -> None:
    spool = tmp_path / "spool"
    gov = Governor.from_env(services, env={"TRACTATUS_WATCH_SPOOL": str(spool),
                                           "TRACTATUS_WATCH_AGENT_ID": "agent-9",
                                           "TRACTATUS_WATCH_MODE": "shadow"})
    assert isinstance(gov.sink, SpoolWriter)
    assert (gov.agent_id, gov.mode, gov.arm) == ("agent-9", "shadow", "ungoverned")
    d = gov.check(CLICKBAIT, round=1)
    gov.close()
    lines = [json.loads(line) for f in sorted(spool.glob("seg-*.ndjson")) for line in f.open()]
    assert [(r["type"], r["data"]["decision_id"]) for r in lines] == [("decision", d.decision_id)]
    assert Governor.from_env(services, env={}).sink is None


def test_from_env_sender_posts_to_the_gateway(tmp_path: Path, agl_gateway: Any,
                                              services: list[Any]) -> None:
    rid = agl_gateway.create_rollout()
    key_file = tmp_path / "key"
    key_file.write_text(agl_gateway.key + "\n")
    gov = Governor.from_env(services, env={"AGL_EVENT_URL": agl_gateway.event_url(rid),
                                           "AGL_KEY_FILE": str(key_file)}, agent_id="agent-1")
    assert isinstance(gov.sink, Sender) and gov.rollout_id == rid
    assert agl_gateway.key not in repr(gov.sink) and agl_gateway.key not in str(vars(gov.sink))
    decisions = [gov.check(CLICKBAIT if i % 2 else INFORMATIVE, round=i) for i in range(6)]
    gov.reward(0.89, round=5)
    gov.close(10)
    stored = agl_gateway.events(rid)
    got = []
    for e in stored:
        if e["event_type"] == "tractatus.decision":
            got.append(e["data"])
        elif e["event_type"] == "tractatus.decisions":
            got.extend(e["data"]["decisions"])
    assert [g["decision_id"] for g in got] == [d.decision_id for d in decisions]
    assert [g["executed"] for g in got] == [True, False] * 3
    rewards = [e["data"] for e in stored if e["event_type"] == "reward"]
    assert len(rewards) == 1 and rewards[0]["value"] == 0.89 and rewards[0]["agent_id"] == "agent-1"
