"""Tractatus-style governance services.

Each service answers `check(action, context) -> Check` for one proposed action; the Governor
(`governance/governor.py`) runs them and turns their checks into a `Decision`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .base import ActionInput, Context, CustomRule, RuleFn, Service, make_check
from .boundary import BoundaryEnforcer
from .classifier import Classification, InstructionPersistenceClassifier, classify
from .cross_reference import CrossReferenceValidator, Instruction
from .metacognitive import MetacognitiveVerifier
from .pressure import ContextPressureMonitor
from .rules import Rule, RuleError, RuleSet, default_rules, load_rules


def default_services(rules: RuleSet | None = None, *,
                     instructions: Iterable[str | Mapping[str, Any]] = ()) -> list[Service]:
    """All five services over `rules` plus the packaged content rules (ours lose to `rules` on
    equal ids). The classifier feeds the validator the instructions it sees."""
    merged = default_rules() + (rules or RuleSet())
    validator = CrossReferenceValidator(merged, instructions=instructions)
    return [
        BoundaryEnforcer(merged),
        validator,
        ContextPressureMonitor(merged),
        MetacognitiveVerifier(merged),
        InstructionPersistenceClassifier(merged, store=validator),
    ]


__all__ = [
    "ActionInput", "BoundaryEnforcer", "Classification", "Context", "ContextPressureMonitor",
    "CrossReferenceValidator", "CustomRule", "Instruction", "InstructionPersistenceClassifier",
    "MetacognitiveVerifier", "Rule", "RuleError", "RuleFn", "RuleSet", "Service", "classify",
    "default_rules", "default_services", "load_rules", "make_check",
]
