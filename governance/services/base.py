"""What every service shares: the action a governed agent proposes, the service protocol, and
the helpers that turn a raw Tractatus verdict into a `Check` record.

A service answers one question about one action: `check(action, context) -> Check`. It returns
the `Check` record of `events.py` directly (normalised verdict, raw verdict, rule id, boundary,
severity, reason, its own latency in microseconds), so nothing has to be translated twice.

Actions are prepared once per `Governor.check` (lower-cased text, word set, canonical digest) and
shared by every service: on a budget of well under a millisecond per check, re-deriving them in
five services would be the largest cost.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Final, Iterable, Mapping, Protocol, runtime_checkable

from ...records.events import Check
from ...records.verdicts import RAW_TO_VERDICT, normalise

Context = Mapping[str, Any]

_TOKEN = re.compile(r"[\w']+")
# Words that carry no meaning for overlap scores; kept short on purpose (an over-long list
# would hide real overlap such as "port" or "model").
STOPWORDS: Final = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was "
    "were will with you your we our they their i me my not no any all can could should would "
    "must may might do does did use using into than then so if but when what which who how "
    "please also just".split()
)

# Keys of an action other than these end up in `params`, so a dict from any agent still works.
_ACTION_KEYS: Final = ("kind", "text", "summary", "params", "sources", "domain", "pre_approved",
                       "destructive")


def tokens_of(text: str) -> frozenset[str]:
    """Lower-case word tokens ("won't" is one token, "risk-free" two)."""
    return frozenset(_TOKEN.findall(text.lower()))


def words_of(text: str) -> frozenset[str]:
    """Significant lower-case words of a text (stopwords dropped)."""
    return tokens_of(text) - STOPWORDS


class PhraseSet:
    """Whole-word phrases, found through the action's token set first.

    Python's `re` has no multi-pattern search: an alternation of 50 phrases costs tens of
    microseconds per 100 characters on this class of machine, a set intersection with the
    phrases' first tokens well under one. Only the phrases whose first token occurs are then
    confirmed by their own regex (word boundaries; spaces and hyphens interchangeable).
    """

    def __init__(self, phrases: Iterable[str]) -> None:
        self.index: dict[str, list[re.Pattern[str]]] = {}
        for phrase in sorted({p.lower() for p in phrases if p}, key=len, reverse=True):
            tokens = _TOKEN.findall(phrase)
            if not tokens:
                raise ValueError(f"phrase without a word: {phrase!r}")
            body = r"[\s\-]+".join(re.escape(part) for part in re.split(r"[\s\-]+", phrase))
            self.index.setdefault(tokens[0], []).append(
                re.compile(rf"(?<![\w-]){body}(?![\w-])"))
        self.first = frozenset(self.index)

    def __bool__(self) -> bool:
        return bool(self.index)

    def matches(self, action: ActionInput) -> list[re.Match[str]]:
        """Every match in the action's lower-cased content, in text order."""
        hit = action.tokens & self.first
        if not hit:
            return []
        out = [m for tok in hit for rx in self.index[tok] for m in rx.finditer(action.lower)]
        out.sort(key=lambda m: m.start())
        return out


@dataclass(slots=True)
class ActionInput:
    """What a governed agent proposes to do.

    `kind` says what sort of step it is (publish, configure, delete, instruction, ...); `text` is
    the content (an article, a command, an instruction), `summary` a short human line. `params`
    holds structured settings (port, host, database, path, url, model, headline, ...),
    `sources` the citations backing any claim. `pre_approved` marks actions a human already
    approved; `destructive` marks actions that cannot be undone.
    """

    kind: str
    text: str = ""
    summary: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    domain: str = ""
    pre_approved: bool = False
    destructive: bool = False
    # Derived once, read by every service.
    content: str = field(init=False, repr=False, compare=False)
    lower: str = field(init=False, repr=False, compare=False)
    tokens: frozenset[str] = field(init=False, repr=False, compare=False)
    _words: frozenset[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError("action.kind: expected a non-empty string")
        headline = self.params.get("headline") or self.params.get("title")
        parts = [p for p in (headline, self.summary, self.text) if isinstance(p, str) and p]
        self.content = "\n".join(parts)
        # Curly apostrophes would defeat every "won't" / "don't" pattern.
        self.lower = self.content.lower().replace("\u2019", "'")
        self.tokens = frozenset(_TOKEN.findall(self.lower))

    @property
    def headline(self) -> str:
        h = self.params.get("headline") or self.params.get("title")
        return h if isinstance(h, str) else ""

    @property
    def words(self) -> frozenset[str]:
        """Words of the content, the parameter names and the parameter values."""
        if self._words is None:
            extra = " ".join(f"{k} {v}" for k, v in self.params.items()
                             if isinstance(v, (str, int, float)) and not isinstance(v, bool))
            self._words = (self.tokens - STOPWORDS) | words_of(f"{self.kind} {extra}")
        return self._words

    def canonical(self) -> dict[str, Any]:
        """The action as plain JSON data; empty fields are left out so equal actions given as a
        dict or as a dataclass digest the same."""
        out: dict[str, Any] = {"kind": self.kind}
        for key in _ACTION_KEYS[1:]:
            value = getattr(self, key)
            if value:
                out[key] = value
        return out

    def digest(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, default=str)
        return "sha256:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @classmethod
    def coerce(cls, action: Any) -> ActionInput:
        """An `ActionInput` from itself, a mapping, or any dataclass with the same fields."""
        if isinstance(action, ActionInput):
            return action
        if is_dataclass(action) and not isinstance(action, type):
            action = {f.name: getattr(action, f.name) for f in fields(action)}
        if not isinstance(action, Mapping):
            raise TypeError(f"action: expected a mapping or dataclass, got {type(action).__name__}")
        params = dict(action.get("params") or {})
        for key, value in action.items():
            if key not in _ACTION_KEYS:
                params.setdefault(key, value)
        sources = action.get("sources") or []
        if isinstance(sources, str):
            sources = [sources]
        return cls(
            kind=str(action.get("kind") or ""),
            text=str(action.get("text") or ""),
            summary=str(action.get("summary") or ""),
            params=params,
            sources=list(sources),
            domain=str(action.get("domain") or ""),
            pre_approved=bool(action.get("pre_approved", False)),
            destructive=bool(action.get("destructive", False)),
        )


@runtime_checkable
class Service(Protocol):
    """A governance service: one `Check` per action."""

    name: str

    def check(self, action: ActionInput, context: Context) -> Check: ...


# A service may also list the rules it evaluates on every check, `rule_ids: tuple[str, ...]`
# (kept as the same tuple object while the set is unchanged): the Governor stamps each of its
# checks with that set's version (records/rulesets.py). A check that evaluated no rule sets
# `ruleset = NO_RULES` itself; a service without `rule_ids` leaves the set unknown.


def make_check(service: str, raw: str, start_ns: int, *, rule_id: str = "",
               boundary: str | None = None, severity: str | None = None, reason: str = "",
               extra: dict[str, Any] | None = None) -> Check:
    """A `Check` whose latency runs from `start_ns` (a `perf_counter_ns` reading) to now."""
    return Check(
        service=service, verdict=RAW_TO_VERDICT.get(raw) or normalise(raw), raw_verdict=raw,
        rule_id=rule_id,
        boundary=boundary, severity=severity, reason=reason,
        latency_us=(time.perf_counter_ns() - start_ns) // 1000,
        extra=extra if extra is not None else {},
    )


# A custom rule: `(action, context) -> verdict-ish or None`.
RuleFn = Callable[[ActionInput, Context], Any]


class CustomRule:
    """Wrap a plain callable as a service.

    The callable may return None (nothing to say: allow), a raw verdict string ("BLOCK",
    "REQUIRE_HUMAN_DECISION", "warn"...), a tuple `(raw, reason)` or `(raw, reason, rule_id)`,
    a mapping with `verdict`/`raw_verdict`, `reason`, `rule_id`, `severity`, `boundary`, or a
    ready `Check`. An exception stops the action (raw ESCALATE): a rule that cannot answer must
    not wave an action through, but its failure is not the agent's violation either.
    """

    def __init__(self, fn: RuleFn, name: str | None = None, rule_id: str | None = None) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "CustomRule"))
        # A callable may name its rule itself (`fn.rule_id = "X-001"`).
        self.rule_id: str = rule_id or str(getattr(fn, "rule_id", "") or self.name)
        self.rule_ids: tuple[str, ...] = (self.rule_id,)

    def check(self, action: ActionInput, context: Context) -> Check:
        start = time.perf_counter_ns()
        try:
            out = self.fn(action, context)
            return self._to_check(out, start)
        except Exception as exc:  # a broken rule must never crash the agent
            return make_check(self.name, "ESCALATE", start, rule_id=self.rule_id,
                              reason=f"rule error: {type(exc).__name__}: {exc}")

    def _to_check(self, out: Any, start: int) -> Check:
        if out is None:
            return make_check(self.name, "ALLOW", start, rule_id=self.rule_id)
        if isinstance(out, Check):
            out.latency_us = out.latency_us or (time.perf_counter_ns() - start) // 1000
            return out
        if isinstance(out, str):
            return make_check(self.name, out.strip().upper(), start, rule_id=self.rule_id)
        if isinstance(out, tuple) and out and isinstance(out[0], str):
            raw = out[0].strip().upper()
            reason = str(out[1]) if len(out) > 1 else ""
            rule_id = str(out[2]) if len(out) > 2 else self.rule_id
            return make_check(self.name, raw, start, rule_id=rule_id, reason=reason)
        if isinstance(out, Mapping):
            raw = str(out.get("raw_verdict") or out.get("verdict") or "ALLOW").strip().upper()
            rule_id = str(out.get("rule_id") or self.rule_id)
            return make_check(self.name, raw, start, rule_id=rule_id,
                              reason=str(out.get("reason") or ""), severity=out.get("severity"),
                              boundary=out.get("boundary"))
        raise TypeError(f"rule returned {type(out).__name__}, expected a verdict")


__all__ = ["ActionInput", "Context", "CustomRule", "PhraseSet", "RuleFn", "STOPWORDS", "Service",
           "make_check", "tokens_of", "words_of"]
