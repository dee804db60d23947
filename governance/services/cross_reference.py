"""CrossReferenceValidator: an action's parameters against stored instructions.

Raw verdicts: APPROVED (allow), WARNING (warn), ESCALATE (escalate), REJECTED (block).

Stored instructions come from the rules of this service (Tractatus rules enforced by it,
`inst_NNN` instructions, TOML `[[instructions]]`), from the `instructions` list given to the
constructor, from `add_instruction` (the classifier feeds it), and from
`context["instructions"]` for one check. Parameters (port, host, database, url, path, model,
`key=value`) are read from the instruction's text; the action's come from `params` and, where
absent there, from its text.

Relevance (ours, the original weighs the same four things): overlap is the evidence the
instruction and the action talk about the same thing, `min(1, (shared words + 2 x shared
parameter names) / 4)`; score = 0.72 overlap + 0.10 recency + 0.10 persistence + 0.08
explicitness. The weights outside overlap add up to 0.28, so an instruction with nothing in
common with the action is never relevant at the 0.3 threshold, however HIGH and recent it is.
Recency halves every hour after the instruction's timestamp (0 without one).

When several relevant instructions set the same parameter, HIGH beats lower persistence and the
most recent wins among equals, so "use MongoDB port 27027" given in the session overrides an
older rule that says 27017. A database engine named in an instruction scopes it: an
instruction about MongoDB's port does not apply to a Redis action.

Conflicts: the same parameter with a different value, or a prohibition ("never X", "don't use
X", "avoid X", "do not X") whose object appears in the action. Severity CRITICAL for a HIGH
instruction (or a recent and explicit one), WARNING for MEDIUM, MINOR for LOW/VARIABLE. Any
CRITICAL rejects; two or more WARNINGs escalate (several medium conflicts need a human); one
warns; MINOR conflicts are noted in the reason only.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Final, Iterable, Mapping

from ...records.events import Check
from .base import ActionInput, Context, make_check, tokens_of, words_of
from .classifier import classify
from .rules import Rule, RuleSet

NAME: Final = "CrossReferenceValidator"
RELEVANCE_THRESHOLD: Final = 0.3
_PERSISTENCE_WEIGHT: Final = {"HIGH": 1.0, "MEDIUM": 0.6, "LOW": 0.3, "VARIABLE": 0.5}
_SEVERITY_RANK: Final = {"MINOR": 0, "WARNING": 1, "CRITICAL": 2}

_ENGINE_ALIAS: Final = {"mongo": "mongodb", "postgresql": "postgres"}
# (parameter, tokens of which one must occur, a character that must occur, pattern): the gates
# keep the regular expressions off texts that cannot match (see base.PhraseSet for why).
_PARAM_PATTERNS: Final[tuple[tuple[str, frozenset[str], str, re.Pattern[str]], ...]] = (
    ("port", frozenset({"port"}), "",
     re.compile(r"\bport\s*(?:number\s*)?(?:[:=#]\s*|is\s+|of\s+|to\s+)?(\d{2,5})\b")),
    ("port", frozenset(), ":",
     re.compile(r"\b(?:localhost|\d+\.\d+\.\d+\.\d+|[\w-]+(?:\.[\w-]+)+):(\d{2,5})\b")),
    ("host", frozenset({"host", "hostname"}), "",
     re.compile(r"\bhost(?:name)?\s*(?:[:=]\s*|\s+(?:is|to|at)\s+|\s+)(localhost|[\w-]+(?:\.[\w-]+)+)")),
    ("database", frozenset({"database", "db"}), "",
     re.compile(r"\b(?:database|db)\s*(?:name\s*)?(?:[:=]\s*|\s+(?:is|named|called)\s+)([\w][\w-]*)")),
    ("url", frozenset(), "http",
     re.compile(r"\b(?:url|endpoint|base[_ ]url)\s*(?:[:=]\s*|\s+(?:is|to|at)\s+|\s+)(https?://[^\s,;]+)")),
    ("path", frozenset({"path", "dir", "directory", "folder"}), "",
     re.compile(r"\b(?:path|dir|directory|folder)\s*(?:[:=]\s*|\s+(?:is|to|at|in)\s+|\s+)([~/][\w.\-/]*)")),
    ("model", frozenset({"model"}), "",
     re.compile(r"\bmodel\s*(?:[:=]\s*|\s+(?:is|to)\s+|\s+)([\w][\w.\-/:]*\d[\w.\-/:]*)")),
    ("model", frozenset({"use"}), "",
     re.compile(r"\buse\s+((?:gpt|claude|qwen|llama|mistral|gemini)[\w.\-/:]*)")),
)
_ENGINES: Final = frozenset({"mongodb", "mongo", "postgresql", "postgres", "mysql", "mariadb",
                             "sqlite", "redis", "duckdb", "cassandra", "elasticsearch", "dynamodb"})
_ASSIGNMENT: Final = re.compile(r"\b([a-z_][a-z0-9_]*)\s*=\s*([^\s,;]+)")
_PARAM_ALIAS: Final = {"db": "database", "hostname": "host", "model_name": "model",
                       "base_url": "url", "dir": "path", "directory": "path", "engine": "engine"}
_PROHIBITION: Final = re.compile(
    r"\b(?:never|don't|dont|do not|must not|mustn't|avoid|no longer)\s+"
    r"(?:use|using|run|running|call|calling|touch|deploy|deploying|set|setting|write|writing|"
    r"edit|editing|delete|deleting|connect to|switch to|change|changing)?\s*"
    r"(?:the\s+|any\s+|a\s+|an\s+)?([\w.\-/:]+(?:\s+[\w.\-/:]+)?)")


def _norm_value(value: Any) -> str:
    return str(value).strip().lower().rstrip("/.,;)")


def extract_params(text: str, tokens: frozenset[str] | None = None) -> dict[str, set[str]]:
    """Parameters named in a text: `{"port": {"27017"}, "engine": {"mongodb"}, ...}`."""
    lower = text.lower()
    if tokens is None:
        tokens = tokens_of(lower)
    out: dict[str, set[str]] = {}
    for key, gate, char, rx in _PARAM_PATTERNS:
        if (gate and not tokens & gate) or (char and char not in lower):
            continue
        for m in rx.finditer(lower):
            out.setdefault(key, set()).add(_norm_value(m.group(1)))
    if "=" in lower:
        for m in _ASSIGNMENT.finditer(lower):
            key = _PARAM_ALIAS.get(m.group(1), m.group(1))
            out.setdefault(key, set()).add(_norm_value(m.group(2)))
    engines = {_ENGINE_ALIAS.get(e, e) for e in tokens & _ENGINES}
    if engines:
        out["engine"] = engines
    return out


@dataclass(slots=True)
class Instruction:
    instruction_id: str
    text: str
    persistence: str = "MEDIUM"
    explicitness: float = 1.0
    timestamp: float | None = None
    quadrant: str = ""
    order: int = 0
    words: frozenset[str] = field(default_factory=frozenset)
    params: dict[str, frozenset[str]] = field(default_factory=dict)
    prohibitions: tuple[tuple[str, re.Pattern[str]], ...] = ()
    static_relevance: float = 0.0  # the persistence and explicitness terms, fixed at build

    @classmethod
    def build(cls, instruction_id: str, text: str, *, persistence: str | None = None,
              explicitness: float | None = None, timestamp: float | None = None,
              quadrant: str | None = None, order: int = 0) -> Instruction:
        known = persistence is not None and explicitness is not None and quadrant is not None
        c = None if known else classify(text)
        extracted = extract_params(text)
        prohibitions: list[tuple[str, re.Pattern[str]]] = []
        for m in _PROHIBITION.finditer(text.lower()):
            obj = " ".join(w for w in m.group(1).split() if w not in ("other", "for", "in", "on"))
            if len(obj) >= 3:
                body = re.escape(obj).replace(r"\ ", r"\s+")
                prohibitions.append((obj, re.compile(rf"(?<![\w-]){body}(?![\w-])")))
                # "never use MySQL" forbids an engine, it does not choose one
                engines = extracted.get("engine", set())
                engines -= {e for e in engines if e in obj.split()}
                if not engines:
                    extracted.pop("engine", None)
        params = {k: frozenset(v) for k, v in extracted.items()}
        return cls(
            instruction_id=instruction_id, text=text,
            persistence=(persistence or (c.persistence if c else "MEDIUM")).upper(),
            explicitness=explicitness if explicitness is not None
            else (c.explicitness if c else 1.0),
            timestamp=timestamp, quadrant=quadrant or (c.quadrant if c else ""), order=order,
            words=words_of(text) | frozenset(params), params=params,
            prohibitions=tuple(prohibitions),
        )._with_static()

    def _with_static(self) -> Instruction:
        self.static_relevance = (0.10 * _PERSISTENCE_WEIGHT.get(self.persistence, 0.5)
                                 + 0.08 * self.explicitness)
        return self

    def recency(self, now: float) -> float:
        if self.timestamp is None:
            return 0.0
        return math.pow(0.5, max(0.0, now - self.timestamp) / 3600.0)

    def precedence(self) -> tuple[int, float, int]:
        return (self.persistence == "HIGH", self.timestamp if self.timestamp is not None
                else -math.inf, self.order)


@dataclass(slots=True)
class Conflict:
    instruction: Instruction
    severity: str
    what: str
    param: str = ""
    expected: str = ""
    actual: str = ""


def _action_params(a: ActionInput) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in a.params.items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            out[_PARAM_ALIAS.get(key.lower(), key.lower())] = _norm_value(value)
    db = out.get("database")
    if db is not None and "engine" not in out and db in _ENGINES:
        out["engine"] = _ENGINE_ALIAS.get(db, db)
    if a.content:
        for key, values in extract_params(a.lower, a.tokens).items():
            if key not in out and len(values) == 1:
                out[key] = next(iter(values))
    return out


class CrossReferenceValidator:
    name = NAME

    def __init__(self, rules: RuleSet | Iterable[Rule] | None = None, *,
                 instructions: Iterable[str | Mapping[str, Any] | Instruction] = (),
                 threshold: float = RELEVANCE_THRESHOLD) -> None:
        self.threshold = threshold
        mine = [r for r in (rules or ()) if r.service == NAME and r.active]
        built: list[Instruction] = []
        for r in mine:
            built.append(Instruction.build(
                r.rule_id, r.text, persistence=r.persistence, explicitness=r.explicitness,
                timestamp=r.timestamp, quadrant=r.quadrant, order=len(built)))
        # Without a rule of its own, conflicts name the 27027 rule if it was loaded.
        self.governing_rule = mine[0].rule_id if mine else ""
        self._instructions: tuple[Instruction, ...] = tuple(built)
        self._rule_ids: tuple[str, ...] | None = None
        for item in instructions:
            self._append(self._coerce(item, timestamp=None))
        self._context_cache: dict[str, Instruction] = {}

    @property
    def instructions(self) -> tuple[Instruction, ...]:
        return self._instructions

    def _coerce(self, item: str | Mapping[str, Any] | Instruction, *,
                timestamp: float | None) -> Instruction:
        order = len(self._instructions)
        if isinstance(item, Instruction):
            return item
        if isinstance(item, str):
            return Instruction.build(f"instruction-{order + 1}", item, timestamp=timestamp,
                                     order=order)
        text = str(item.get("text") or "")
        if not text:
            raise ValueError("instruction: missing text")
        ts = item.get("timestamp", timestamp)
        return Instruction.build(
            str(item.get("id") or f"instruction-{order + 1}"), text,
            persistence=item.get("persistence"), explicitness=item.get("explicitness"),
            timestamp=float(ts) if isinstance(ts, (int, float)) else None,
            quadrant=item.get("quadrant"), order=order)

    def _append(self, instruction: Instruction) -> None:
        # Copy-on-write: a check running on another thread keeps a consistent tuple.
        self._instructions = (*self._instructions, instruction)
        self._rule_ids = None

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """The rule and the stored instructions every check is compared with (instructions
        given in a call's context are not in it: they name no stored rule)."""
        ids = self._rule_ids
        if ids is None:
            ids = self._rule_ids = tuple(dict.fromkeys(
                ([self.governing_rule] if self.governing_rule else [])
                + [i.instruction_id for i in self._instructions]))
        return ids

    def add_instruction(self, text: str, *, persistence: str | None = None,
                        explicitness: float | None = None, quadrant: str | None = None,
                        instruction_id: str | None = None,
                        timestamp: float | None = None) -> Instruction:
        """Store an instruction given now (it is recent, so it outranks older equals)."""
        order = len(self._instructions)
        inst = Instruction.build(instruction_id or f"instruction-{order + 1}", text,
                                 persistence=persistence, explicitness=explicitness,
                                 timestamp=time.time() if timestamp is None else timestamp,
                                 quadrant=quadrant, order=order)
        self._append(inst)
        return inst

    def _context_instructions(self, items: Any) -> list[Instruction]:
        out: list[Instruction] = []
        for i, item in enumerate(items or ()):
            key = item if isinstance(item, str) else repr(item)
            inst = self._context_cache.get(key)
            if inst is None:
                inst = self._coerce(item, timestamp=None)
                inst.order = len(self._instructions) + i
                if len(self._context_cache) < 4096:
                    self._context_cache[key] = inst
            out.append(inst)
        return out

    def relevance(self, inst: Instruction, a: ActionInput, params: Mapping[str, str],
                  now: float) -> float:
        shared = len(inst.words & a.words) + 2 * sum(1 for k in inst.params if k in params)
        overlap = min(1.0, shared / 4.0)
        recency = 0.0 if inst.timestamp is None else 0.10 * inst.recency(now)
        return 0.72 * overlap + recency + inst.static_relevance

    def _severity(self, inst: Instruction, now: float) -> str:
        if inst.persistence == "HIGH" or (inst.recency(now) >= 0.5 and inst.explicitness >= 0.8):
            return "CRITICAL"
        return "WARNING" if inst.persistence == "MEDIUM" else "MINOR"

    def check(self, action: ActionInput, context: Context) -> Check:
        start = time.perf_counter_ns()
        now = float(context.get("now") or time.time())
        instructions: Iterable[Instruction] = self._instructions
        if context.get("instructions"):
            instructions = [*self._instructions,
                            *self._context_instructions(context["instructions"])]
        params = _action_params(action)
        haystack = action.lower
        if action.params:
            haystack += "\n" + " ".join(f"{k} {v}" for k, v in params.items())
        engine = params.get("engine")
        relevant: list[Instruction] = []
        for inst in instructions:
            inst_engines = inst.params.get("engine")
            if engine and inst_engines and engine not in inst_engines and len(inst.params) > 1:
                continue  # about another database engine
            if self.relevance(inst, action, params, now) >= self.threshold:
                relevant.append(inst)
        conflicts: list[Conflict] = []
        authority: dict[str, Instruction] = {}
        for inst in relevant:
            for key in inst.params:
                if key == "engine" and len(inst.params) > 1:
                    continue  # the engine scopes the other parameters, it is not a setting here
                if key in params:
                    current = authority.get(key)
                    if current is None or inst.precedence() > current.precedence():
                        authority[key] = inst
            for obj, rx in inst.prohibitions:
                if rx.search(haystack):
                    sev = "CRITICAL" if inst.persistence == "HIGH" else "WARNING"
                    conflicts.append(Conflict(inst, sev, f"prohibited: '{obj}'"))
        for key, inst in authority.items():
            expected = inst.params[key]
            actual = params[key]
            if actual not in expected:
                want = "/".join(sorted(expected))
                conflicts.append(Conflict(inst, self._severity(inst, now),
                                          f"{key} {actual} but instruction says {want}",
                                          key, want, actual))
        return self._verdict(conflicts, len(relevant), start)

    def _verdict(self, conflicts: list[Conflict], n_relevant: int, start: int) -> Check:
        if not conflicts:
            return make_check(NAME, "APPROVED", start, rule_id=self.governing_rule,
                              reason=f"no conflict with {n_relevant} relevant instruction(s)")
        conflicts.sort(key=lambda c: -_SEVERITY_RANK[c.severity])
        top = conflicts[0]
        n_warn = sum(1 for c in conflicts if c.severity == "WARNING")
        if top.severity == "CRITICAL":
            raw = "REJECTED"
        elif n_warn >= 2:
            raw = "ESCALATE"
        elif n_warn == 1:
            raw = "WARNING"
        else:
            raw = "APPROVED"
        reason = f"{top.instruction.instruction_id} ({top.instruction.persistence}): {top.what}"
        if len(conflicts) > 1:
            reason += f"; +{len(conflicts) - 1} more"
        return make_check(
            NAME, raw, start, rule_id=top.instruction.instruction_id,
            severity=top.severity, reason=reason,
            extra={"conflicts": [{"instruction_id": c.instruction.instruction_id,
                                  "severity": c.severity, "param": c.param,
                                  "expected": c.expected, "actual": c.actual}
                                 for c in conflicts[:5]]},
        )


__all__ = ["CrossReferenceValidator", "Instruction", "RELEVANCE_THRESHOLD", "extract_params"]
