"""The rule fixtures in tests/fixtures/rules keep to the Tractatus rule schema.

The fixtures are written for the tests; this checks them the way a Tractatus deployment would
read them, so a fixture edited to make a test pass cannot drift away from the real format.
The allowed values are written out here rather than read from the Tractatus reference files,
which are not part of the repository:

- rules (the rule file of `sample-governance-rules.json`): the five quadrants and four
  persistence levels of OPS-002's classification, the five services as `enforced_by`, and the
  `violation_action` vocabulary of the public sample rules (no schema enumerates it);
- instruction records: the `required` fields and enums of `rule-database-schema.json`.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import pytest

FIXTURES: Final = Path(__file__).resolve().parents[1] / "fixtures" / "rules"
RULES_FILE: Final = FIXTURES / "governance-rules.json"
INSTRUCTIONS_FILE: Final = FIXTURES / "instructions.json"

# --- the rule file -------------------------------------------------------------------------------

RULE_REQUIRED: Final = ("rule_id", "quadrant", "persistence", "title", "content", "enforced_by",
                        "violation_action", "examples", "rationale")
RULE_QUADRANTS: Final = frozenset({"STRATEGIC", "OPERATIONAL", "TACTICAL", "SYSTEM", "STOCHASTIC"})
RULE_PERSISTENCE: Final = frozenset({"HIGH", "MEDIUM", "LOW", "VARIABLE"})
SERVICES: Final = frozenset({"BoundaryEnforcer", "CrossReferenceValidator",
                             "ContextPressureMonitor", "MetacognitiveVerifier",
                             "InstructionPersistenceClassifier"})
VIOLATION_ACTIONS: Final = frozenset({
    "BLOCK_AND_ESCALATE", "BLOCK_AND_ALERT", "BLOCK_AND_REPORT", "VALIDATE_BEFORE_SUGGEST",
    "VALIDATE_BEFORE_CHANGE", "ADJUST_VERIFICATION_LEVEL", "CLASSIFY_AND_STORE",
    "VERIFY_BEFORE_EXECUTE", "VERIFY_QUALITY_BEFORE_COMMIT",
})
SECTIONS: Final = frozenset({"12.1", "12.2", "12.3", "12.4", "12.5", "12.6"})
PRESSURE_LEVELS: Final = ("NORMAL", "ELEVATED", "HIGH", "CRITICAL", "DANGEROUS")
_RULE_ID: Final = re.compile(r"^[A-Z]{3,4}-\d{3}$")
_BAND: Final = re.compile(r"^(\d{1,3})-(\d{1,3})%$")


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def rule_problems(data: Any) -> list[str]:
    """Every way `data` departs from the Tractatus rule file format; empty when it keeps to it."""
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        return ["expected an object with a 'rules' list"]
    problems: list[str] = []
    seen: set[str] = set()
    for i, rule in enumerate(data["rules"]):
        where = f"rules[{i}]"
        if not isinstance(rule, dict):
            problems.append(f"{where}: expected an object")
            continue
        problems += [f"{where}.{k}: missing" for k in RULE_REQUIRED if k not in rule]
        for key in ("rule_id", "title", "content", "rationale"):
            if key in rule and not _nonempty_str(rule[key]):
                problems.append(f"{where}.{key}: expected a non-empty string")
        rid = rule.get("rule_id")
        if isinstance(rid, str):
            if not _RULE_ID.match(rid):
                problems.append(f"{where}.rule_id: {rid!r} is not like 'STR-001'")
            if rid in seen:
                problems.append(f"{where}.rule_id: {rid!r} twice")
            seen.add(rid)
        for key, allowed in (("quadrant", RULE_QUADRANTS), ("persistence", RULE_PERSISTENCE),
                             ("enforced_by", SERVICES), ("violation_action", VIOLATION_ACTIONS)):
            if key in rule and rule[key] not in allowed:
                problems.append(f"{where}.{key}: {rule[key]!r} not allowed")
        examples = rule.get("examples")
        if "examples" in rule and (not isinstance(examples, list) or not examples
                                   or not all(_nonempty_str(e) for e in examples)):
            problems.append(f"{where}.examples: expected a non-empty list of strings")
        problems += _optional_rule_problems(rule, where)
    return problems


def _optional_rule_problems(rule: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    if "boundary_section" in rule and rule["boundary_section"] not in SECTIONS:
        problems.append(f"{where}.boundary_section: {rule['boundary_section']!r} not allowed")
    if "confidence_threshold" in rule:
        ct = rule["confidence_threshold"]
        if isinstance(ct, bool) or not isinstance(ct, (int, float)) or not 0 < ct <= 1:
            problems.append(f"{where}.confidence_threshold: expected a number in (0, 1]")
    if "thresholds" in rule:
        bands = rule["thresholds"]
        if not isinstance(bands, dict) or sorted(bands) != sorted(PRESSURE_LEVELS):
            problems.append(f"{where}.thresholds: expected one band per level "
                            f"({', '.join(PRESSURE_LEVELS)})")
        else:
            last = -1
            for level in PRESSURE_LEVELS:
                m = _BAND.match(str(bands[level]))
                if m is None or not last < int(m.group(1)) <= int(m.group(2)) <= 100:
                    problems.append(f"{where}.thresholds.{level}: {bands[level]!r} is not a "
                                    "rising 'lo-hi%' band")
                    break
                last = int(m.group(2))
    return problems


# --- instruction records (rule-database-schema.json) ---------------------------------------------

INSTRUCTION_REQUIRED: Final = ("id", "text", "timestamp", "quadrant", "persistence",
                               "temporal_scope", "verification_required", "explicitness",
                               "source", "active")
INSTRUCTION_ENUMS: Final[dict[str, frozenset[str]]] = {
    "quadrant": frozenset({"SYSTEM", "PRIVACY", "VALUES", "RULES"}),
    "persistence": frozenset({"HIGH", "MEDIUM", "LOW"}),
    "temporal_scope": frozenset({"PERMANENT", "SESSION", "TEMPORARY"}),
    "verification_required": frozenset({"MANDATORY", "RECOMMENDED", "NONE"}),
    "source": frozenset({"user", "framework", "derived"}),
}
PARAMETER_LISTS: Final = ("enforcement", "triggers", "exemptions")
_INSTRUCTION_ID: Final = re.compile(r"^inst_[0-9]+$")


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def instruction_problems(data: Any) -> list[str]:
    """Every way a list of instruction records departs from rule-database-schema.json."""
    if not isinstance(data, list) or not data:
        return ["expected a non-empty list of instruction records"]
    problems: list[str] = []
    for i, rec in enumerate(data):
        where = f"[{i}]"
        if not isinstance(rec, dict):
            problems.append(f"{where}: expected an object")
            continue
        problems += [f"{where}.{k}: missing" for k in INSTRUCTION_REQUIRED if k not in rec]
        if "id" in rec and not (isinstance(rec["id"], str) and _INSTRUCTION_ID.match(rec["id"])):
            problems.append(f"{where}.id: {rec['id']!r} does not match inst_NNN")
        if "text" in rec and not (isinstance(rec["text"], str) and len(rec["text"]) >= 10):
            problems.append(f"{where}.text: expected a string of at least 10 characters")
        if "timestamp" in rec and not _is_datetime(rec["timestamp"]):
            problems.append(f"{where}.timestamp: {rec['timestamp']!r} is not a date-time")
        for key, allowed in INSTRUCTION_ENUMS.items():
            if key in rec and rec[key] not in allowed:
                problems.append(f"{where}.{key}: {rec[key]!r} not allowed")
        ex = rec.get("explicitness")
        if "explicitness" in rec and (isinstance(ex, bool) or not isinstance(ex, (int, float))
                                      or not 0 <= ex <= 1):
            problems.append(f"{where}.explicitness: expected a number in [0, 1]")
        if "active" in rec and not isinstance(rec["active"], bool):
            problems.append(f"{where}.active: expected a boolean")
        if "notes" in rec and not isinstance(rec["notes"], str):
            problems.append(f"{where}.notes: expected a string")
        params = rec.get("parameters", {})
        if not isinstance(params, dict):
            problems.append(f"{where}.parameters: expected an object")
            continue
        for key in PARAMETER_LISTS:
            value = params.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"{where}.parameters.{key}: expected a list of strings")
    return problems


# --- the tests -----------------------------------------------------------------------------------

def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_rule_fixture_keeps_to_the_rule_schema() -> None:
    data = _load(RULES_FILE)
    assert rule_problems(data) == []
    assert [r["rule_id"] for r in data["rules"]] == [
        "STR-001", "STR-002", "OPS-001", "OPS-002", "TAC-001",
        "SYS-001", "SYS-002", "SEC-001", "VAL-001", "QUAL-001"]
    assert {r["enforced_by"] for r in data["rules"]} == SERVICES


def test_instruction_fixture_keeps_to_the_database_schema() -> None:
    data = _load(INSTRUCTIONS_FILE)
    assert instruction_problems(data) == []
    assert [r["id"] for r in data] == ["inst_001", "inst_002"]


@pytest.mark.parametrize(("change", "problem"), [
    (lambda r: r.pop("rationale"), "rules[0].rationale: missing"),
    (lambda r: r.update(quadrant="VALUES"), "rules[0].quadrant: 'VALUES' not allowed"),
    (lambda r: r.update(persistence="FOREVER"), "rules[0].persistence: 'FOREVER' not allowed"),
    (lambda r: r.update(violation_action="IGNORE"),
     "rules[0].violation_action: 'IGNORE' not allowed"),
    (lambda r: r.update(enforced_by="Gatekeeper"),
     "rules[0].enforced_by: 'Gatekeeper' not allowed"),
    (lambda r: r.update(examples=[]), "rules[0].examples: expected a non-empty list of strings"),
    (lambda r: r.update(boundary_section="13.1"), "rules[0].boundary_section: '13.1' not allowed"),
])
def test_rule_check_rejects_a_broken_rule(change: Any, problem: str) -> None:
    data = copy.deepcopy(_load(RULES_FILE))
    change(data["rules"][0])
    assert rule_problems(data) == [problem]


def test_rule_check_rejects_broken_optional_fields() -> None:
    data = copy.deepcopy(_load(RULES_FILE))
    rules = {r["rule_id"]: r for r in data["rules"]}
    rules["TAC-001"]["confidence_threshold"] = 85
    rules["OPS-001"]["thresholds"]["HIGH"] = "50-70%"  # overlaps ELEVATED's 41-60%
    rules["QUAL-001"]["rule_id"] = "STR-001"
    assert rule_problems(data) == [
        "rules[2].thresholds.HIGH: '50-70%' is not a rising 'lo-hi%' band",
        "rules[4].confidence_threshold: expected a number in (0, 1]",
        "rules[9].rule_id: 'STR-001' twice",
    ]


@pytest.mark.parametrize(("change", "problem"), [
    (lambda r: r.pop("temporal_scope"), "[1].temporal_scope: missing"),
    (lambda r: r.update(id="rule-2"), "[1].id: 'rule-2' does not match inst_NNN"),
    (lambda r: r.update(quadrant="STRATEGIC"), "[1].quadrant: 'STRATEGIC' not allowed"),
    (lambda r: r.update(persistence="VARIABLE"), "[1].persistence: 'VARIABLE' not allowed"),
    (lambda r: r.update(source="someone"), "[1].source: 'someone' not allowed"),
    (lambda r: r.update(explicitness=1.5), "[1].explicitness: expected a number in [0, 1]"),
    (lambda r: r.update(timestamp="yesterday"), "[1].timestamp: 'yesterday' is not a date-time"),
    (lambda r: r.update(text="short"), "[1].text: expected a string of at least 10 characters"),
    (lambda r: r.update(active="yes"), "[1].active: expected a boolean"),
    (lambda r: r["parameters"].update(triggers="commit"),
     "[1].parameters.triggers: expected a list of strings"),
])
def test_instruction_check_rejects_a_broken_record(change: Any, problem: str) -> None:
    data = copy.deepcopy(_load(INSTRUCTIONS_FILE))
    change(data[1])
    assert instruction_problems(data) == [problem]
