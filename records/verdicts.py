"""The verdict vocabulary: the one table that maps every raw Tractatus verdict to ours."""

from __future__ import annotations

from typing import Final, Literal

Verdict = Literal["allow", "warn", "escalate", "block"]
VERDICTS: Final[tuple[Verdict, ...]] = ("allow", "warn", "escalate", "block")
SEVERITY_ORDER: Final[dict[str, int]] = {v: i for i, v in enumerate(VERDICTS)}

# Raw verdicts from the Tractatus services, its audit logs and the generic audit pattern.
# Several services share spellings (PROCEED, ESCALATE); they all normalise the same way, which is
# why a single table suffices.
RAW_TO_VERDICT: Final[dict[str, Verdict]] = {
    # generic audit pattern / our own spelling
    "ALLOW": "allow",
    "ALLOWED": "allow",
    "WARN": "warn",
    "BLOCK": "block",
    "BLOCKED": "block",
    # BoundaryEnforcer
    "PROCEED": "allow",
    "PROCEED_WITH_NOTIFICATION": "warn",
    "REQUEST_APPROVAL": "escalate",
    "REQUIRE_HUMAN_DECISION": "block",
    # CrossReferenceValidator
    "APPROVED": "allow",
    "WARNING": "warn",
    "ESCALATE": "escalate",
    "REJECTED": "block",
    # ContextPressureMonitor: only DANGEROUS stops an action
    "NORMAL": "allow",
    "ELEVATED": "warn",
    "HIGH": "warn",
    "CRITICAL": "escalate",
    "DANGEROUS": "block",
    # MetacognitiveVerifier
    "PROCEED_WITH_CAUTION": "warn",
    "REQUEST_CONFIRMATION": "escalate",
    "REQUIRE_REVIEW": "escalate",
}


class UnknownVerdict(ValueError):
    pass


def normalise(raw: str) -> Verdict:
    """Map a raw verdict (any case, surrounding spaces ignored) to allow|warn|escalate|block."""
    key = raw.strip().upper()
    try:
        return RAW_TO_VERDICT[key]
    except KeyError:
        raise UnknownVerdict(f"unknown verdict {raw!r}") from None


def strongest(verdicts: list[Verdict] | tuple[Verdict, ...]) -> Verdict:
    """The most restrictive verdict of a list (allow for an empty list)."""
    return max(verdicts, key=SEVERITY_ORDER.__getitem__, default="allow")
