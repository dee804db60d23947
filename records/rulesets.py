"""Rule sets: which rules a service evaluated on a check, so each rule's rate has a denominator.

A check names a rule only when that rule decided its verdict, so the checks alone cannot say how
often a rule was evaluated. Each check therefore carries the version of the rule set its service
evaluated (`Check.ruleset`): a stable digest of the sorted rule ids. The ids themselves travel
once per rollout (and whenever a new set appears) in the decision's optional `rulesets` list;
the collector stores each (run, service, version) once, in the `rulesets` table.

`NO_RULES` is the version of the empty set: a check that evaluated no rule (a pre-approved action,
a service that failed) says so, which is known, unlike a check without a version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final, Iterable, Mapping

VERSION_PREFIX: Final = "rs1:"


def ruleset_version(rule_ids: Iterable[str]) -> str:
    """The version of a set of rule ids: the same ids (in any order, repeated or not) give the
    same version, in every process."""
    ids = sorted({r for r in rule_ids if r})
    blob = json.dumps(ids, separators=(",", ":"), ensure_ascii=False)
    return VERSION_PREFIX + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


NO_RULES: Final = ruleset_version(())


class RuleSetError(ValueError):
    """An announced rule set that cannot be stored; `field` names where it went wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RuleSetInfo:
    """One service's rule set: its version and the rule ids in it (sorted, unique)."""

    service: str
    version: str
    rules: tuple[str, ...]

    @classmethod
    def of(cls, service: str, rule_ids: Iterable[str]) -> RuleSetInfo:
        ids = tuple(sorted({r for r in rule_ids if r}))
        return cls(service, ruleset_version(ids), ids)

    @classmethod
    def from_payload(cls, d: Any, path: str = "rulesets[0].") -> RuleSetInfo:
        if not isinstance(d, Mapping):
            raise RuleSetError(path.rstrip("."), "expected an object")
        service, version, rules = d.get("service"), d.get("version"), d.get("rules")
        if not isinstance(service, str) or not service:
            raise RuleSetError(path + "service", "expected a non-empty string")
        if not isinstance(version, str) or not version:
            raise RuleSetError(path + "version", "expected a non-empty string")
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise RuleSetError(path + "rules", "expected a list of rule ids")
        info = cls.of(service, rules)
        if info.version != version:
            raise RuleSetError(path + "version",
                               f"{version!r} is not the version of its rules ({info.version})")
        return info

    def to_payload(self) -> dict[str, Any]:
        return {"service": self.service, "version": self.version, "rules": list(self.rules)}


__all__ = ["NO_RULES", "RuleSetError", "RuleSetInfo", "VERSION_PREFIX", "ruleset_version"]
