"""InstructionPersistenceClassifier: quadrant, persistence and explicitness of an instruction.

A helper, never a gate: its check is always ALLOW. When the action carries an instruction
(`kind` "instruction" / "user_instruction", or `context["instruction"]`), it classifies it and,
when given a store (a CrossReferenceValidator), hands it over so later actions are
cross-referenced against it. The classification travels in the check's `classification` field.

Heuristics (ours; the original uses similar keyword lists):
- quadrant: STRATEGIC (values, ethics, mission, privacy, "never automate"), SYSTEM (ports,
  databases, hosts, environment, infrastructure), OPERATIONAL (deployment, architecture,
  configuration, process), TACTICAL (fix, implement, refactor a specific thing), STOCHASTIC
  (everything else: one-off, experimental).
- persistence: HIGH for STRATEGIC and SYSTEM and for "always/never/must/all"; LOW for "for now",
  "this time", "temporarily" and for TACTICAL; MEDIUM otherwise.
- explicitness: 0.5, +0.3 for concrete values (numbers, key=value, quoted text), +0.2 for an
  imperative or modal ("use", "must", "never", "always"), -0.3 for hedges ("maybe", "perhaps").
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Final, Iterable, Protocol

from ...records.events import Check
from .base import ActionInput, Context, make_check
from .rules import Rule, RuleSet

NAME: Final = "InstructionPersistenceClassifier"
INSTRUCTION_KINDS: Final = frozenset({"instruction", "user_instruction"})

_STRATEGIC: Final = re.compile(
    r"\b(?:values?|ethic\w*|moral\w*|mission|purpose|privacy|sovereignty|indigenous|"
    r"cultural|strategy|strategic|never automate|human approval)\b")
_SYSTEM: Final = re.compile(
    r"\b(?:port|ports|database|db|mongodb|mongo|postgres\w*|mysql|redis|sqlite|duckdb|host|"
    r"hostname|server|environment|env|infrastructure|docker|kubernetes|k8s|gpu|disk|memory)\b")
_OPERATIONAL: Final = re.compile(
    r"\b(?:deploy\w*|architecture|config\w*|session|workflow|process|pipeline|release|ci|"
    r"review|checkpoint|handoff|monitor\w*)\b")
_TACTICAL: Final = re.compile(
    r"\b(?:fix|bug|implement|refactor|rename|this function|this file|add a test|feature)\b")
_PERMANENT: Final = re.compile(r"\b(?:always|never|must|all|every|permanent\w*|from now on)\b")
_TEMPORARY: Final = re.compile(r"\b(?:for now|this time|temporar\w*|just once|today|for this)\b")
_CONCRETE: Final = re.compile(r"\d|\w\s*[=:]\s*\S|[\"'`][^\"'`]+[\"'`]")
_IMPERATIVE: Final = re.compile(r"^\s*(?:use|set|run|keep|never|always|do not|don't|must)\b"
                                r"|\b(?:must|shall|never|always)\b")
_HEDGE: Final = re.compile(r"\b(?:maybe|perhaps|might|could|consider|possibly|if you like)\b")


@dataclass(frozen=True, slots=True)
class Classification:
    quadrant: str
    persistence: str
    explicitness: float
    temporal_scope: str


def classify(text: str) -> Classification:
    lower = text.lower()
    if _STRATEGIC.search(lower):
        quadrant = "STRATEGIC"
    elif _SYSTEM.search(lower):
        quadrant = "SYSTEM"
    elif _OPERATIONAL.search(lower):
        quadrant = "OPERATIONAL"
    elif _TACTICAL.search(lower):
        quadrant = "TACTICAL"
    else:
        quadrant = "STOCHASTIC"
    if _TEMPORARY.search(lower):
        persistence = "LOW"
    elif quadrant in ("STRATEGIC", "SYSTEM") or _PERMANENT.search(lower):
        persistence = "HIGH"
    elif quadrant == "TACTICAL":
        persistence = "LOW"
    elif quadrant == "STOCHASTIC":
        persistence = "VARIABLE"
    else:
        persistence = "MEDIUM"
    explicitness = 0.5
    if _CONCRETE.search(text):
        explicitness += 0.3
    if _IMPERATIVE.search(lower):
        explicitness += 0.2
    if _HEDGE.search(lower):
        explicitness -= 0.3
    scope = {"HIGH": "PERMANENT", "MEDIUM": "SESSION"}.get(persistence, "TEMPORARY")
    return Classification(quadrant, persistence, round(min(1.0, max(0.0, explicitness)), 2), scope)


class InstructionStore(Protocol):
    def add_instruction(self, text: str, *, persistence: str | None = ...,
                        explicitness: float | None = ..., quadrant: str | None = ...) -> Any: ...


class InstructionPersistenceClassifier:
    name = NAME

    def __init__(self, rules: RuleSet | Iterable[Rule] | None = None, *,
                 store: InstructionStore | None = None) -> None:
        mine = [r for r in (rules or ()) if r.service == NAME]
        self.rule_id = mine[0].rule_id if mine else ""
        self.rule_ids: tuple[str, ...] = (self.rule_id,) if self.rule_id else ()
        self.store = store

    def check(self, action: ActionInput, context: Context) -> Check:
        start = time.perf_counter_ns()
        text = context.get("instruction")
        if not isinstance(text, str) or not text:
            text = action.text or action.summary if action.kind.lower() in INSTRUCTION_KINDS else ""
        if not text:
            return make_check(NAME, "ALLOW", start, rule_id=self.rule_id,
                              reason="no instruction to classify")
        c = classify(text)
        if self.store is not None:
            self.store.add_instruction(text, persistence=c.persistence,
                                       explicitness=c.explicitness, quadrant=c.quadrant)
        return make_check(
            NAME, "ALLOW", start, rule_id=self.rule_id,
            reason=f"{c.quadrant} quadrant, {c.persistence} persistence, "
                   f"explicitness {c.explicitness:.2f}",
            extra={"classification": {"quadrant": c.quadrant, "persistence": c.persistence,
                                      "explicitness": c.explicitness,
                                      "temporal_scope": c.temporal_scope}},
        )


__all__ = ["Classification", "InstructionPersistenceClassifier", "classify"]
