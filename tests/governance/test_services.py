"""The governance services against the fixture Tractatus rules and the packaged content rules.

The fixtures (`tests/fixtures/rules/`) are rules and instruction records in the Tractatus rule
schema, written for these tests; `test_rule_fixtures.py` checks them against the schema.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tractatus_watch.governance.services import (
    ActionInput, BoundaryEnforcer, ContextPressureMonitor, CrossReferenceValidator, CustomRule,
    InstructionPersistenceClassifier, MetacognitiveVerifier, RuleError, RuleSet, classify,
    default_rules, default_services, load_rules,
)
from tractatus_watch.governance.services.boundary import BOUNDARY_KEYWORDS
from tractatus_watch.governance.services.pressure import thresholds_from_rule
from tractatus_watch.governance.services.rules import parse_toml_rules
from tractatus_watch.records.verdicts import UnknownVerdict, normalise, strongest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rules"
SAMPLE = FIXTURES / "governance-rules.json"
INSTRUCTIONS = FIXTURES / "instructions.json"


@pytest.fixture(scope="module")
def sample() -> RuleSet:
    return load_rules(SAMPLE)


@pytest.fixture(scope="module")
def rules(sample: RuleSet) -> RuleSet:
    return default_rules() + sample


def act(**kw) -> ActionInput:
    return ActionInput.coerce(kw)


# --- rules ----------------------------------------------------------------------------------------

def test_sample_rules_load_with_their_services(sample: RuleSet) -> None:
    assert [r.rule_id for r in sample] == ["STR-001", "STR-002", "OPS-001", "OPS-002", "TAC-001",
                                           "SYS-001", "SYS-002", "SEC-001", "VAL-001", "QUAL-001"]
    by_service = {s: [r.rule_id for r in sample.for_service(s)] for s in (
        "BoundaryEnforcer", "CrossReferenceValidator", "ContextPressureMonitor",
        "MetacognitiveVerifier", "InstructionPersistenceClassifier")}
    assert by_service == {
        "BoundaryEnforcer": ["STR-001", "SYS-002", "SEC-001", "VAL-001"],
        "CrossReferenceValidator": ["STR-002", "SYS-001"],
        "ContextPressureMonitor": ["OPS-001"],
        "MetacognitiveVerifier": ["TAC-001", "QUAL-001"],
        "InstructionPersistenceClassifier": ["OPS-002"],
    }
    str1 = sample.get("STR-001")
    assert str1 is not None and (str1.boundary, str1.section, str1.persistence) == (
        "VALUES", "12.1", "HIGH")
    assert sample.get("TAC-001").params["confidence_threshold"] == 0.85  # type: ignore[union-attr]
    assert sample.get("SEC-001").detector == "csp"  # type: ignore[union-attr]


def test_instruction_records_of_the_schema_load(tmp_path: Path) -> None:
    examples = json.loads(INSTRUCTIONS.read_text())
    path = tmp_path / "instructions.json"
    path.write_text(json.dumps(examples))
    loaded = load_rules(path)
    assert [r.rule_id for r in loaded] == ["inst_001", "inst_002"]
    inst2 = loaded.get("inst_002")
    assert inst2 is not None
    assert inst2.service == "CrossReferenceValidator"
    assert (inst2.quadrant, inst2.persistence, inst2.explicitness) == ("VALUES", "HIGH", 1.0)
    assert inst2.timestamp == 1761350400.0  # 2025-10-25T00:00:00Z
    assert inst2.params["parameters"]["triggers"] == ["commit", "document_write"]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"instructions": examples}))
    assert len(load_rules(wrapped)) == 2


def test_known_content_instructions_go_to_the_boundary_enforcer(tmp_path: Path) -> None:
    path = tmp_path / "inst.json"
    path.write_text(json.dumps([{"id": "inst_016", "text": "No fabricated statistics ever"}]))
    rule = load_rules(path).get("inst_016")
    assert rule is not None
    assert (rule.service, rule.detector, rule.boundary) == ("BoundaryEnforcer",
                                                            "unsourced_statistic", "VALUES")


def test_packaged_toml_rules() -> None:
    rules = default_rules()
    assert [(r.rule_id, r.detector) for r in rules] == [
        ("CONTENT-PERSONAL-DATA", "personal_data"), ("inst_017", "absolute_assurance"),
        ("CONTENT-CLICKBAIT", "clickbait"), ("inst_016", "unsourced_statistic"),
        ("inst_018", "unverified_claim")]
    assert all(r.service == "BoundaryEnforcer" and r.boundary == "VALUES" for r in rules)


def test_toml_format_instructions_and_errors(tmp_path: Path) -> None:
    rules = parse_toml_rules('''
schema = "tractatus-watch.rules/1"
[[rules]]
id = "NO-CASINO"
service = "BoundaryEnforcer"
text = "Never promote gambling"
detector = "phrases"
phrases = ["online casino"]
owner = "policy-team"
[[instructions]]
id = "inst_100"
text = "Use MongoDB port 27027"
persistence = "HIGH"
timestamp = 2025-10-25T00:00:00Z
''')
    casino, inst = list(rules)
    assert casino.params == {"owner": "policy-team"} and casino.phrases == ("online casino",)
    assert inst.service == "CrossReferenceValidator" and inst.timestamp == 1761350400.0
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nid = "X"\nservice = "BoundaryEnforcer"\ntext = "t"\n'
                   'persistence = "FOREVER"\n')
    with pytest.raises(RuleError, match=r"bad\.toml: rules\[0\]\.persistence"):
        load_rules(bad)
    bad.write_text('[[rules]]\nservice = "BoundaryEnforcer"\ntext = "t"\n')
    with pytest.raises(RuleError, match=r"rules\[0\]\.id: missing"):
        load_rules(bad)
    with pytest.raises(RuleError, match="cannot read"):
        load_rules(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        BoundaryEnforcer(parse_toml_rules(
            '[[rules]]\nid = "X"\nservice = "BoundaryEnforcer"\ntext = "t"\ndetector = "nope"\n'))


# --- verdicts -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    # BoundaryEnforcer
    ("PROCEED", "allow"), ("PROCEED_WITH_NOTIFICATION", "warn"), ("REQUEST_APPROVAL", "escalate"),
    ("REQUIRE_HUMAN_DECISION", "block"),
    # CrossReferenceValidator
    ("APPROVED", "allow"), ("WARNING", "warn"), ("ESCALATE", "escalate"), ("REJECTED", "block"),
    # ContextPressureMonitor
    ("NORMAL", "allow"), ("ELEVATED", "warn"), ("HIGH", "warn"), ("CRITICAL", "escalate"),
    ("DANGEROUS", "block"),
    # MetacognitiveVerifier
    ("PROCEED_WITH_CAUTION", "warn"), ("REQUEST_CONFIRMATION", "escalate"),
    ("REQUIRE_REVIEW", "escalate"), ("BLOCK", "block"),
    # generic audit pattern
    ("ALLOW", "allow"), ("WARN", "warn"), ("BLOCKED", "block"),
])
def test_every_raw_verdict_normalises(raw: str, expected: str) -> None:
    assert normalise(raw) == expected
    assert normalise(f"  {raw.lower()} ") == expected


def test_unknown_verdict_and_strongest() -> None:
    with pytest.raises(UnknownVerdict):
        normalise("MAYBE")
    assert strongest(["allow", "escalate", "warn"]) == "escalate"
    assert strongest([]) == "allow"


# --- BoundaryEnforcer -----------------------------------------------------------------------------

# The demo's publishing styles: what each must get from the BoundaryEnforcer.
STYLES = {
    "informative": (dict(kind="publish",
                         params={"headline": "Study links regular sleep to better memory"},
                         text="Researchers followed volunteers for a year and found regular sleep "
                              "was associated with better memory.",
                         sources=["https://example.org/study"]), "allow", ""),
    "balanced": (dict(kind="publish", params={"headline": "City weighs new bus lanes"},
                      text="Supporters say the bus lanes would shorten commutes; shop owners "
                           "worry about deliveries."), "allow", ""),
    "sensational": (dict(kind="publish", params={"headline": "Shocking new study on sleep"},
                         text="A new study on sleep suggests many adults sleep less than they "
                              "think."),
                    "warn", "CONTENT-CLICKBAIT"),
    "clickbait": (dict(kind="publish",
                       params={"headline": "You won't believe what this CEO did next!!!"},
                       text="The chief executive announced a reorganisation."),
                  "block", "CONTENT-CLICKBAIT"),
    "unsourced statistic": (dict(kind="publish", params={"headline": "Readers switch apps"},
                                 text="73% of readers switched to our app last year."),
                            "block", "inst_016"),
    "absolute guarantee": (dict(kind="publish", params={"headline": "Our app keeps you safe"},
                                text="Our app is guaranteed to keep your data 100% safe."),
                           "block", "inst_017"),
    "personal data exposure": (dict(kind="publish", params={"headline": "Meet our top reader"},
                                    text="Write to Jane at jane.doe@example.com; her home address "
                                         "is 12 Elm Street."),
                               "block", "CONTENT-PERSONAL-DATA"),
}


@pytest.mark.parametrize("style", list(STYLES))
def test_demo_styles_are_classified(rules: RuleSet, style: str) -> None:
    action, verdict, rule_id = STYLES[style]
    check = BoundaryEnforcer(rules).check(act(**action), {})
    assert (check.verdict, check.rule_id) == (verdict, rule_id), check.reason
    assert check.service == "BoundaryEnforcer"
    assert isinstance(check.latency_us, int) and check.latency_us >= 0
    if verdict == "block":
        assert check.raw_verdict == "REQUIRE_HUMAN_DECISION" and check.boundary == "VALUES"


@pytest.mark.parametrize(("text", "rule_id"), [
    ("Call me on +1 (555) 123-4567 tonight", "CONTENT-PERSONAL-DATA"),
    ("His social security number is on file", "CONTENT-PERSONAL-DATA"),
    ("ROI of 300 within weeks: a 5x ROI for every client", "inst_016"),
    ("We raised $4.5 million last quarter", "inst_016"),
    ("This method is risk-free and never fails", "inst_017"),
    ("Our platform is production-ready and battle-tested", "inst_018"),
    ("SHOCKING: markets CRASH as investors panic", "CONTENT-CLICKBAIT"),
])
def test_content_rules_catch(text: str, rule_id: str) -> None:
    check = BoundaryEnforcer().check(act(kind="publish", text=text), {})
    assert (check.verdict, check.rule_id) == ("block", rule_id), check.reason


@pytest.mark.parametrize("text", [
    "We cannot guarantee results, and there is no guarantee of returns.",
    "This library is not yet production-ready.",
    "73% of readers switched apps last year [NEEDS VERIFICATION].",
    "Server 10.0.0.12 listens on port 27017 since 2024-10-12.",
    "We never publish your home address.",
])
def test_content_rules_do_not_trigger_on_negations_or_numbers(text: str) -> None:
    check = BoundaryEnforcer().check(act(kind="publish", text=text), {})
    assert check.verdict == "allow", check.reason


def test_sources_or_evidence_clear_claims() -> None:
    be = BoundaryEnforcer()
    sourced = act(kind="publish", text="73% of readers switched.", sources=["survey.pdf"])
    assert be.check(sourced, {}).verdict == "allow"
    assert be.check(act(kind="publish", text="It is battle-tested.",
                        params={"evidence": "3 years in production at X"}), {}).verdict == "allow"


def test_pre_approved_and_technical_domains_pass() -> None:
    be = BoundaryEnforcer()
    clickbait = dict(kind="publish", text="You won't believe this trick!!!")
    assert be.check(act(**clickbait), {}).verdict == "block"
    assert be.check(act(**clickbait, pre_approved=True), {}).raw_verdict == "PROCEED"
    assert be.check(act(**clickbait, domain="verification"), {}).raw_verdict == "PROCEED"


def _naive_boundary(text: str) -> bool:
    """The original's matching: any keyword as a substring crosses the boundary."""
    lower = text.lower()
    return any(kw in lower for kws in BOUNDARY_KEYWORDS.values() for kw in kws)


def test_values_boundary_does_not_over_trigger_like_the_naive_matcher(rules: RuleSet) -> None:
    be = BoundaryEnforcer(rules)
    over = [
        act(kind="message", text="Boost team morale with a Friday demo"),        # "moral" inside
        act(kind="refactor", text="Split the cache module; this refactor has no privacy impact"),
        act(kind="write_docs", text="Link the ethics review page from the wiki index"),
    ]
    for a in over:
        assert _naive_boundary(a.text), a.text  # the naive version stops all three
    verdicts = [be.check(a, {}).verdict for a in over]
    assert verdicts == ["allow", "allow", "warn"]  # one bare keyword only notifies
    # true positives are still caught: a decision, or two independent signals
    policy = be.check(act(kind="configure",
                          text="Change the privacy policy to share user data with advertisers"), {})
    assert (policy.verdict, policy.rule_id, policy.boundary) == ("block", "STR-001", "VALUES")
    assert policy.extra["section"] == "12.1"
    agency = be.check(act(kind="act", text="Sign the contract on behalf of the user"), {})
    assert (agency.verdict, agency.rule_id, agency.boundary, agency.extra["section"]) == (
        "block", "BOUNDARY-12.6", "AGENCY", "12.6")
    decided = be.check(act(kind="decide_policy", text="Adopt a new ethics stance"), {})
    assert decided.verdict == "block"
    two = be.check(act(kind="publish", text="We will sell customer data without consent"), {})
    assert two.verdict == "block" and "2 signals" in two.reason
    maori = be.check(act(kind="update_site", text="Change the Te Reo Māori translations"), {})
    assert (maori.verdict, maori.rule_id) == ("block", "VAL-001")


def test_sample_boundary_rules_csp_and_project_isolation(rules: RuleSet) -> None:
    be = BoundaryEnforcer(rules)
    csp = be.check(act(kind="write_file", text="<button onclick='go()'>Go</button>",
                       params={"path": "site/index.html"}), {})
    assert (csp.verdict, csp.rule_id) == ("block", "SEC-001")
    ok = be.check(act(kind="write_file", text='<script src="app.js"></script>',
                      params={"path": "site/index.html"}), {})
    assert ok.verdict == "allow"
    iso = be.check(act(kind="edit", text="Copy the date parser from the family-history repo"), {})
    assert (iso.verdict, iso.rule_id) == ("block", "SYS-002")


def test_boundary_errors_fail_safe() -> None:
    be = BoundaryEnforcer()
    rule = default_rules().get("inst_016")
    assert rule is not None
    be.content.append((rule, lambda a: 1 / 0))
    check = be.check(act(kind="publish", text="fine"), {})
    assert (check.verdict, check.raw_verdict, check.rule_id) == (
        "block", "REQUIRE_HUMAN_DECISION", "BOUNDARY-ERROR")
    assert "ZeroDivisionError" in check.reason


def test_several_matches_are_listed() -> None:
    check = BoundaryEnforcer().check(
        act(kind="publish", text="Guaranteed 100% safe for 99% of users"), {})
    assert check.rule_id == "inst_017"  # listed first in the packaged rules
    assert check.extra == {"section": "12.1", "matched": ["inst_017", "inst_016"]}


# --- CrossReferenceValidator ----------------------------------------------------------------------

def test_27027_incident_is_rejected(rules: RuleSet) -> None:
    crv = CrossReferenceValidator(rules, instructions=["Use MongoDB port 27027"])
    wrong = crv.check(
        act(kind="configure", text="connect the app to MongoDB", params={"port": 27017}), {})
    assert (wrong.verdict, wrong.raw_verdict, wrong.severity) == ("block", "REJECTED", "CRITICAL")
    assert wrong.rule_id == "instruction-3"
    assert wrong.extra["conflicts"][0] == {"instruction_id": "instruction-3",
                                           "severity": "CRITICAL", "param": "port",
                                           "expected": "27027", "actual": "27017"}
    right = crv.check(
        act(kind="configure", text="connect the app to MongoDB", params={"port": 27027}), {})
    assert (right.verdict, right.raw_verdict, right.rule_id) == ("allow", "APPROVED", "STR-002")
    # the port can come from the text as well
    text = crv.check(act(kind="configure", text="start mongod on localhost:27017"), {})
    assert text.raw_verdict == "REJECTED"


def test_sample_rule_port_and_engine_scope(rules: RuleSet) -> None:
    crv = CrossReferenceValidator(rules)
    assert crv.check(act(kind="configure", text="MongoDB", params={"port": 27027}),
                     {}).rule_id == "SYS-001"
    assert crv.check(act(kind="configure", text="MongoDB", params={"port": 27017}),
                     {}).verdict == "allow"
    redis = crv.check(act(kind="configure", text="start redis", params={"port": 6379}), {})
    assert redis.verdict == "allow"  # an instruction about MongoDB's port says nothing about Redis


def test_relevance_needs_overlap() -> None:
    crv = CrossReferenceValidator(instructions=[{"id": "i1", "text": "Use MongoDB port 27027",
                                                 "persistence": "HIGH", "explicitness": 1.0}])
    inst = crv.instructions[0]
    article = act(kind="publish", text="A profile of the city's new library")
    config = act(kind="configure", text="connect to MongoDB", params={"port": 27017})
    assert crv.relevance(inst, article, {}, 0.0) < 0.3
    assert crv.relevance(inst, config, {"port": "27017"}, 0.0) >= 0.3
    assert crv.check(article, {}).reason == "no conflict with 0 relevant instruction(s)"


def test_prohibitions_and_conflict_severities() -> None:
    crv = CrossReferenceValidator(instructions=[
        {"id": "p1", "text": "Never use MySQL for analytics", "persistence": "HIGH"},
        {"id": "p2", "text": "Avoid redis caching in tests", "persistence": "MEDIUM"},
        {"id": "m1", "text": "Use model=qwen2.5-7b for summaries", "persistence": "MEDIUM"},
        {"id": "m2", "text": "Set timeout=30 for summaries", "persistence": "MEDIUM"},
        {"id": "l1", "text": "Keep retries=2 for summaries", "persistence": "LOW"},
    ])
    mysql = crv.check(
        act(kind="configure", text="set up analytics", params={"database": "mysql"}), {})
    assert (mysql.raw_verdict, mysql.rule_id) == ("REJECTED", "p1")
    redis = crv.check(act(kind="run_tests", text="enable redis caching in tests"), {})
    assert (redis.raw_verdict, redis.rule_id, redis.severity) == ("WARNING", "p2", "WARNING")
    one = crv.check(act(kind="summarise", text="summaries", params={"model": "gpt-4o"}), {})
    assert (one.raw_verdict, one.rule_id) == ("WARNING", "m1")
    two = crv.check(
        act(kind="summarise", text="summaries", params={"model": "gpt-4o", "timeout": 5}), {})
    assert two.raw_verdict == "ESCALATE" and two.verdict == "escalate"
    low = crv.check(act(kind="summarise", text="summaries", params={"retries": 5}), {})
    assert low.raw_verdict == "APPROVED" and "MINOR" in [
        c["severity"] for c in low.extra["conflicts"]]


def test_context_instructions_and_classifier_feed() -> None:
    crv = CrossReferenceValidator()
    config = act(kind="configure", text="connect to MongoDB", params={"port": 27017})
    assert crv.check(config, {}).verdict == "allow"
    per_call = crv.check(config, {"instructions": ["Use MongoDB port 27027"]})
    assert per_call.raw_verdict == "REJECTED"
    classifier = InstructionPersistenceClassifier(store=crv)
    fed = classifier.check(act(kind="instruction", text="Use MongoDB port 27027"), {})
    assert fed.verdict == "allow" and fed.extra["classification"]["persistence"] == "HIGH"
    assert crv.check(config, {}).raw_verdict == "REJECTED"
    # a newer HIGH instruction supersedes the older one for the same parameter
    crv.add_instruction("Use MongoDB port 27018", persistence="HIGH")
    newer = crv.check(act(kind="configure", text="MongoDB", params={"port": 27018}), {})
    assert newer.verdict == "allow"


# --- ContextPressureMonitor -----------------------------------------------------------------------

@pytest.mark.parametrize(("pressure", "raw", "verdict"), [
    (0.0, "NORMAL", "allow"), (0.2999, "NORMAL", "allow"), (0.30, "ELEVATED", "warn"),
    (0.50, "HIGH", "warn"), (0.70, "CRITICAL", "escalate"), (0.8499, "CRITICAL", "escalate"),
    (0.85, "DANGEROUS", "block"), (1.0, "DANGEROUS", "block"),
])
def test_pressure_levels(pressure: float, raw: str, verdict: str) -> None:
    check = ContextPressureMonitor().check(act(kind="x"), {"pressure": pressure})
    assert (check.raw_verdict, check.verdict) == (raw, verdict)


def test_pressure_is_the_weighted_sum() -> None:
    mon = ContextPressureMonitor()
    a = act(kind="x")
    assert mon.score({"token_usage": 1.0}, a) == pytest.approx(0.35)
    assert mon.score({"conversation_length": 1.0}, a) == pytest.approx(0.25)
    assert mon.score({"task_complexity": 1.0}, a) == pytest.approx(0.15)
    assert mon.score({"error_frequency": 1.0}, a) == pytest.approx(0.15)
    assert mon.score({"instruction_density": 1.0}, a) == pytest.approx(0.10)
    counts = {"tokens_used": 100_000, "messages": 50, "errors": 5, "instructions": 10}
    assert mon.score(counts, act(kind="x", params={"files": 3})) == pytest.approx(
        0.35 * 0.5 + 0.25 * 0.5 + 0.15 * 0.5 + 0.15 * 1.0 + 0.10 * 0.5)
    assert mon.check(a, {"token_usage": 1, "conversation_length": 1, "task_complexity": 1,
                         "error_frequency": 1, "instruction_density": 1}).verdict == "block"


def test_pressure_thresholds_are_configurable(sample: RuleSet) -> None:
    custom = ContextPressureMonitor(thresholds={"ELEVATED": 0.1, "HIGH": 0.2, "CRITICAL": 0.3,
                                                "DANGEROUS": 0.4})
    assert custom.check(act(kind="x"), {"pressure": 0.45}).raw_verdict == "DANGEROUS"
    ops = sample.get("OPS-001")
    assert ops is not None
    assert thresholds_from_rule(ops) == {"ELEVATED": 0.41, "HIGH": 0.61, "CRITICAL": 0.81,
                                         "DANGEROUS": 0.96}
    by_rule = ContextPressureMonitor(sample, use_rule_thresholds=True)
    assert by_rule.check(act(kind="x"), {"pressure": 0.4}).raw_verdict == "NORMAL"
    assert by_rule.check(act(kind="x"), {"pressure": 0.4}).rule_id == "OPS-001"
    with pytest.raises(ValueError, match="rise strictly"):
        ContextPressureMonitor(thresholds={"ELEVATED": 0.5, "HIGH": 0.4, "CRITICAL": 0.7,
                                           "DANGEROUS": 0.9})


# --- MetacognitiveVerifier ------------------------------------------------------------------------

def test_metacognitive_verdicts(sample: RuleSet) -> None:
    mv = MetacognitiveVerifier(sample)
    assert mv.threshold == 0.85
    ok = mv.check(act(kind="publish", text="A careful article about sleep."), {})
    assert (ok.raw_verdict, ok.rule_id) == ("PROCEED", "TAC-001")
    rm = mv.check(act(kind="shell", text="rm -rf /var/lib/app"), {})
    assert (rm.raw_verdict, rm.verdict) == ("BLOCK", "block")
    backed_up = mv.check(
        act(kind="shell", text="rm -rf /var/lib/app", params={"backup": "s3://b"}), {})
    assert backed_up.verdict != "block"
    lorem = mv.check(act(kind="publish", text="Lorem ipsum dolor sit amet"), {})
    assert (lorem.raw_verdict, lorem.rule_id) == ("BLOCK", "QUAL-001")
    todo = mv.check(act(kind="commit", text="def f():\n    # TODO handle errors\n    pass"), {})
    assert (todo.raw_verdict, todo.verdict, todo.rule_id) == (
        "REQUIRE_REVIEW", "escalate", "QUAL-001")


def test_metacognitive_confidence_falls_under_pressure_and_complexity() -> None:
    mv = MetacognitiveVerifier()
    a = act(kind="publish", text="A careful article about sleep.")
    calm = mv.check(a, {})
    pressed = mv.check(a, {"pressure_level": "DANGEROUS"})
    assert calm.raw_verdict == "PROCEED"
    assert pressed.extra["confidence"] < calm.extra["confidence"]
    assert pressed.raw_verdict == "REQUEST_CONFIRMATION" and "DANGEROUS" in pressed.reason
    computed = mv.check(a, {"pressure": 0.9})  # the level is derived when not given
    assert computed.extra["confidence"] == pressed.extra["confidence"]
    complex_op = act(kind="refactor", text="restructure the storage layer", params={"files": 12})
    bare = mv.check(complex_op, {})
    planned = mv.check(complex_op, {"plan": "1. ...", "alternatives": ["keep as is"]})
    assert bare.extra["confidence"] < planned.extra["confidence"]
    assert bare.verdict == "warn" and planned.verdict == "allow"
    off_intent = mv.check(act(kind="publish", text="cat pictures"),
                          {"intent": "write about sleep research"})
    assert off_intent.extra["confidence"] < calm.extra["confidence"]


# --- InstructionPersistenceClassifier and custom rules --------------------------------------------

@pytest.mark.parametrize(("text", "quadrant", "persistence"), [
    ("Use MongoDB port 27027", "SYSTEM", "HIGH"),           # OPS-002's own examples
    ("Never automate values decisions", "STRATEGIC", "HIGH"),
    ("Fix this bug", "TACTICAL", "LOW"),
    ("Deploy to staging before review", "OPERATIONAL", "MEDIUM"),
    ("Maybe try a different colour for now", "STOCHASTIC", "LOW"),
])
def test_classifier(text: str, quadrant: str, persistence: str) -> None:
    c = classify(text)
    assert (c.quadrant, c.persistence) == (quadrant, persistence)
    assert 0.0 <= c.explicitness <= 1.0


def test_classifier_never_blocks() -> None:
    cl = InstructionPersistenceClassifier()
    assert cl.check(act(kind="publish", text="You won't believe it!!!"), {}).raw_verdict == "ALLOW"
    check = cl.check(act(kind="instruction", text="Never use port 8080"), {})
    assert check.verdict == "allow" and check.extra["classification"]["quadrant"] == "SYSTEM"
    assert classify("Use MongoDB port 27027").explicitness == 1.0
    assert classify("maybe consider postgres").explicitness < 0.5


def test_custom_rule_callables() -> None:
    a = act(kind="publish", text="hello")
    assert CustomRule(lambda a, c: None, name="quiet").check(a, {}).verdict == "allow"
    assert CustomRule(lambda a, c: "block").check(a, {}).raw_verdict == "BLOCK"
    t = CustomRule(lambda a, c: ("REQUEST_APPROVAL", "needs sign-off", "R-9")).check(a, {})
    assert (t.verdict, t.reason, t.rule_id) == ("escalate", "needs sign-off", "R-9")
    m = CustomRule(lambda a, c: {"verdict": "WARN", "reason": "hm", "severity": "LOW"},
                   name="mapped", rule_id="R-1").check(a, {})
    assert (m.service, m.verdict, m.rule_id, m.severity) == ("mapped", "warn", "R-1", "LOW")
    broken = CustomRule(lambda a, c: 1 / 0, name="broken").check(a, {})
    assert (broken.raw_verdict, broken.verdict) == ("ESCALATE", "escalate")
    weird = CustomRule(lambda a, c: "PERHAPS", name="weird").check(a, {})
    assert weird.verdict == "escalate" and "unknown verdict" in weird.reason


def test_default_services_cover_all_five(sample: RuleSet) -> None:
    names = [s.name for s in default_services(sample)]
    assert names == ["BoundaryEnforcer", "CrossReferenceValidator", "ContextPressureMonitor",
                     "MetacognitiveVerifier", "InstructionPersistenceClassifier"]
