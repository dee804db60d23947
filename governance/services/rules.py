"""Rules and instructions: one record type, loaded from Tractatus JSON or from our TOML.

Accepted inputs:

- Tractatus rule JSON (`{"rules": [{"rule_id", "quadrant", "persistence", "title", "content",
  "enforced_by", "violation_action", "boundary_section", ...}]}`), as in the public
  `sample-governance-rules.json`.
- Tractatus instructions (`inst_NNN` records of `rule-database-schema.json`: `id`, `text`,
  `timestamp`, `quadrant`, `persistence`, `explicitness`, `active`, `parameters`, ...), either
  as a list, as `{"instructions": [...]}` or one record. They are stored instructions for the
  CrossReferenceValidator, except the ids the BoundaryEnforcer knows as content rules
  (inst_016/017/018).
- TOML, our own small format (see `governance/rules/default.toml`)::

      schema = "tractatus-watch.rules/1"
      [[rules]]
      id = "CONTENT-CLICKBAIT"          # required
      service = "BoundaryEnforcer"       # required: which service applies it
      text = "..."                       # required: the rule as a human reads it
      title, quadrant, persistence, boundary, section, severity = "..."
      verdict = "REQUIRE_HUMAN_DECISION" # raw verdict when violated
      detector = "clickbait"             # a built-in detector (see boundary.py)
      phrases = ["..."]                  # extra whole-word phrases for the detector
      patterns = ["..."]                 # extra regular expressions (case-insensitive)
      explicitness = 0.9
      timestamp = "2025-10-25T00:00:00Z"
      active = true
      # any other key is kept in `params`
      [[instructions]]                   # shorthand for service = "CrossReferenceValidator"
      id = "inst_100"
      text = "Use MongoDB port 27027"
      persistence = "HIGH"

Unknown fields are kept in `params` rather than rejected; a missing required field or an
unknown persistence is an error that names the file and the rule.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Iterable, Iterator, Mapping

from ...records.events import ValidationError, parse_ts

BOUNDARY_OF_SECTION: Final[dict[str, str]] = {
    "12.1": "VALUES", "12.2": "INNOVATION", "12.3": "WISDOM", "12.4": "PURPOSE",
    "12.5": "MEANING", "12.6": "AGENCY",
}
PERSISTENCE_LEVELS: Final = ("HIGH", "MEDIUM", "LOW", "VARIABLE")
SERVICES: Final = ("BoundaryEnforcer", "CrossReferenceValidator", "ContextPressureMonitor",
                   "MetacognitiveVerifier", "InstructionPersistenceClassifier")

# Known Tractatus rules whose behaviour is a content check rather than a keyword boundary. The
# rule files describe them in prose only, so the mapping to a detector has to live in code.
KNOWN_DETECTORS: Final[dict[str, dict[str, Any]]] = {
    "inst_016": {"service": "BoundaryEnforcer", "detector": "unsourced_statistic",
                 "boundary": "VALUES", "section": "12.1"},
    "inst_017": {"service": "BoundaryEnforcer", "detector": "absolute_assurance",
                 "boundary": "VALUES", "section": "12.1"},
    "inst_018": {"service": "BoundaryEnforcer", "detector": "unverified_claim",
                 "boundary": "VALUES", "section": "12.1"},
    "SEC-001": {"detector": "csp"},
    # "separate from family-history and sydigital projects. No shared code, no copy-paste"
    "SYS-002": {"detector": "phrases", "phrases": ["family-history", "sydigital"]},
}


class RuleError(ValueError):
    """A rule file that cannot be read; the message names the file and the rule."""


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    text: str
    service: str
    quadrant: str = ""
    persistence: str = "MEDIUM"
    title: str = ""
    violation_action: str = ""
    boundary: str | None = None
    section: str | None = None
    severity: str | None = None
    verdict: str | None = None
    detector: str | None = None
    phrases: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    explicitness: float = 1.0
    timestamp: float | None = None
    active: bool = True
    origin: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)


class RuleSet:
    """An ordered set of rules; a later rule with the same id replaces an earlier one."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._rules: dict[str, Rule] = {}
        for rule in rules:
            self._rules[rule.rule_id] = rule

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules.values())

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._rules

    def __add__(self, other: Iterable[Rule]) -> RuleSet:
        return RuleSet([*self, *other])

    def __repr__(self) -> str:
        return f"RuleSet({len(self)} rules: {', '.join(self._rules)})"

    def get(self, rule_id: str) -> Rule | None:
        return self._rules.get(rule_id)

    def for_service(self, service: str) -> list[Rule]:
        return [r for r in self._rules.values() if r.service == service and r.active]


# --- parsing ------------------------------------------------------------------------------------

def _strs(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise RuleError(f"{where}: expected a list of strings")


def _persistence(value: Any, where: str) -> str:
    p = str(value or "MEDIUM").upper()
    if p not in PERSISTENCE_LEVELS:
        raise RuleError(f"{where}.persistence: expected one of {', '.join(PERSISTENCE_LEVELS)}, "
                        f"got {value!r}")
    return p


def _timestamp(value: Any, where: str) -> float | None:
    if value is None or value == "":
        return None
    if hasattr(value, "timestamp"):  # TOML datetimes arrive as datetime objects
        return float(value.timestamp())
    try:
        return parse_ts(value, where + ".timestamp")
    except ValidationError as exc:
        raise RuleError(str(exc)) from None


def _explicitness(value: Any, where: str) -> float:
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise RuleError(f"{where}.explicitness: expected a number in [0, 1], got {value!r}")
    return float(value)


def _build(d: Mapping[str, Any], *, rule_id: str, text: str, service: str, where: str,
           used: set[str], origin: str) -> Rule:
    known = KNOWN_DETECTORS.get(rule_id, {})
    service = str(known.get("service", service))
    if service not in SERVICES:
        raise RuleError(f"{where}.service: expected one of {', '.join(SERVICES)}, got {service!r}")
    section = d.get("section", d.get("boundary_section", known.get("section")))
    section = str(section) if section is not None else None
    boundary = d.get("boundary", known.get("boundary"))
    if boundary is None and section is not None:
        boundary = BOUNDARY_OF_SECTION.get(section)
    take = used | {"quadrant", "persistence", "title", "violation_action", "boundary",
                   "boundary_section", "section", "severity", "verdict", "detector", "phrases",
                   "patterns", "explicitness", "timestamp", "active"}
    return Rule(
        rule_id=rule_id,
        text=text,
        service=service,
        quadrant=str(d.get("quadrant") or ""),
        persistence=_persistence(d.get("persistence"), where),
        title=str(d.get("title") or ""),
        violation_action=str(d.get("violation_action") or ""),
        boundary=str(boundary) if boundary is not None else None,
        section=section,
        severity=str(d["severity"]).upper() if d.get("severity") else None,
        verdict=str(d["verdict"]).strip().upper() if d.get("verdict") else None,
        detector=d.get("detector", known.get("detector")),
        phrases=_strs(d.get("phrases"), where + ".phrases") + tuple(known.get("phrases", ())),
        patterns=_strs(d.get("patterns"), where + ".patterns"),
        explicitness=_explicitness(d.get("explicitness"), where),
        timestamp=_timestamp(d.get("timestamp"), where),
        active=bool(d.get("active", True)),
        origin=origin,
        params={k: v for k, v in d.items() if k not in take},
    )


def _from_tractatus_rule(d: Any, where: str, origin: str) -> Rule:
    if not isinstance(d, Mapping):
        raise RuleError(f"{where}: expected an object")
    for key in ("rule_id", "content", "enforced_by"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise RuleError(f"{where}.{key}: missing")
    return _build(d, rule_id=d["rule_id"], text=d["content"], service=d["enforced_by"],
                  where=where, used={"rule_id", "content", "enforced_by"}, origin=origin)


def _from_instruction(d: Any, where: str, origin: str) -> Rule:
    if not isinstance(d, Mapping):
        raise RuleError(f"{where}: expected an object")
    for key in ("id", "text"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise RuleError(f"{where}.{key}: missing")
    return _build(d, rule_id=d["id"], text=d["text"], service="CrossReferenceValidator",
                  where=where, used={"id", "text"}, origin=origin)


def _from_toml_rule(d: Any, where: str, origin: str, default_service: str | None) -> Rule:
    if not isinstance(d, Mapping):
        raise RuleError(f"{where}: expected a table")
    for key in ("id", "text"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise RuleError(f"{where}.{key}: missing")
    service = d.get("service", default_service)
    if not isinstance(service, str):
        raise RuleError(f"{where}.service: missing")
    return _build(d, rule_id=d["id"], text=d["text"], service=service, where=where,
                  used={"id", "text", "service"}, origin=origin)


def parse_json_rules(data: Any, origin: str = "<json>") -> RuleSet:
    """Rules from parsed Tractatus JSON: a rule file, instructions, or one record."""
    if isinstance(data, Mapping) and isinstance(data.get("rules"), list):
        return RuleSet(_from_tractatus_rule(d, f"{origin}: rules[{i}]", origin)
                       for i, d in enumerate(data["rules"]))
    if isinstance(data, Mapping) and isinstance(data.get("instructions"), list):
        data = data["instructions"]
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list):
        raise RuleError(f"{origin}: expected a rule file, a list of instructions or one record")
    out: list[Rule] = []
    for i, d in enumerate(data):
        where = f"{origin}: [{i}]"
        if isinstance(d, Mapping) and "rule_id" in d:
            out.append(_from_tractatus_rule(d, where, origin))
        else:
            out.append(_from_instruction(d, where, origin))
    return RuleSet(out)


def parse_toml_rules(text: str, origin: str = "<toml>") -> RuleSet:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{origin}: not valid TOML: {exc}") from None
    schema = data.get("schema", "tractatus-watch.rules/1")
    if not str(schema).startswith("tractatus-watch.rules/"):
        raise RuleError(f"{origin}: unknown schema {schema!r}")
    out: list[Rule] = []
    for i, d in enumerate(data.get("rules", [])):
        out.append(_from_toml_rule(d, f"{origin}: rules[{i}]", origin, None))
    for i, d in enumerate(data.get("instructions", [])):
        out.append(_from_toml_rule(d, f"{origin}: instructions[{i}]", origin,
                                   "CrossReferenceValidator"))
    return RuleSet(out)


def load_rules(*paths: str | Path) -> RuleSet:
    """Load and merge rule files (`.json` Tractatus, `.toml` ours); later files win on ids."""
    merged = RuleSet()
    for p in paths:
        path = Path(p)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RuleError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if path.suffix.lower() == ".toml":
            merged = merged + parse_toml_rules(text, str(path))
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise RuleError(f"{path}: not valid JSON: {exc}") from None
            merged = merged + parse_json_rules(data, str(path))
    return merged


DEFAULT_RULES_PATH: Final = Path(__file__).resolve().parent.parent / "rules" / "default.toml"


def default_rules() -> RuleSet:
    """The rules shipped with the package: the demo's content rules."""
    return load_rules(DEFAULT_RULES_PATH)


__all__ = ["BOUNDARY_OF_SECTION", "DEFAULT_RULES_PATH", "KNOWN_DETECTORS", "Rule", "RuleError",
           "RuleSet", "default_rules", "load_rules", "parse_json_rules", "parse_toml_rules"]
