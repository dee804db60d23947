"""Property: the real writer, fed batches that mix valid records with hostile ones, stores every
valid record exactly once, stores each hostile one intact or quarantines it with a reason, keeps
checks and rollups equal to the stored decisions, and never dies."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tractatus_watch.records.events import Action, Check, Decision, Event, Reward
from tractatus_watch.storage.batch import Batch, show_id
from tractatus_watch.storage.store import Store
from tractatus_watch.storage.writer import Cursor, Writer
from support.synthetic import nested

TS = 1_795_000_000.0
RUN = "prop"




DEEP = nested(50_000)
SEPARATORS = st.sampled_from(["\u2028", "\u2029", "\u0085", "\x00", "\r", "\n", "😀"])
VALID_TEXT = st.text(st.characters(exclude_categories=["Cs"]) | SEPARATORS, max_size=12)
ANY_TEXT = st.text(st.characters(exclude_categories=[]) | SEPARATORS, max_size=12)  # surrogates

# Values that do not fit their column, or only just do (year 9999 fits).
HOSTILE_VALUES: list[tuple[str, Any]] = [
    ("round", 2**31), ("round", -(2**31) - 1), ("round", 2**40), ("round", 2**70),
    ("round", 2**31 - 1), ("latency_us", 2**63), ("latency_us", 2**64), ("latency_us", -1),
    ("latency_us", 10**12 + 1), ("ts", 1e15), ("ts", -1.0), ("ts", math.inf), ("ts", math.nan),
    ("ts", 253_402_300_800.0), ("ts", 253_402_300_799.0), ("agent_id", "a" * 1025),
    ("extra", {"deep": DEEP}), ("extra", {"big": "x" * 1_100_000}), ("checks", 1001),
    ("mode", "sometimes"), ("verdict", "maybe"), ("agent_id", 5), ("executed", "yes"),
    ("check.latency_us", 2**40 * 10**6), ("check.enforced", 1), ("decision_id", ""),
]
TEXT_FIELDS = ("decision_id", "agent_id", "arm", "summary", "check.reason", "check.service",
               "check.rule_id", "extra.key", "extra.value")


def make_decision(did: str, *, n_checks: int = 2, blocked: bool = False, ts: float = TS,
                  text: str = "", tag: str = "") -> Decision:
    checks = [Check(service="BoundaryEnforcer", verdict="block" if blocked and k == 0 else "allow",
                    raw_verdict="BLOCK" if blocked and k == 0 else "PROCEED",
                    rule_id=f"R-{k}", latency_us=10 + k, reason=text) for k in range(n_checks)]
    return Decision(decision_id=did, agent_id="agent-0", round=1, arm="governed", mode="enforce",
                    action=Action(kind="publish", summary=text), checks=checks,
                    verdict="block" if blocked else "allow", executed=not blocked,
                    latency_us=100, ts=ts, rollout_id=tag, extra={"t": text} if text else {})


def mutate(dec: Decision, name: str, value: Any) -> None:
    if name == "checks":
        dec.checks = [Check("S", "allow", "PROCEED") for _ in range(value)]
    elif name.startswith("check."):
        setattr(dec.checks[0], name.split(".", 1)[1], value)
    elif name == "summary":
        dec.action.summary = value
    elif name == "extra.key":
        dec.extra = {value: 1}
    elif name == "extra.value":
        dec.extra = {"k": value}
    else:
        setattr(dec, name, value)


@dataclass
class Expect:
    first: dict[str, Decision] = field(default_factory=dict)   # valid id -> stored version
    conflicts: dict[str, int] = field(default_factory=dict)    # valid id -> quarantined copies
    duplicates: int = 0
    hostile: list[Decision] = field(default_factory=list)
    rewards: list[Reward] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def signature(dec: Decision) -> Any:
    return json.dumps(dec.to_payload(), sort_keys=True, default=repr)


valid_op = st.tuples(st.just("valid"), st.integers(0, 5), st.integers(0, 2), VALID_TEXT)
hostile_op = st.one_of(
    st.tuples(st.just("hostile"), st.sampled_from(HOSTILE_VALUES)),
    st.tuples(st.just("hostile"), st.tuples(st.sampled_from(TEXT_FIELDS), ANY_TEXT)))
reward_op = st.tuples(st.just("reward"), st.sampled_from(
    [0.5, -3.25, 1e15, 1e300, math.inf, math.nan]), st.sampled_from([1, 2**31]))
event_op = st.tuples(st.just("event"), st.one_of(
    st.builds(lambda t: {"k": t}, ANY_TEXT), st.just("\ud800"), st.just({"d": DEEP}),
    st.just({"big": "z" * 20_000})))
batches = st.lists(st.tuples(
    st.lists(st.one_of(valid_op, valid_op, hostile_op, reward_op, event_op), min_size=1,
             max_size=12),
    st.booleans()), min_size=1, max_size=5)


def build(ops: list[tuple[Any, ...]], expect: Expect, counter: list[int]) -> Batch:
    decisions, rewards, events = [], [], []
    for op in ops:
        counter[0] += 1
        n = counter[0]
        if op[0] == "valid":
            _, i, variant, text = op
            dec = make_decision(f"v{i}", n_checks=1 + variant, blocked=variant == 1,
                                ts=TS + 3600 * (variant == 2), text=text, tag="valid")
            did = dec.decision_id
            if did not in expect.first:
                expect.first[did] = dec
            elif signature(expect.first[did]) == signature(dec):
                expect.duplicates += 1 + len(dec.checks)
            else:
                expect.conflicts[did] = expect.conflicts.get(did, 0) + 1
            decisions.append(dec)
        elif op[0] == "hostile":
            name, value = op[1]
            dec = make_decision(f"h{n}", tag=f"h{n}", blocked=n % 2 == 0)
            # A text id keeps its record's number (its hostile part comes after it).
            mutate(dec, name, f"h{n}{value}" if name == "decision_id" and value else value)
            expect.hostile.append(dec)
            decisions.append(dec)
        elif op[0] == "reward":
            reward = Reward(f"rw{n}", "ro", "agent-0", op[2], "governed", op[1], TS)
            expect.rewards.append(reward)
            rewards.append(reward)
        else:
            event = Event(f"ev{n}", "custom", TS, payload=op[1])
            expect.events.append(event)
            events.append(event)
    return Batch.from_records(run_id=RUN, decisions=decisions, rewards=rewards, events=events)


def stored_decisions(cur: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for row in cur.execute(
            "SELECT decision_id, agent_id, round, arm, mode, action_kind, action_summary, verdict, "
            "executed, latency_us, n_checks, epoch_us(ts) AS ts, extra FROM decisions").fetchall():
        keys = ("decision_id", "agent_id", "round", "arm", "mode", "action_kind", "summary",
                "verdict", "executed", "latency_us", "n_checks", "ts", "extra")
        out[row[0]] = dict(zip(keys, row))
        out[row[0]]["checks"] = []
    for did, *check in cur.execute(
            "SELECT decision_id, idx, service, rule_id, verdict, enforced, latency_us, reason "
            "FROM checks ORDER BY decision_id, idx").fetchall():
        out[did]["checks"].append(tuple(check))
    return out


def as_stored(dec: Decision) -> dict[str, Any]:
    extra = dict(dec.extra)
    return {"decision_id": dec.decision_id, "agent_id": dec.agent_id, "round": dec.round,
            "arm": dec.arm, "mode": dec.mode, "action_kind": dec.action.kind,
            "summary": dec.action.summary, "verdict": dec.verdict, "executed": dec.executed,
            "latency_us": dec.latency_us, "n_checks": len(dec.checks),
            "ts": int(round(dec.ts * 1_000_000)), "extra": extra or None,
            "checks": [(k, c.service, c.rule_id, c.verdict, c.enforced, c.latency_us, c.reason)
                       for k, c in enumerate(dec.checks)]}


def same(stored: dict[str, Any], dec: Decision) -> bool:
    got = dict(stored, extra=json.loads(stored["extra"]) if stored["extra"] else None)
    return got == as_stored(dec)


def check_invariants(cur: Any) -> None:
    assert cur.execute("SELECT count(*) FROM (SELECT run_id, decision_id FROM decisions "
                       "GROUP BY ALL HAVING count(*) > 1)").fetchall() == [(0,)]
    assert cur.execute("""
        SELECT count(*) FROM decisions d FULL JOIN
            (SELECT run_id, decision_id, count(*) AS n, max(idx) AS hi FROM checks GROUP BY ALL) c
            USING (run_id, decision_id)
        WHERE d.decision_id IS NULL OR coalesce(c.n, 0) <> d.n_checks
           OR coalesce(c.hi, -1) <> d.n_checks - 1""").fetchall() == [(0,)]
    assert cur.execute("""
        WITH r AS (SELECT run_id, arm, round, agent_id, sum(actions) a, sum(blocked) b,
                          sum(escaped) e, sum(covered) c, sum(latency_us_sum) l, sum(reward_n) rn,
                          sum(reward_sum) rs FROM rollup_agent GROUP BY ALL),
             d AS (SELECT run_id, arm, round, agent_id, count(*) a,
                          count_if(attempted AND NOT executed) b,
                          count_if(attempted AND executed) e, count_if(covered) c,
                          sum(latency_us) l FROM decisions GROUP BY ALL),
             w AS (SELECT run_id, arm, round, coalesce(agent_id, '') agent_id, count(*) rn,
                          sum(value) rs FROM rewards GROUP BY ALL)
        SELECT count(*) FROM r FULL JOIN d USING (run_id, arm, round, agent_id)
                                FULL JOIN w USING (run_id, arm, round, agent_id)
        WHERE coalesce(r.a, 0) <> coalesce(d.a, 0) OR coalesce(r.b, 0) <> coalesce(d.b, 0)
           OR coalesce(r.e, 0) <> coalesce(d.e, 0) OR coalesce(r.c, 0) <> coalesce(d.c, 0)
           OR coalesce(r.l, 0) <> coalesce(d.l, 0) OR coalesce(r.rn, 0) <> coalesce(w.rn, 0)
           OR abs(coalesce(r.rs, 0) - coalesce(w.rs, 0)) > 1e-6""").fetchall() == [(0,)]
    assert cur.execute("""
        WITH r AS (SELECT run_id, arm, round, service, rule_id, minute, sum(checks) n,
                          sum(blocks) b, sum(latency_us_sum) l FROM rollup_rule GROUP BY ALL),
             c AS (SELECT run_id, arm, round, service, rule_id, date_trunc('minute', ts) AS minute,
                          count(*) n, count_if(verdict = 'block') b, sum(latency_us) l
                   FROM checks GROUP BY ALL)
        SELECT count(*) FROM r FULL JOIN c USING (run_id, arm, round, service, rule_id, minute)
        WHERE coalesce(r.n, 0) <> coalesce(c.n, 0) OR coalesce(r.b, 0) <> coalesce(c.b, 0)
           OR coalesce(r.l, 0) <> coalesce(c.l, 0)""").fetchall() == [(0,)]


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batches)
def test_hostile_batches_never_cost_a_valid_record(plan: list[tuple[list[Any], bool]]) -> None:
    expect = Expect()
    counter = [0]
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "p.duckdb") as store:
        writer = Writer(store, flush_interval_s=0.05)
        for n, (ops, flush_now) in enumerate(plan):
            writer.submit(build(ops, expect, counter), Cursor("prop", str(n)))
            if flush_now:  # otherwise coalesced with the next batch
                writer.flush()
            assert writer.error is None
        sentinel = make_decision("sentinel")
        writer.submit(Batch.from_records(run_id=RUN, decisions=[sentinel]), Cursor("prop", "end"))
        writer.flush()  # the writer is alive after all of it
        writer.close()
        cur = store.cursor()
        stored = stored_decisions(cur)
        quarantine = cur.execute("SELECT source, reason, raw FROM quarantine").fetchall()
        assert all(source == "prop" and reason for source, reason, _ in quarantine)
        reasons = [reason for _, reason, _ in quarantine]

        assert same(stored.pop("sentinel"), sentinel)
        for did, dec in expect.first.items():  # every valid record: stored once, as it came
            assert same(stored.pop(did), dec), did
            conflicts = [r for r in reasons if r.startswith(
                f"decisions.decision_id: {did} conflicts with the stored decision")]
            assert len(conflicts) == expect.conflicts.get(did, 0), did
        for dec in expect.hostile:  # stored intact, or quarantined with a reason
            if dec.decision_id in stored and same(stored[dec.decision_id], dec):
                stored.pop(dec.decision_id)
            else:
                assert any(r.endswith(f"(decision {show_id(dec.decision_id)})")
                           for r in reasons), (dec.decision_id, reasons)
        assert stored == {}  # nothing else was stored
        assert writer.stats.duplicates == expect.duplicates

        rewards = dict(cur.execute("SELECT reward_id, value FROM rewards").fetchall())
        for reward in expect.rewards:
            if reward.reward_id in rewards:
                assert rewards.pop(reward.reward_id) == reward.value
            else:
                assert any(r.endswith(f"(reward {reward.reward_id})") for r in reasons)
        assert rewards == {}
        events = dict(cur.execute("SELECT event_id, payload FROM events").fetchall())
        for event in expect.events:
            if event.event_id not in events:
                assert any(r.endswith(f"(event {event.event_id})") for r in reasons)
            elif isinstance(event.payload, dict) and "big" not in event.payload:
                assert json.loads(events[event.event_id]) == event.payload
        check_invariants(cur)
        assert store.get_cursor("prop") == "end"
