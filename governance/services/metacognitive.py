"""MetacognitiveVerifier: does the action's reasoning hold up?

Raw verdicts: PROCEED (allow), PROCEED_WITH_CAUTION (warn), REQUEST_CONFIRMATION and
REQUIRE_REVIEW (escalate), BLOCK (block).

Five scores in [0, 1], our deterministic reading of TAC-001's criteria:
- alignment: overlap between the action and `context["intent"]` (or `goal`); 0.9 without one;
- coherence: content present where the kind needs it, no self-contradiction markers;
- completeness: no placeholders (-0.4); a complex operation (more than 3 files or 5 steps,
  TAC-001) names a plan or tests (-0.5 without);
- safety: destructive actions (the `destructive` flag, a destructive kind, or commands such as
  "rm -rf", "DROP TABLE", "--force") score 0.3 unless mitigated by a backup, a dry run or an
  explicit confirmation in `params` (+0.4);
- alternatives: a complex operation should list `alternatives` (in params or context): 0.3
  without.

confidence = 0.30 alignment + 0.20 coherence + 0.20 completeness + 0.20 safety + 0.10
alternatives, then scaled down under pressure (`context["pressure_level"]`, or computed from the
context like the ContextPressureMonitor): ELEVATED x0.95, HIGH x0.9, CRITICAL x0.8, DANGEROUS x0.6.

confidence >= threshold (TAC-001's `confidence_threshold`, 0.85 also without it) PROCEED; >= 0.65
PROCEED_WITH_CAUTION; >= 0.5 REQUEST_CONFIRMATION; else REQUIRE_REVIEW. A destructive action
whose safety fails (< 0.5) is BLOCKed, and so is placeholder content (QUAL-001: "lorem ipsum",
"[placeholder]"); "TODO"/"FIXME" markers require review at least.
"""

from __future__ import annotations

import re
import time
from typing import Final, Iterable

from ...records.events import Check
from .base import ActionInput, Context, make_check, words_of
from .pressure import level_of, pressure_score
from .rules import Rule, RuleSet

NAME: Final = "MetacognitiveVerifier"
PRESSURE_FACTOR: Final = {"NORMAL": 1.0, "ELEVATED": 0.95, "HIGH": 0.9, "CRITICAL": 0.8,
                          "DANGEROUS": 0.6}
DESTRUCTIVE_KINDS: Final = frozenset({"delete", "drop", "destroy", "wipe", "truncate", "purge",
                                      "force_push", "reset", "rm", "uninstall", "overwrite"})
_RISKY_TOKENS: Final = frozenset({"rm", "drop", "truncate", "delete", "force", "f", "chmod", "mkfs",
                                  "dd", "verify"})
_RISKY: Final = re.compile(
    r"\brm\s+-[a-z]*r[a-z]*f|\brm\s+-[a-z]*f[a-z]*r|\bdrop\s+(?:table|database|schema)\b|"
    r"\btruncate\s+table\b|\bdelete\s+from\s+\w+\s*(?:;|$)|--force\b|\bpush\s+-f\b|"
    r"\bchmod\s+(?:-r\s+)?777\b|\bmkfs\b|\bdd\s+if=|--no-verify\b|verify\s*=\s*false")
_PLACEHOLDER_TOKENS: Final = frozenset({"lorem", "dolor", "placeholder", "insert"})
_HARD_PLACEHOLDER: Final = re.compile(
    r"lorem ipsum|dolor sit amet|\[placeholder\]|insert (?:text|content) here|placeholder text")
_SOFT_PLACEHOLDER: Final = re.compile(r"\b(?:TODO|FIXME|TBD|XXX)\b")
_CONTRADICTION_TOKENS: Final = frozenset({"second", "scratch", "ignore", "actually"})
_CONTRADICTION: Final = re.compile(
    r"\b(?:on second thought|scratch that|ignore (?:the )?(?:above|previous)|actually,? no)\b")
CONTENT_KINDS: Final = frozenset({"publish", "post", "article", "write", "draft", "reply",
                                  "message", "comment", "email"})


def _hard_placeholder(a: ActionInput) -> bool:
    return bool(a.tokens & _PLACEHOLDER_TOKENS) and _HARD_PLACEHOLDER.search(a.lower) is not None


def _soft_placeholder(a: ActionInput) -> bool:
    c = a.content
    return ("TODO" in c or "FIXME" in c or "TBD" in c or "XXX" in c) and \
        _SOFT_PLACEHOLDER.search(c) is not None


def _truthy(action: ActionInput, context: Context, key: str) -> bool:
    return bool(action.params.get(key) or context.get(key))


class MetacognitiveVerifier:
    name = NAME

    def __init__(self, rules: RuleSet | Iterable[Rule] | None = None, *,
                 threshold: float | None = None) -> None:
        mine = [r for r in (rules or ()) if r.service == NAME and r.active]
        verify = next((r for r in mine if "confidence_threshold" in r.params), None)
        quality = next((r for r in mine if r.rule_id == "QUAL-001"), None)
        self.verify_rule = verify.rule_id if verify else "TAC-001"
        self.quality_rule = quality.rule_id if quality else "QUAL-001"
        self.rule_ids: tuple[str, ...] = (self.verify_rule, self.quality_rule)
        if threshold is None:
            threshold = float(verify.params["confidence_threshold"]) if verify else 0.85
        self.threshold = threshold

    def scores(self, a: ActionInput, context: Context) -> dict[str, float]:
        intent = context.get("intent") or context.get("goal")
        if isinstance(intent, str) and intent:
            iw = words_of(intent)
            overlap = len(iw & a.words) / max(1, len(iw))
            alignment = 0.5 + 0.5 * min(1.0, 2 * overlap)
        else:
            alignment = 0.9
        coherence = 1.0
        if a.kind.lower() in CONTENT_KINDS and not a.content.strip():
            coherence -= 0.6
        if a.tokens & _CONTRADICTION_TOKENS and _CONTRADICTION.search(a.lower):
            coherence -= 0.3
        files = a.params.get("files", context.get("files", 0))
        steps = a.params.get("steps", context.get("steps", 0))
        complex_op = (isinstance(files, (int, float)) and files > 3) or (
            isinstance(steps, (int, float)) and steps > 5)
        completeness = 1.0
        if _soft_placeholder(a) or _hard_placeholder(a):
            completeness -= 0.4
        if complex_op and not (_truthy(a, context, "plan") or _truthy(a, context, "tests")):
            completeness -= 0.5
        safety = 1.0
        if self.destructive(a):
            safety = 0.3
            if any(_truthy(a, context, k) for k in ("backup", "dry_run", "confirmed")):
                safety += 0.4
        alternatives = 1.0
        if complex_op and not _truthy(a, context, "alternatives"):
            alternatives = 0.3
        return {"alignment": alignment, "coherence": max(0.0, coherence),
                "completeness": max(0.0, completeness), "safety": safety,
                "alternatives": alternatives}

    @staticmethod
    def destructive(a: ActionInput) -> bool:
        return (a.destructive or a.kind.lower() in DESTRUCTIVE_KINDS
                or bool(a.tokens & _RISKY_TOKENS and _RISKY.search(a.lower)))

    def check(self, action: ActionInput, context: Context) -> Check:
        start = time.perf_counter_ns()
        s = self.scores(action, context)
        level = context.get("pressure_level")
        if not isinstance(level, str) or level.upper() not in PRESSURE_FACTOR:
            level = level_of(pressure_score(context, action))
        level = level.upper()
        confidence = PRESSURE_FACTOR[level] * (
            0.30 * s["alignment"] + 0.20 * s["coherence"] + 0.20 * s["completeness"]
            + 0.20 * s["safety"] + 0.10 * s["alternatives"])
        rule_id = self.verify_rule
        if s["safety"] < 0.5:
            raw, reason = "BLOCK", f"destructive action failing safety ({s['safety']:.1f})"
        elif _hard_placeholder(action):
            raw, reason, rule_id = "BLOCK", "placeholder content", self.quality_rule
        elif confidence >= self.threshold:
            raw, reason = "PROCEED", f"confidence {confidence:.2f}"
        elif confidence >= 0.65:
            raw, reason = "PROCEED_WITH_CAUTION", f"confidence {confidence:.2f}"
        elif confidence >= 0.5:
            raw, reason = "REQUEST_CONFIRMATION", f"confidence {confidence:.2f}"
        else:
            raw, reason = "REQUIRE_REVIEW", f"confidence {confidence:.2f}"
        if raw in ("PROCEED", "PROCEED_WITH_CAUTION", "REQUEST_CONFIRMATION") and \
                _soft_placeholder(action):
            raw, reason, rule_id = "REQUIRE_REVIEW", "TODO/FIXME marker", self.quality_rule
        if level != "NORMAL":
            reason += f" under {level} pressure"
        severity = {"BLOCK": "HIGH", "REQUIRE_REVIEW": "MEDIUM", "REQUEST_CONFIRMATION": "MEDIUM",
                    "PROCEED_WITH_CAUTION": "LOW"}.get(raw)
        return make_check(NAME, raw, start, rule_id=rule_id, severity=severity, reason=reason,
                          extra={"confidence": round(confidence, 3)})


__all__ = ["MetacognitiveVerifier"]
