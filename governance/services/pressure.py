"""ContextPressureMonitor: how strained the agent's session is.

Raw verdicts are the levels NORMAL, ELEVATED, HIGH (warn), CRITICAL (escalate), DANGEROUS
(block): only DANGEROUS stops an action.

Pressure = 0.35 token usage + 0.25 conversation length + 0.15 task complexity + 0.15 error
frequency + 0.10 instruction density, each in [0, 1]. The context supplies the inputs, either
normalised (`token_usage`, `conversation_length`, `task_complexity`, `error_frequency`,
`instruction_density`) or as counts that we normalise (our choice of scales, all overridable
through `limits`):

- `tokens_used` / `token_budget` (default 200,000);
- `messages` / `message_limit` (default 100);
- task complexity from `files` (x/6) and `steps` (x/10) in the context or the action's params
  (TAC-001 calls more than 3 files or 5 steps complex, which lands at 0.5);
- `errors` (recent errors) / `error_limit` (default 5);
- `instructions` (active instruction count, or the list) / `instruction_limit` (default 20).

A precomputed `pressure` in the context is used as is. Level thresholds default to
NORMAL < 0.30 <= ELEVATED < 0.50 <= HIGH < 0.70 <= CRITICAL < 0.85 <= DANGEROUS; the Tractatus
documents disagree on them (OPS-001 uses percentage bands), so they are configurable and
`thresholds_from_rule` reads a rule's bands when wanted.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final, Iterable, Mapping

from ...records.events import Check
from .base import ActionInput, Context, make_check
from .rules import Rule, RuleSet

NAME: Final = "ContextPressureMonitor"
WEIGHTS: Final[dict[str, float]] = {
    "token_usage": 0.35, "conversation_length": 0.25, "task_complexity": 0.15,
    "error_frequency": 0.15, "instruction_density": 0.10,
}
DEFAULT_THRESHOLDS: Final[dict[str, float]] = {
    "ELEVATED": 0.30, "HIGH": 0.50, "CRITICAL": 0.70, "DANGEROUS": 0.85,
}
DEFAULT_LIMITS: Final[dict[str, float]] = {
    "token_budget": 200_000, "message_limit": 100, "files": 6, "steps": 10, "error_limit": 5,
    "instruction_limit": 20,
}
LEVELS: Final = ("NORMAL", "ELEVATED", "HIGH", "CRITICAL", "DANGEROUS")
_SEVERITY: Final = {"NORMAL": None, "ELEVATED": "LOW", "HIGH": "MEDIUM", "CRITICAL": "HIGH",
                    "DANGEROUS": "CRITICAL"}


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _clamp(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else x


# Any of these in the context (or files/steps in the action) means there is pressure to compute.
INPUT_KEYS: Final = frozenset({
    "token_usage", "conversation_length", "task_complexity", "error_frequency",
    "instruction_density", "tokens_used", "messages", "files", "steps", "errors", "instructions",
})


def components(context: Context, action: ActionInput | None = None,
               limits: Mapping[str, float] = DEFAULT_LIMITS) -> dict[str, float]:
    """The five normalised inputs of the pressure score."""
    def given(name: str) -> float | None:
        v = _num(context.get(name))
        return None if v is None else _clamp(v)

    def ratio(count_key: str, limit: float) -> float:
        v = context.get(count_key)
        if isinstance(v, (list, tuple)):
            v = len(v)
        n = _num(v)
        return 0.0 if n is None or limit <= 0 else _clamp(n / limit)

    tokens = given("token_usage")
    if tokens is None:
        budget = _num(context.get("token_budget")) or limits["token_budget"]
        tokens = ratio("tokens_used", budget)
    conversation = given("conversation_length")
    if conversation is None:
        conversation = ratio("messages",
                             _num(context.get("message_limit")) or limits["message_limit"])
    complexity = given("task_complexity")
    if complexity is None:
        params = action.params if action is not None else {}
        files = _num(context.get("files", params.get("files"))) or 0.0
        steps = _num(context.get("steps", params.get("steps"))) or 0.0
        complexity = _clamp(max(files / limits["files"], steps / limits["steps"]))
    errors = given("error_frequency")
    if errors is None:
        errors = ratio("errors", _num(context.get("error_limit")) or limits["error_limit"])
    density = given("instruction_density")
    if density is None:
        density = ratio("instructions", limits["instruction_limit"])
    return {"token_usage": tokens, "conversation_length": conversation,
            "task_complexity": complexity, "error_frequency": errors,
            "instruction_density": density}


def pressure_score(context: Context, action: ActionInput | None = None,
                   limits: Mapping[str, float] = DEFAULT_LIMITS) -> float:
    given = _num(context.get("pressure"))
    if given is not None:
        return _clamp(given)
    if not context.keys() & INPUT_KEYS and (
            action is None or not ("files" in action.params or "steps" in action.params)):
        return 0.0  # the common case, answered without building the components
    c = components(context, action, limits)
    return _clamp(sum(WEIGHTS[k] * v for k, v in c.items()))


def level_of(score: float, thresholds: Mapping[str, float] = DEFAULT_THRESHOLDS) -> str:
    level = "NORMAL"
    for name in LEVELS[1:]:
        if score >= thresholds[name]:
            level = name
    return level


_BAND: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*%?\s*$")


def thresholds_from_rule(rule: Rule) -> dict[str, float]:
    """Thresholds from a rule's bands such as OPS-001's {"ELEVATED": "41-60%", ...}."""
    bands = rule.params.get("thresholds")
    if not isinstance(bands, Mapping):
        raise ValueError(f"rule {rule.rule_id}: no thresholds")
    out: dict[str, float] = {}
    for name in LEVELS[1:]:
        m = _BAND.match(str(bands.get(name, "")))
        if m is None:
            raise ValueError(f"rule {rule.rule_id}: thresholds.{name}: expected 'lo-hi%'")
        out[name] = float(m.group(1)) / 100.0
    return validate_thresholds(out)


def validate_thresholds(thresholds: Mapping[str, float]) -> dict[str, float]:
    missing = [n for n in LEVELS[1:] if n not in thresholds]
    if missing:
        raise ValueError(f"pressure thresholds: missing {', '.join(missing)}")
    values = [float(thresholds[n]) for n in LEVELS[1:]]
    if any(not 0 < v <= 1 for v in values) or values != sorted(values) or len(set(values)) < 4:
        raise ValueError(f"pressure thresholds must rise strictly within (0, 1]: {values}")
    return {n: float(thresholds[n]) for n in LEVELS[1:]}


class ContextPressureMonitor:
    name = NAME

    def __init__(self, rules: RuleSet | Iterable[Rule] | None = None, *,
                 thresholds: Mapping[str, float] | None = None,
                 limits: Mapping[str, float] | None = None,
                 use_rule_thresholds: bool = False) -> None:
        mine = [r for r in (rules or ()) if r.service == NAME and r.active]
        self.rule_id = mine[0].rule_id if mine else ""
        self.rule_ids: tuple[str, ...] = (self.rule_id,) if self.rule_id else ()
        if thresholds is not None:
            self.thresholds = validate_thresholds(thresholds)
        elif use_rule_thresholds and mine:
            self.thresholds = thresholds_from_rule(mine[0])
        else:
            self.thresholds = dict(DEFAULT_THRESHOLDS)
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}

    def score(self, context: Context, action: ActionInput | None = None) -> float:
        return pressure_score(context, action, self.limits)

    def level(self, context: Context, action: ActionInput | None = None) -> str:
        return level_of(self.score(context, action), self.thresholds)

    def check(self, action: ActionInput, context: Context) -> Check:
        start = time.perf_counter_ns()
        score = pressure_score(context, action, self.limits)
        level = level_of(score, self.thresholds)
        return make_check(NAME, level, start, rule_id=self.rule_id, severity=_SEVERITY[level],
                          reason=f"pressure {score:.2f} ({level})",
                          extra={"pressure": round(score, 4)})


__all__ = ["ContextPressureMonitor", "DEFAULT_THRESHOLDS", "LEVELS", "WEIGHTS", "components",
           "level_of", "pressure_score", "thresholds_from_rule"]
