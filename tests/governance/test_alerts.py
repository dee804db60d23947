"""Alert rules, state machine, silences, inhibition, notifiers (a real HTTP server), detectors."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from tractatus_watch.analysis.alerts import (AlertEngine, AlertState, CallbackNotifier,
                                               InMemoryAlertStore, JsonlNotifier, Matcher, NoData,
                                               AlertRule, AlertRulesError, Sample, Silence,
                                               Transition,
                                               WebhookNotifier, evaluate_detector, evaluate_rules,
                                               exit_code, fingerprint, load_default_alert_rules,
                                               load_alert_rules, parse_duration, parse_alert_rules,
                                               webhook_bodies)
from tractatus_watch.analysis.alerts.alert_rules import render_template
from tractatus_watch.monitor.store_evaluator import define_clock
from tractatus_watch.storage.schema import migrate, table_columns

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z

RULES = """
[[groups]]
name = "g"

[[groups.rules]]
alert = "Rounds"
expr = "SELECT 1 AS value"
for = "3 rounds"
labels = { severity = "warning" }
annotations = { summary = "v={{ $value }} run={{ $labels.run_id }}" }

[[groups.rules]]
alert = "Timed"
expr = "SELECT 1 AS value"
for = "30s"
keep_firing_for = "1m"
labels = { severity = "critical" }

[[groups.rules]]
alert = "Now"
expr = "SELECT 1 AS value"
keep_firing_for = "2 rounds"
labels = { severity = "critical" }
annotations = { summary = "now {{ $value | humanizePercentage }}" }

[[inhibit_rules]]
source_matchers = ['severity="critical"']
target_matchers = ['severity="warning"']
equal = ["run_id"]
"""


@pytest.fixture()
def rules() -> dict[str, AlertRule]:
    rs = parse_alert_rules(RULES, "test.toml")
    return {r.name: r for r in rs.rules}


def make_engine(**kw: Any) -> tuple[AlertEngine, InMemoryAlertStore]:
    store = InMemoryAlertStore()
    return AlertEngine(parse_alert_rules(RULES, "test.toml"), store, **kw), store


def rule_of(engine: AlertEngine, name: str) -> AlertRule:
    return next(r for r in engine.rules if r.name == name)


def moves(transitions: list[Transition]) -> list[tuple[str, str, str]]:
    return [(t.alertname, t.from_state, t.to_state) for t in transitions]


RUN = {"run_id": "r1", "arm": "governed"}


# --- the state machine ---------------------------------------------------------------------------

def test_for_in_rounds_full_lifecycle() -> None:
    engine, store = make_engine()
    rule = rule_of(engine, "Rounds")
    assert moves(engine.evaluate(T0, None, {rule: [Sample(RUN, 0.5, round=10)]})) == [
        ("Rounds", "inactive", "pending")]
    # Re-evaluating within the same round does not count as another round.
    assert engine.evaluate(T0 + 1, None, {rule: [Sample(RUN, 0.5, round=10)]}) == []
    assert engine.evaluate(T0 + 2, None, {rule: [Sample(RUN, 0.5, round=11)]}) == []
    t = engine.evaluate(T0 + 3, None, {rule: [Sample(RUN, 0.7, round=12)]})
    assert moves(t) == [("Rounds", "pending", "firing")]
    assert t[0].annotations == {"summary": "v=0.7 run=r1"} and t[0].round == 12
    assert t[0].labels == {**RUN, "alertname": "Rounds", "severity": "warning"}
    assert moves(engine.evaluate(T0 + 4, None, {rule: []})) == [("Rounds", "firing", "resolved")]
    assert engine.states()[0].resolved_at == T0 + 4
    assert moves(engine.evaluate(T0 + 5, None, {rule: []})) == [
        ("Rounds", "resolved", "inactive")]
    assert engine.states() == [] and store.states == {}
    assert [(e.from_state, e.to_state) for e in store.events] == [
        ("inactive", "pending"), ("pending", "firing"), ("firing", "resolved"),
        ("resolved", "inactive")]


def test_pending_drops_back_to_inactive() -> None:
    engine, _ = make_engine()
    rule = rule_of(engine, "Rounds")
    engine.evaluate(T0, None, {rule: [Sample(RUN, 1.0, round=1)]})
    assert moves(engine.evaluate(T0 + 1, None, {rule: []})) == [
        ("Rounds", "pending", "inactive")]
    # A new episode starts counting from scratch.
    engine.evaluate(T0 + 2, None, {rule: [Sample(RUN, 1.0, round=2)]})
    engine.evaluate(T0 + 3, None, {rule: [Sample(RUN, 1.0, round=3)]})
    assert engine.states()[0].state == "pending"


def test_rounds_from_now_round_when_samples_carry_none() -> None:
    engine, _ = make_engine()
    rule = rule_of(engine, "Rounds")
    for i, expected in enumerate(["pending", "pending", "firing"]):
        engine.evaluate(T0 + i, {"r1": 5 + i}, {rule: [Sample(RUN, 1.0)]})
        assert engine.states()[0].state == expected
    # Without any round information each evaluation counts as a round.
    engine2, _ = make_engine()
    rule2 = rule_of(engine2, "Rounds")
    states = []
    for i in range(3):
        engine2.evaluate(T0 + i, None, {rule2: [Sample({"run_id": "x"}, 1.0)]})
        states.append(engine2.states()[0].state)
    assert states == ["pending", "pending", "firing"]


def test_for_in_time_and_keep_firing_for_in_time() -> None:
    engine, _ = make_engine()
    rule = rule_of(engine, "Timed")
    s = [Sample(RUN, 2.0)]
    assert moves(engine.evaluate(T0, None, {rule: s})) == [("Timed", "inactive", "pending")]
    assert engine.evaluate(T0 + 29, None, {rule: s}) == []
    assert moves(engine.evaluate(T0 + 30, None, {rule: s})) == [("Timed", "pending", "firing")]
    # keep_firing_for = 1m: absent for less than a minute keeps it firing.
    assert engine.evaluate(T0 + 40, None, {rule: []}) == []
    assert engine.evaluate(T0 + 99, None, {rule: []}) == []
    assert engine.states()[0].state == "firing"
    assert moves(engine.evaluate(T0 + 100, None, {rule: []})) == [
        ("Timed", "firing", "resolved")]


def test_keep_firing_for_in_rounds_and_its_reset() -> None:
    engine, _ = make_engine()
    rule = rule_of(engine, "Now")
    assert moves(engine.evaluate(T0, None, {rule: [Sample(RUN, 0.9, round=10)]})) == [
        ("Now", "inactive", "firing")]  # no `for`: fires at once
    engine.evaluate(T0 + 1, {"r1": 11}, {rule: []})
    assert engine.states()[0].state == "firing"
    # The condition returning resets the keep-firing clock.
    engine.evaluate(T0 + 2, None, {rule: [Sample(RUN, 0.9, round=12)]})
    engine.evaluate(T0 + 3, {"r1": 13}, {rule: []})
    engine.evaluate(T0 + 4, {"r1": 14}, {rule: []})
    assert engine.states()[0].state == "firing"
    assert moves(engine.evaluate(T0 + 5, {"r1": 15}, {rule: []})) == [
        ("Now", "firing", "resolved")]
    # Annotations are rendered with the value at the time.
    assert engine.states()[0].annotations == {"summary": "now 90%"}


def test_nodata_from_firing_and_back() -> None:
    engine, _ = make_engine()
    rule = rule_of(engine, "Now")
    engine.evaluate(T0, None, {rule: [Sample(RUN, 1.0, round=1)]})
    t = engine.evaluate(T0 + 1, None, {rule: NoData("db gone")})
    assert moves(t) == [("Now", "firing", "nodata")] and t[0].value is None
    # The summary says what is missing, not the rule's template with an empty value.
    assert t[0].annotations == {"summary": "Now: no data (run r1, arm governed): db gone"}
    assert engine.evaluate(T0 + 2, None, {rule: NoData()}) == []
    # The condition never demonstrably stopped: straight back to firing.
    assert moves(engine.evaluate(T0 + 3, None, {rule: [Sample(RUN, 1.0, round=2)]})) == [
        ("Now", "nodata", "firing")]
    engine.evaluate(T0 + 4, None, {rule: NoData()})
    # Data back but the condition false: it had fired, so it resolves.
    assert moves(engine.evaluate(T0 + 5, None, {rule: []})) == [("Now", "nodata", "resolved")]


def test_nodata_without_instances_creates_a_rule_level_one() -> None:
    engine, _ = make_engine()
    rule = rule_of(engine, "Rounds")
    t = engine.evaluate(T0, None, {rule: NoData()})
    assert moves(t) == [("Rounds", "inactive", "nodata")]
    assert t[0].labels == {"alertname": "Rounds", "severity": "warning"}
    # No labels to fill the rule's template ("... in run , arm :"): a plain no-data line.
    assert t[0].annotations == {"summary": "Rounds: no data"}
    assert moves(engine.evaluate(T0 + 1, None, {rule: [Sample(RUN, 1.0, round=1)]})) == [
        ("Rounds", "inactive", "pending"), ("Rounds", "nodata", "inactive")]


def test_errors_leave_state_alone_and_rules_not_evaluated_are_untouched() -> None:
    engine, _ = make_engine()
    rounds, timed = rule_of(engine, "Rounds"), rule_of(engine, "Timed")
    engine.evaluate(T0, None, {rounds: [Sample(RUN, 1.0, round=1)]})
    assert engine.evaluate(T0 + 1, None, {rounds: RuntimeError("syntax error")}) == []
    assert engine.rule_errors[rounds.uid] == "RuntimeError: syntax error"
    assert engine.evaluate(T0 + 2, None, {timed: []}) == []
    assert engine.states()[0].state == "pending"

    class Broken:
        def evaluate(self, rule: AlertRule) -> list[Sample]:
            if rule.name == "Timed":
                raise NoData()
            if rule.name == "Now":
                raise ValueError("bad")
            return [Sample(RUN, 1.0, round=2)]

    results = evaluate_rules(engine.rules, Broken())
    assert isinstance(results[timed], NoData) and isinstance(results[rounds], list)
    assert isinstance(results[rule_of(engine, "Now")], ValueError)


def test_fingerprint_is_stable_sha256_of_sorted_labels() -> None:
    a = fingerprint({"alertname": "X", "run_id": "r1", "arm": "g"})
    b = fingerprint({"arm": "g", "run_id": "r1", "alertname": "X"})
    canon = json.dumps([["alertname", "X"], ["arm", "g"], ["run_id", "r1"]],
                       separators=(",", ":"))
    assert a == b == hashlib.sha256(canon.encode()).hexdigest()[:16]
    assert len(a) == 16 and a != fingerprint({"alertname": "X", "run_id": "r2", "arm": "g"})


def test_state_survives_a_restart_through_the_store() -> None:
    engine, store = make_engine()
    rule = rule_of(engine, "Rounds")
    engine.evaluate(T0, None, {rule: [Sample(RUN, 1.0, round=1)]})
    engine.evaluate(T0 + 1, None, {rule: [Sample(RUN, 1.0, round=2)]})
    restarted = AlertEngine(parse_alert_rules(RULES, "test.toml"), store)
    rule2 = rule_of(restarted, "Rounds")
    assert moves(restarted.evaluate(T0 + 2, None, {rule2: [Sample(RUN, 1.0, round=3)]})) == [
        ("Rounds", "pending", "firing")]


# --- silences and inhibition ---------------------------------------------------------------------

def test_silence_matches_and_expires() -> None:
    seen: list[list[Transition]] = []
    engine, store = make_engine(notifiers=[CallbackNotifier(seen.append, only_notifiable=True)])
    rule = rule_of(engine, "Now")
    sil = engine.add_silence(['run_id=~"r[0-9]+"', 'alertname="Now"'], T0, T0 + 60,
                             comment="maintenance", created_by="ops")
    t = engine.evaluate(T0, None, {rule: [Sample(RUN, 1.0, round=1)]})
    assert t[0].silenced and not t[0].notifiable and seen == []
    assert engine.states()[0].silenced_by == (sil.silence_id,)
    assert exit_code(engine.states()) == 0  # silenced alerts do not fail `check`
    engine.evaluate(T0 + 61, None, {rule: [Sample(RUN, 1.0, round=2)]})
    assert engine.states()[0].silenced_by == ()  # expired
    assert exit_code(engine.states()) == 1
    other = engine.add_silence(['arm="governed"'], T0 + 61, T0 + 3600)
    assert engine.expire_silence(other.silence_id, T0 + 62)
    assert not engine.expire_silence(other.silence_id, T0 + 63)
    assert [s.silence_id for s in store.silences(T0 + 10)] == [sil.silence_id]
    assert store.silences(T0 + 100) == []
    with pytest.raises(ValueError):
        engine.add_silence([], T0, T0 + 1)
    with pytest.raises(ValueError):
        engine.add_silence(['a="b"'], T0 + 1, T0)


def test_matchers() -> None:
    labels = {"alertname": "A", "severity": "critical"}
    assert Matcher.parse('severity="critical"').matches(labels)
    assert Matcher.parse("severity!=warning").matches(labels)
    assert Matcher.parse('alertname=~"A|B"').matches(labels)
    assert not Matcher.parse('alertname=~"B"').matches(labels)
    assert not Matcher.parse('alertname=~"A."').matches(labels)  # anchored
    assert Matcher.parse('missing=""').matches(labels)
    assert Matcher.parse('alertname!~"Z.*"').matches(labels)
    assert str(Matcher.parse('x="a\\"b"')) == 'x="a\\"b"'
    with pytest.raises(ValueError):
        Matcher.parse("no operator")
    with pytest.raises(ValueError):
        Matcher.parse('x=~"("')


def test_inhibition_by_a_firing_critical_with_equal_labels() -> None:
    engine, _ = make_engine()
    rounds, now = rule_of(engine, "Rounds"), rule_of(engine, "Now")
    warn = [Sample({"run_id": "r1"}, 1.0, round=1), Sample({"run_id": "r2"}, 1.0, round=1)]
    for i in range(3):
        engine.evaluate(T0 + i, None, {rounds: [Sample(s.labels, 1.0, round=1 + i)
                                                for s in warn]})
    t = engine.evaluate(T0 + 3, None, {rounds: [Sample(s.labels, 1.0, round=4) for s in warn],
                                       now: [Sample({"run_id": "r1"}, 1.0, round=4)]})
    assert moves(t) == [("Now", "inactive", "firing")]
    by_run = {(s.alertname, s.labels["run_id"]): s for s in engine.states()}
    assert by_run[("Rounds", "r1")].inhibited  # same run_id as the firing critical
    assert not by_run[("Rounds", "r2")].inhibited
    assert not by_run[("Now", "r1")].inhibited  # a source never inhibits itself
    assert exit_code(engine.states()) == 1
    engine.evaluate(T0 + 4, None, {rounds: [Sample(s.labels, 1.0, round=5) for s in warn],
                                   now: []})
    # keep_firing_for keeps the critical firing, so the inhibition holds.
    assert {(s.alertname, s.labels["run_id"]): s.inhibited for s in engine.states()}[
        ("Rounds", "r1")]


# --- rules files ---------------------------------------------------------------------------------

BAD_RULES = [
    ('[[groups]]\nname = "g"\n[[groups.rules]]\nalert = "A"\nexpr = "x"\n'
     '[[groups.rules]]\nalert = "B"\nexpr = "x"\n[[groups.rules]]\nalert = "C"\nexpr = "x"\n'
     'for = "soon"\n', "groups[0].rules[2].for", "invalid duration 'soon'"),
    ('[[groups]]\nname = "g"\n[[groups.rules]]\nalert = "A"\nexpr = "x"\nannotation = {}\n',
     "groups[0].rules[0].annotation", "unknown key"),
    ('[[groups]]\nname = "g"\n[[groups.rules]]\nexpr = "x"\n', "groups[0].rules[0].alert",
     "missing"),
    ('[[groups]]\nname = "g"\n[[groups.rules]]\nalert = "A"\nexpr = "x"\ndetector = "no_data"\n',
     "groups[0].rules[0]", "exactly one of"),
    ('[[groups]]\nname = "g"\n[[groups.rules]]\nalert = "A"\ndetector = "magic"\n',
     "groups[0].rules[0].detector", "unknown detector 'magic'"),
    ('[[groups]]\nname = "g"\n[[groups.rules]]\nalert = "A"\ndetector = "adherence_drift"\n'
     'params = { ratio = "two" }\n', "groups[0].rules[0].params.ratio", "expected a number"),
    ('[[groups]]\nname = "g"\n[[groups.rules]]\nalert = "A"\ndetector = "adherence_drift"\n'
     'params = { speed = 1 }\n', "groups[0].rules[0].params.speed", "unknown parameter"),
    ('[[groups]]\nname = "g"\n[[groups.rules]]\nalert = "A"\ndetector = "adherence_drift"\n'
     'params = { ratio = 0.5 }\n', "groups[0].rules[0].params.ratio", "must be > 1"),
    ('[[groups]]\nname = "g"\n[[groups.rules]]\nalert = "A"\ndetector = "gap_closed"\n'
     'params = { side = "left" }\n', "groups[0].rules[0].params.side", "expected one of"),
    ('[[groups]]\nname = "g"\n[[groups.rules]]\nalert = "A"\nexpr = "x"\n'
     'labels = { "bad-name" = "x" }\n', "groups[0].rules[0].labels.bad-name",
     "invalid label name"),
    ('[[groups]]\nname = "g"\n[[groups.rules]]\nalert = "A"\nexpr = "x"\n'
     'annotations = { s = "{{ $values }}" }\n', "groups[0].rules[0].annotations.s",
     "unsupported template"),
    ('[[groups]]\nname = "g"\n[[groups]]\nname = "g"\n', "groups[1].name", "duplicate group"),
    ('[[inhibit_rules]]\nsource_matchers = ["sev critical"]\ntarget_matchers = ["a=b"]\n',
     "inhibit_rules[0].source_matchers[0]", "invalid matcher"),
    ('[route]\ngroup_by = ["run-id"]\n', "route.group_by[0]", "expected a label name"),
    ('[[groups]]\nname = "g"\n[[groups.rules]]\nalert = "A"\nexpr = "x"\nfor = 3\n',
     "groups[0].rules[0].for", "expected a duration string"),
]


@pytest.mark.parametrize(("text", "key", "reason"), BAD_RULES,
                         ids=[k for _, k, _ in BAD_RULES])
def test_rules_file_errors_name_file_key_and_reason(tmp_path: Path, text: str, key: str,
                                                    reason: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(AlertRulesError) as info:
        load_alert_rules(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: ")
    assert reason in message
    assert info.value.key == key and info.value.source == str(path)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(AlertRulesError, match=r"missing\.toml: cannot read"):
        load_alert_rules(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[groups]\n")
    with pytest.raises(AlertRulesError, match=r"bad\.toml: invalid TOML"):
        load_alert_rules(bad)


def test_durations() -> None:
    assert parse_duration("3 rounds").in_rounds and parse_duration("1 round").amount == 1
    assert parse_duration("1h30m").amount == 5400 and parse_duration("250ms").amount == 0.25
    assert parse_duration("0").zero and str(parse_duration("2 rounds")) == "2 rounds"
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_templates() -> None:
    labels = {"run_id": "r1"}
    assert render_template("{{$value}} {{ $labels.run_id }}", labels, 0.25) == "0.25 r1"
    assert render_template("{{ $value | humanizePercentage }}", labels, 0.995) == "99.5%"
    assert render_template("{{ $value | humanize }}", labels, 12345.0) == "12.35k"
    assert render_template('{{ $value | printf "%.1f" }}', labels, 2.25) == "2.2"
    assert render_template("{{ $info.p0 }}|{{ $labels.none }}", labels, None, {"p0": "0.03"}) == (
        "0.03|")


def test_default_rules_load_and_their_sql_runs_on_the_real_schema() -> None:
    rs = load_default_alert_rules()
    names = {r.name for r in rs.rules}
    assert {"GovernanceCoverageBelow100", "GovernanceEscapedViolations", "GovernanceNoData",
            "AdherenceDrift", "EvasionDrift", "PerformanceGapWidening",
            "GovernanceLatencyGrowth"} <= names
    assert rs.route.group_by == ("alertname", "run_id") and rs.inhibit_rules
    con = duckdb.connect()
    migrate(con)
    define_clock(con)
    cols = ("run_id, arm, round, agent_id, actions, covered, enforce_mode, attempted, blocked, "
            "escaped, evasions, executed, latency_us_sum, reward_n, reward_sum, reward_sq_sum, "
            "ts_min, ts_max")
    rows = [
        # governed arm, round 1 fine; round 2 split over two partial rows: 99 of 100 covered
        ("r1", "governed", 1, "a", 50, 50, 50, 2, 2, 0, 0, 48, 500, 1, 0.9, 0.81, 0),
        ("r1", "governed", 2, "a", 60, 60, 60, 1, 1, 0, 0, 59, 600, 1, 0.9, 0.81, 0),
        ("r1", "governed", 2, "a", 40, 39, 39, 2, 1, 1, 0, 39, 400, 1, 0.9, 0.81, 0),
        # ungoverned (shadow) arm: uncovered and escaping, but not governed: no alert
        ("r1", "ungoverned", 2, "a", 100, 0, 0, 5, 0, 5, 0, 100, 0, 1, 0.95, 0.9, 0),
        # a second run whose data stopped 10 minutes ago
        ("r2", "governed", 1, "b", 10, 10, 10, 0, 0, 0, 0, 10, 90, 1, 0.5, 0.25, 600),
    ]
    for r in rows:
        con.execute(f"INSERT INTO rollup_agent ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    f"?, ?, ?, ?, ?, now()::TIMESTAMP - INTERVAL (?) SECOND, "
                    f"now()::TIMESTAMP - INTERVAL (?) SECOND)", [*r, r[-1]])
    by_name = {r.name: r for r in rs.rules}

    def run(name: str) -> list[dict[str, Any]]:
        cur = con.execute(by_name[name].expr)
        names_ = [d[0] for d in cur.description]
        return [dict(zip(names_, row)) for row in cur.fetchall()]

    assert run("GovernanceCoverageBelow100") == [
        {"run_id": "r1", "arm": "governed", "round": 2, "value": pytest.approx(0.99)}]
    assert run("GovernanceEscapedViolations") == [
        {"run_id": "r1", "arm": "governed", "round": 2, "value": 1.0}]
    nodata = run("GovernanceNoData")
    assert [r["run_id"] for r in nodata] == ["r2"] and 590 < nodata[0]["value"] < 700
    # A run that ended (its end recorded after its last data) is finished, not stalled...
    con.execute("INSERT INTO run_events VALUES ('r2', 'ended', now()::TIMESTAMP - INTERVAL 599 "
                "SECOND, 'collector stopped', NULL)")
    assert run("GovernanceNoData") == []
    # ... also judged long after it ended (the rules' clock, tw_now(), a week later) ...
    define_clock(con, time.time() + 7 * 86400)
    assert run("GovernanceNoData") == []
    # ... until data arrives after the end (a restarted collector): live, then silent again.
    con.execute("UPDATE rollup_agent SET ts_max = now()::TIMESTAMP - INTERVAL 400 SECOND "
                "WHERE run_id = 'r2'")
    define_clock(con)
    assert [r["run_id"] for r in run("GovernanceNoData")] == ["r2"]


def test_default_rules_judge_a_penalized_arm_on_coverage_never_on_its_escapes() -> None:
    """The penalized arm (penalize mode) runs its violations by design: the escaped-violations
    alert is the governed arm's only, the coverage alert applies to both."""
    con = duckdb.connect()
    migrate(con)
    define_clock(con)
    cols = ("run_id, arm, round, agent_id, actions, covered, enforce_mode, penalize_mode, "
            "attempted, blocked, escaped, penalized, executed")
    rows = [
        # run p1: every penalized action checked, 7 violations ran: expected, no alert
        ("p1", "penalized", 0, "a", 50, 50, 0, 50, 7, 0, 7, 7, 50),
        ("p1", "governed", 0, "a", 50, 50, 50, 0, 7, 7, 0, 0, 43),
        # run p2: a penalized action went unchecked (49 of 50), and one escaped in governed
        ("p2", "penalized", 0, "a", 50, 49, 0, 50, 3, 0, 3, 3, 50),
        ("p2", "governed", 0, "a", 50, 50, 50, 0, 3, 2, 1, 0, 48),
    ]
    for r in rows:
        con.execute(f"INSERT INTO rollup_agent ({cols}, evasions, latency_us_sum, reward_n, "
                    "reward_sum, reward_sq_sum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "0, 0, 0, 0, 0)", list(r))
    by_name = {r.name: r for r in load_default_alert_rules().rules}

    def run(name: str) -> list[tuple[str, str, float]]:
        return sorted((row[0], row[1], row[3]) for row in con.execute(by_name[name].expr)
                      .fetchall())

    assert run("GovernanceEscapedViolations") == [("p2", "governed", 1.0)]
    assert run("GovernanceCoverageBelow100") == [("p2", "penalized", pytest.approx(0.98))]


# --- notifiers ----------------------------------------------------------------------------------

class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        type(self).requests.append({"path": self.path, "headers": dict(self.headers),
                                    "body": json.loads(body)})
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Recorder", (_Recorder,), {"requests": [], "status": 200})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_webhook_posts_the_alertmanager_v4_body(server: tuple[str, type[_Recorder]],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = server
    monkeypatch.setenv("TW_HOOK_TOKEN", "s3cret-token")
    hook = WebhookNotifier(url, receiver="ops", group_by=["alertname"],
                           external_url="http://tw.local", generator_url="http://tw.local/a",
                           bearer_token_env="TW_HOOK_TOKEN", timeout=2.0)
    engine, _ = make_engine(notifiers=[hook])
    rule = rule_of(engine, "Now")
    engine.evaluate(T0, None, {rule: [Sample({"run_id": "r1", "arm": "g"}, 0.5, round=1),
                                      Sample({"run_id": "r2", "arm": "g"}, 0.25, round=1)]})
    assert hook.flush(10)  # delivered by the notifier's own thread
    assert hook.sent == 1 and hook.failures == 0
    req = handler.requests[0]
    assert req["path"] == "/hook"
    assert req["headers"]["Authorization"] == "Bearer s3cret-token"
    assert req["headers"]["Content-Type"] == "application/json"
    fp1 = fingerprint({"alertname": "Now", "arm": "g", "run_id": "r1", "severity": "critical"})
    fp2 = fingerprint({"alertname": "Now", "arm": "g", "run_id": "r2", "severity": "critical"})
    first, second = sorted([("r1", fp1, "50%"), ("r2", fp2, "25%")], key=lambda x: x[1])

    def alert(run: str, fp: str, pct: str, status: str, ends: str) -> dict[str, Any]:
        return {"status": status,
                "labels": {"alertname": "Now", "arm": "g", "run_id": run, "severity": "critical"},
                "annotations": {"summary": f"now {pct}"},
                "startsAt": "2027-01-15T08:00:00.000Z", "endsAt": ends,
                "generatorURL": "http://tw.local/a", "fingerprint": fp}

    zero = "0001-01-01T00:00:00Z"
    assert req["body"] == {
        "version": "4",
        "groupKey": '{}:{alertname="Now"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "ops",
        "groupLabels": {"alertname": "Now"},
        "commonLabels": {"alertname": "Now", "arm": "g", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://tw.local",
        "alerts": [alert(*first, "firing", zero), alert(*second, "firing", zero)],
    }
    # r1 resolves (past keep_firing_for); r2 keeps firing: one body with both, as Alertmanager.
    for i, rnd in enumerate((2, 3, 4)):
        engine.evaluate(T0 + 30 * (i + 1), {"r1": rnd, "r2": rnd},
                        {rule: [Sample({"run_id": "r2", "arm": "g"}, 0.25, round=rnd)]})
    assert hook.flush(10) and hook.sent == 2
    body = handler.requests[1]["body"]
    assert body["status"] == "firing"
    assert [(a["labels"]["run_id"], a["status"], a["endsAt"]) for a in body["alerts"]] == [
        ("r2", "firing", zero), ("r1", "resolved", "2027-01-15T08:01:30.000Z")]
    assert body["commonAnnotations"] == {}
    assert "s3cret" not in repr(hook) and "s3cret" not in hook.last_error


def test_webhook_groups_by_labels_and_counts_failures(server: tuple[str, type[_Recorder]],
                                                      tmp_path: Path) -> None:
    url, handler = server
    token = tmp_path / "token"
    token.write_text("file-token\n")
    fast = {"max_attempts": 2, "backoff_s": 0.01}  # retries: tests/governance/test_notify.py
    hook = WebhookNotifier(url, group_by=["run_id"], bearer_token_file=token, **fast)
    engine, _ = make_engine(notifiers=[hook])
    rule = rule_of(engine, "Now")
    engine.evaluate(T0, None, {rule: [Sample({"run_id": "r1"}, 1.0, round=1),
                                      Sample({"run_id": "r2"}, 1.0, round=1)]})
    assert hook.flush(10)
    assert [r["body"]["groupKey"] for r in handler.requests] == [
        '{}:{run_id="r1"}', '{}:{run_id="r2"}']
    assert all(r["headers"]["Authorization"] == "Bearer file-token" for r in handler.requests)
    assert [len(r["body"]["alerts"]) for r in handler.requests] == [1, 1]
    handler.status = 500
    engine.evaluate(T0 + 1, None, {rule: [Sample({"run_id": "r3"}, 1.0, round=1)]})
    assert hook.flush(10)
    assert hook.failures == 1 and hook.last_error == f"HTTP 500 from {url}"
    dead = WebhookNotifier("http://127.0.0.1:9/hook", timeout=0.5, **fast)
    dead.notify(engine.evaluate(T0 + 2, None, {rule: [Sample({"run_id": "r4"}, 1.0)]}), [])
    assert dead.flush(10) and dead.failures == 1 and dead.sent == 0
    missing = WebhookNotifier(url, bearer_token_env="TW_UNSET_TOKEN_VAR", **fast)
    missing.notify(engine.evaluate(T0 + 3, None, {rule: [Sample({"run_id": "r5"}, 1.0)]}), [])
    assert missing.flush(10)
    assert missing.failures == 1 and "TW_UNSET_TOKEN_VAR" in missing.last_error


def test_group_by_all_labels_and_suppressed_alerts_are_not_sent() -> None:
    engine, _ = make_engine()
    rule = rule_of(engine, "Now")
    engine.add_silence(['run_id="r2"'], T0 - 1, T0 + 100)
    t = engine.evaluate(T0, None, {rule: [Sample({"run_id": "r1"}, 1.0),
                                          Sample({"run_id": "r2"}, 1.0)]})
    bodies = webhook_bodies(t, engine.firing(), group_by=["..."])
    assert len(bodies) == 1
    assert bodies[0]["groupLabels"] == {"alertname": "Now", "run_id": "r1",
                                        "severity": "critical"}
    assert len(webhook_bodies(t, engine.firing(), group_by=[])) == 1  # one group for all


def test_jsonl_and_callback_notifiers(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "alerts.jsonl"
    calls: list[list[Transition]] = []

    def boom(items: list[Transition]) -> None:
        calls.append(items)
        raise RuntimeError("ui closed")

    jsonl, cb = JsonlNotifier(log), CallbackNotifier(boom)
    engine, _ = make_engine(notifiers=[jsonl, cb])
    rule = rule_of(engine, "Rounds")
    engine.evaluate(T0, None, {rule: [Sample(RUN, 1.0, round=1)]})
    engine.evaluate(T0 + 1, None, {rule: []})
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["from"], x["to"]) for x in lines] == [("inactive", "pending"),
                                                     ("pending", "inactive")]
    assert lines[0]["labels"]["run_id"] == "r1" and lines[0]["round"] == 1
    assert len(calls) == 2 and cb.failures == 2 and cb.last_error == "RuntimeError: ui closed"
    assert engine.notify_failures == 0


# --- persistence rows match the storage schema ----------------------------------------------------

def test_rows_match_the_storage_tables() -> None:
    con = duckdb.connect()
    migrate(con)
    engine, store = make_engine()
    rule = rule_of(engine, "Now")
    sil = engine.add_silence(['arm="x"'], T0, T0 + 10, "c", "me")
    t = engine.evaluate(T0, None, {rule: [Sample(RUN, 0.5, round=3, info={"k": "v"})]})
    state = engine.states()[0]
    row = state.to_row()
    # `meta` (bookkeeping JSON) is the one extra column, whether or not the table has it yet.
    assert [c for c in row if c != "meta"] == [
        c for c in table_columns(con, "alerts") if c != "meta"] and "meta" in row
    assert list(t[0].to_row()) == table_columns(con, "alert_events")
    assert list(sil.to_row()) == table_columns(con, "silences")
    back = AlertState.from_row(row)
    assert back.fingerprint == state.fingerprint and back.labels == state.labels
    assert back.fired_at == T0 and back.last_round == 3 and back.info == {"k": "v"}
    assert Silence.from_row(sil.to_row()) == sil
    # The adapter can insert the rows as they are, with to_timestamp() for the times.
    con.execute("INSERT INTO alerts (fingerprint, alertname, run_id, state, severity, labels, "
                "annotations, value, active_since, updated_at) SELECT $fingerprint, $alertname, "
                "$run_id, $state, $severity, $labels, $annotations, $value, "
                "to_timestamp($active_since), to_timestamp($updated_at)",
                {k: v for k, v in row.items() if k != "meta"})
    cur = con.execute("SELECT * FROM alerts")
    names = [d[0] for d in cur.description]
    again = AlertState.from_row(dict(zip(names, cur.fetchall()[0])))
    assert again.active_since == pytest.approx(T0) and again.state == "firing"


# --- detectors ------------------------------------------------------------------------------------

def _series(rounds: int, blocked_rate: list[float] | None = None, seed: int = 0,
            **over: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = np.full(rounds, 500)
    rates = blocked_rate or [0.03] * rounds
    attempted = rng.binomial(500, rates)
    s: dict[str, np.ndarray] = {
        "round": np.arange(rounds), "actions": n, "covered": n.copy(), "enforce_mode": n.copy(),
        "attempted": attempted, "blocked": attempted, "escaped": np.zeros(rounds, int),
        "evasions": rng.binomial(500, 0.01, rounds), "executed": n - attempted,
        "latency_us_sum": n * 300, "reward_n": np.full(rounds, 50),
        "reward_sum": np.full(rounds, 50 * 0.89), "reward_sq_sum": np.full(rounds, 50 * 0.8),
        "base_reward_n": np.full(rounds, 50), "base_reward_sum": np.full(rounds, 50 * 0.94),
        "base_reward_sq_sum": np.full(rounds, 50 * 0.9),
    }
    s.update(over)
    return s


def test_adherence_drift_detector() -> None:
    labels = {"run_id": "r1", "arm": "governed"}
    quiet = _series(40)
    assert evaluate_detector("adherence_drift", {}, quiet, labels=labels) == []
    drifted = _series(40, [0.03] * 30 + [0.06] * 10)
    out = evaluate_detector("adherence_drift", {}, drifted, labels=labels)
    assert len(out) == 1 and out[0].labels == labels and out[0].round == 39
    assert 0.05 < (out[0].value or 0) < 0.07
    assert 28 <= int(out[0].info["change_round"]) <= 32
    given = evaluate_detector("adherence_drift", {"p0": 0.03}, drifted)
    assert given and given[0].info["p0"] == "0.03"


def test_other_detectors() -> None:
    s = _series(30, covered=np.r_[np.full(29, 500), 499])
    cov = evaluate_detector("coverage_drop", {}, s)
    assert cov and cov[0].value == pytest.approx(0.998) and cov[0].round == 29
    assert evaluate_detector("coverage_drop", {}, _series(30)) == []
    shadow = _series(30, enforce_mode=np.zeros(30, int), covered=np.zeros(30, int))
    assert evaluate_detector("coverage_drop", {}, shadow) == []  # not a governed arm
    seen = {**s, "witnessed": np.r_[np.full(28, 8), 8, 0], "witness_governed": np.r_[
        np.full(28, 8), 6, 0]}
    (w,) = evaluate_detector("witnessed_coverage_drop", {}, seen)  # its latest witnessed round
    assert (w.value, w.round, w.info["missing"]) == (0.75, 28, "2")
    assert evaluate_detector("witnessed_coverage_drop", {}, {**shadow, **{
        k: v for k, v in seen.items() if k.startswith("witness")}}) == []
    assert evaluate_detector("evasion_drift", {}, shadow) == []
    # A penalized arm (penalize mode) is judged on coverage like a governed one.
    penalized = {**s, "enforce_mode": np.zeros(30, int), "penalize_mode": np.full(30, 500)}
    (p,) = evaluate_detector("coverage_drop", {}, penalized)
    assert (p.value, p.round) == (pytest.approx(0.998), 29)
    assert evaluate_detector("coverage_drop", {}, {**shadow, "penalize_mode": np.zeros(30)}) == []
    rng = np.random.default_rng(1)
    widening = 50 * (0.89 - 0.004 * np.arange(30) + rng.normal(0, 0.005, 30))
    w = evaluate_detector("gap_widening", {}, _series(30, reward_sum=widening))
    assert w and (w[0].value or 0) < 0
    assert evaluate_detector("gap_widening", {}, _series(30)) == []
    closing = 50 * (0.94 + rng.normal(0, 0.01, 30))
    assert evaluate_detector("gap_closed", {}, _series(30, reward_sum=closing))
    lat = _series(30, latency_us_sum=500 * (300 + 10.0 * np.arange(30)))
    grown = evaluate_detector("latency_growth", {}, lat)
    assert grown and grown[0].value == pytest.approx(10.0)
    ts = np.full(30, T0)
    assert evaluate_detector("no_data", {"after": "5m"}, _series(30, ts_max=ts), now=T0 + 301)
    assert evaluate_detector("no_data", {"after": "5m"}, _series(30, ts_max=ts), now=T0 + 10) == []


def test_trend_detectors_replay_only_their_window() -> None:
    """The trend rules replay the last `window` finite points, not the whole run: the state
    must be the one a replay of every round gives (a 1000-round run is judged 100 times)."""
    from tractatus_watch.analysis.alerts.detectors import _trend
    from tractatus_watch.analysis.drift import TrendDetector

    rng = np.random.default_rng(3)
    for n, window, direction in ((300, 30, -1), (300, 30, 1), (40, 30, 1), (29, 30, -1),
                                 (120, 7, -1), (60, 1, 1)):
        t = np.arange(n) * 2 + 5
        y = 0.9 + direction * 0.002 * np.arange(n) + rng.normal(0, 0.01, n)
        y[rng.random(n) < 0.15] = np.nan  # rounds without a value keep their round only
        full = TrendDetector(direction, window=window, alpha=0.01, min_points=8)
        for r, v in zip(t, y):
            expected = full.update(float(v), int(r))
        got = _trend(direction, {"window": window}, t, y)
        assert repr(got) == repr(expected), (n, window, direction)
    alarms = [_trend(d, {}, np.arange(300), 0.5 + d * 0.001 * np.arange(300)
                     + rng.normal(0, 0.001, 300)) for d in (-1, 1)]
    assert all(a is not None and a.alarm and a.round == 299 and a.n == 30 for a in alarms)


def test_detectors_raise_nodata_and_reject_bad_input() -> None:
    empty = {k: v[:0] for k, v in _series(3).items()}
    with pytest.raises(NoData):
        evaluate_detector("adherence_drift", {}, empty)
    with pytest.raises(NoData):
        evaluate_detector("gap_widening", {}, _series(10, base_reward_n=np.zeros(10, int)))
    with pytest.raises(NoData):
        evaluate_detector("adherence_drift", {}, _series(5, covered=np.zeros(5, int)))
    with pytest.raises(ValueError):
        evaluate_detector("teleport", {}, _series(3))
    with pytest.raises(ValueError):
        evaluate_detector("coverage_drop", {"speed": 1}, _series(3))


# --- the pieces together: default rules over a real DuckDB ---------------------------------------

class _DuckEvaluator:
    """What the lead's evaluator does, in miniature: SQL for expr, per-round series for
    detectors."""

    SERIES = ("SELECT round, SUM(actions), SUM(covered), SUM(enforce_mode), SUM(attempted), "
              "SUM(blocked), SUM(escaped), SUM(evasions), SUM(executed), SUM(latency_us_sum), "
              "SUM(reward_n), SUM(reward_sum), SUM(reward_sq_sum) FROM rollup_agent "
              "WHERE run_id = ? AND arm = ? GROUP BY round ORDER BY round")
    COLS = ("round", "actions", "covered", "enforce_mode", "attempted", "blocked", "escaped",
            "evasions", "executed", "latency_us_sum", "reward_n", "reward_sum", "reward_sq_sum")

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        define_clock(con)  # the rules' clock, tw_now()

    def evaluate(self, rule: AlertRule) -> list[Sample]:
        if rule.expr is not None:
            cur = self.con.execute(rule.expr)
            names = [d[0] for d in cur.description]
            out = []
            for row in cur.fetchall():
                rec = dict(zip(names, row))
                rnd = rec.pop("round", None)
                value = rec.pop("value", None)
                out.append(Sample({k: str(v) for k, v in rec.items()}, value, rnd))
            return out
        samples: list[Sample] = []
        for run, arm in self.con.execute(
                "SELECT DISTINCT run_id, arm FROM rollup_agent WHERE arm = 'governed'").fetchall():
            rows = self.con.execute(self.SERIES, [run, arm]).fetchall()
            series = {c: np.array([r[i] for r in rows], dtype=float)
                      for i, c in enumerate(self.COLS)}
            base = self.con.execute(self.SERIES, [run, "ungoverned"]).fetchall()
            if len(base) == len(rows):
                for i, c in enumerate(self.COLS[1:], 1):
                    series["base_" + c] = np.array([r[i] for r in base], dtype=float)
            try:
                samples += evaluate_detector(rule.detector or "", rule.params, series,
                                             labels={"run_id": run, "arm": arm})
            except NoData:
                pass
        return samples


def test_default_rules_end_to_end_on_duckdb(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "tw.duckdb"))
    migrate(con)
    rng = np.random.default_rng(12)
    ruleset = load_default_alert_rules()
    fired: list[Transition] = []
    engine = AlertEngine(ruleset, InMemoryAlertStore(),
                         notifiers=[CallbackNotifier(fired.extend, only_notifiable=True)])
    evaluator = _DuckEvaluator(con)
    for rnd in range(45):
        rate = 0.03 if rnd < 35 else 0.07
        attempted = int(rng.binomial(500, rate))
        for arm, covered in (("governed", 500), ("ungoverned", 0)):
            con.execute("INSERT INTO rollup_agent VALUES (?, ?, ?, 'a', 500, ?, ?, ?, ?, 0, 0, ?, "
                        "150000, 50, ?, ?, now()::TIMESTAMP, now()::TIMESTAMP, 0, 0, 0)",
                        ["r1", arm, rnd, covered, covered, attempted,
                         attempted if covered else 0, 500 - attempted,
                         50 * 0.89 if covered else 50 * 0.94, 50 * 0.8])
        engine.evaluate(T0 + rnd, None, evaluate_rules(engine.rules, evaluator))
    names = {t.alertname for t in fired if t.to_state == "firing"}
    assert names == {"AdherenceDrift"}
    drift = next(t for t in fired if t.alertname == "AdherenceDrift")
    assert drift.labels["run_id"] == "r1" and drift.round is not None and drift.round >= 35
    assert "since round 3" in drift.annotations["summary"]
    assert engine.rule_errors == {}
