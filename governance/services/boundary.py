"""BoundaryEnforcer: values boundaries (Tractatus 12.1-12.6) and content rules.

Raw verdicts: PROCEED (allow), PROCEED_WITH_NOTIFICATION (warn), REQUEST_APPROVAL (escalate),
REQUIRE_HUMAN_DECISION (block). Pre-approved actions and actions confined to technical or
verification domains pass. Any error inside the service fails safe: REQUIRE_HUMAN_DECISION.

Values boundaries. The original matches keywords and one hit is enough, so "boost team morale"
(substring "moral") or "this refactor has no privacy impact" cross the values boundary and stop
the agent. Here a keyword counts only when:

1. it is a whole word or phrase (word boundaries, so "morale" is not "moral");
2. it is not negated within its clause ("no privacy impact", "does not affect user data");

and it stops the action only with a second, independent signal: either the action is a
decision (its kind names a decision, policy, strategy, consent...; or, for actions that are
not content, a decision verb such as "change", "override", "share" stands shortly before the
keyword in the same clause), or a second distinct keyword is present. One bare keyword is
reported (PROCEED_WITH_NOTIFICATION) but does not stop the action. Content (articles, posts)
is judged by two keywords only: writing *about* privacy is not deciding it.

Content rules are detectors named by rules (`detector = "..."` in TOML, or known Tractatus ids):

- `unsourced_statistic` (inst_016): a percentage, money amount or "Nx ROI" with no `sources`
  (or a "[NEEDS VERIFICATION]" marker, or an inline "source:" / URL).
- `absolute_assurance` (inst_017): "guarantee", "100% safe", "never fails", "zero risk",
  "completely prevents", ... unless negated ("we cannot guarantee").
- `unverified_claim` (inst_018): "production-ready", "battle-tested", ... with no evidence
  (`sources` or `params["evidence"]`).
- `clickbait` (CONTENT-CLICKBAIT): a clickbait phrase ("you won't believe", "doctors hate")
  blocks alone; weaker signals (sensational words, excessive capitals, excessive exclamation
  marks, a headline the body does not support) block when two are present, warn when one is.
- `personal_data` (CONTENT-PERSONAL-DATA, VALUES/privacy): e-mail addresses, phone numbers,
  identity or card numbers, "home address", ... in the content or in string parameters.
- `csp` (SEC-001): inline event handlers, inline styles, inline scripts, javascript: URLs in
  HTML content.
- `phrases`: any of the rule's `phrases` (whole words, not negated) or `patterns`.

When several rules match, the strongest verdict wins (ties: the rule listed first) and the
check's `matched` field lists every rule that matched.
"""

from __future__ import annotations

import re
import time
from typing import Callable, Final, Iterable

from ...records.events import Check
from ...records.rulesets import NO_RULES
from ...records.verdicts import SEVERITY_ORDER, normalise
from .base import ActionInput, Context, PhraseSet, make_check, words_of
from .rules import BOUNDARY_OF_SECTION, Rule, RuleSet, default_rules

NAME: Final = "BoundaryEnforcer"
BLOCK: Final = "REQUIRE_HUMAN_DECISION"
NOTIFY: Final = "PROCEED_WITH_NOTIFICATION"
PROCEED: Final = "PROCEED"

PASS_DOMAINS: Final = frozenset({"technical", "verification"})

# Negation within the clause before a match. "without" negates assurances ("without any
# guarantee") but not values keywords ("share data without consent" is the violation).
_NEGATION: Final = re.compile(
    r"(?:\b(?:no|not|never|none|nor|neither|cannot|without)\b|n't)(?:\W+\w+){0,2}\W*$")
_VALUES_NEGATION: Final = re.compile(
    r"(?:\b(?:no|not|never|none|nor|neither)\b|n't)(?:\W+\w+){0,3}\W*$")
_CLAUSE_END: Final = re.compile(r"[.;:!?,\n]")


def _clause_before(lower: str, start: int, width: int = 60) -> str:
    window = lower[max(0, start - width):start]
    cut = max((m.end() for m in _CLAUSE_END.finditer(window)), default=0)
    return window[cut:]


def negated(lower: str, start: int, pattern: re.Pattern[str] = _NEGATION) -> bool:
    """Whether the match at `start` is negated within its clause."""
    return pattern.search(_clause_before(lower, start)) is not None


# --- values boundaries --------------------------------------------------------------------------

# Our own keyword table, one row per Tractatus section. Phrases are specific on purpose: a
# single common word ("value", "long-term") would make every article cross a boundary.
BOUNDARY_KEYWORDS: Final[dict[str, tuple[str, ...]]] = {
    "12.1": ("privacy", "privacy policy", "personal data", "user data", "customer data",
             "ethics", "ethical", "unethical", "moral", "morally", "fairness", "discriminate",
             "discrimination", "values decision", "human rights", "indigenous", "indigenous data",
             "cultural sensitivity", "cultural content", "sovereignty", "data sovereignty",
             "māori", "maori", "te reo", "te tiriti"),
    "12.2": ("novel approach", "breakthrough", "reinvent", "new paradigm", "radical redesign"),
    "12.3": ("strategic direction", "strategic pivot", "long-term strategy", "trade-off between",
             "prioritise values", "prioritize values", "judgement call", "judgment call"),
    "12.4": ("our mission", "mission statement", "core purpose", "organisational purpose",
             "organizational purpose", "why we exist"),
    "12.5": ("what matters most", "meaning of life", "meaningful life", "what is meaningful"),
    "12.6": ("on behalf of", "on their behalf", "on your behalf", "impersonate", "consent",
             "user autonomy", "decide for the user", "decide for them", "without asking"),
}


def _norm(phrase: str) -> str:
    return re.sub(r"[\s\-]+", " ", phrase.lower())


_SECTION_OF: Final[dict[str, str]] = {_norm(kw): sec for sec, kws in BOUNDARY_KEYWORDS.items()
                                      for kw in kws}
_BOUNDARY_PHRASES: Final = PhraseSet(_SECTION_OF)

DECISION_KIND_WORDS: Final = ("decide", "decision", "approve", "policy", "strategy", "consent",
                              "behalf", "grant", "revoke", "mission", "govern")
CONTENT_KINDS: Final = frozenset({"publish", "post", "article", "write", "draft", "reply",
                                  "message", "comment", "headline", "tweet", "email"})
_DECISION_VERB_BEFORE: Final = re.compile(
    r"\b(?:decide|decides|deciding|approve|approves|approving|change|changes|changing|modify|"
    r"modifying|override|overriding|remove|removing|drop|dropping|share|sharing|sell|selling|"
    r"collect|collecting|adopt|adopting|set|setting|revise|revising|rewrite|replace|replacing|"
    r"abandon|abandoning|pivot|prioriti[sz]e|automate|automating|disable|disabling|waive|relax|"
    r"relaxing|act|acting|sign|signing|give|giving|export|exporting|publish|publishing)\b"
    r"(?:\W+\w+){0,5}\W*$")


class ValuesBoundary:
    """The keyword boundaries of sections 12.1-12.6, attributed to the loaded rules."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.by_section: dict[str, list[tuple[Rule, frozenset[str]]]] = {}
        for rule in rules:
            if rule.section in BOUNDARY_KEYWORDS:
                self.by_section.setdefault(rule.section, []).append(
                    (rule, words_of(f"{rule.title} {rule.text}")))

    def _rule_for(self, section: str, keyword: str) -> tuple[str, Rule | None]:
        candidates = self.by_section.get(section, [])
        first = keyword.split()[0]
        stem = first[:5]
        # The rule whose own words mention the keyword explains the hit best.
        for rule, words in candidates:
            if first in words:
                return rule.rule_id, rule
        if len(stem) >= 4:
            for rule, words in candidates:
                if any(w.startswith(stem) for w in words):
                    return rule.rule_id, rule
        if candidates:
            return candidates[0][0].rule_id, candidates[0][0]
        return f"BOUNDARY-{section}", None

    def __call__(self, a: ActionInput) -> tuple[str, str, Rule | None, str, str] | None:
        """(raw, rule_id, rule, section, reason) when a boundary is crossed or touched."""
        lower = a.lower
        hits: list[tuple[str, int]] = []  # (normalised keyword, position)
        for m in _BOUNDARY_PHRASES.matches(a):
            if not negated(lower, m.start(), _VALUES_NEGATION):
                hits.append((_norm(m.group(0)), m.start()))
        if not hits:
            return None
        distinct = {kw for kw, _ in hits}
        keyword = hits[0][0]
        section = _SECTION_OF.get(keyword, "12.1")
        kind = a.kind.lower()
        decision = any(w in kind for w in DECISION_KIND_WORDS)
        if not decision and kind not in CONTENT_KINDS:
            for kw, p in hits:
                if _DECISION_VERB_BEFORE.search(_clause_before(lower, p)):
                    keyword, decision = kw, True
                    section = _SECTION_OF.get(kw, section)
                    break
        rule_id, rule = self._rule_for(section, keyword)
        name = BOUNDARY_OF_SECTION[section]
        if decision or len(distinct) >= 2:
            why = "a decision" if decision \
                else f"{len(distinct)} signals: " + ", ".join(sorted(distinct))
            return (BLOCK, rule_id, rule, section,
                    f"{name} boundary ({section}): '{keyword}' in {why}; only a human may decide")
        return (NOTIFY, rule_id, rule, section,
                f"{name} boundary ({section}) touched: '{keyword}' (one signal, not a decision)")


# --- content detectors --------------------------------------------------------------------------
# Each detector first asks something cheap (a character, a token in the action's token set) and
# runs its regular expressions only when that could lead to a hit: see PhraseSet.

Detector = Callable[[ActionInput], "tuple[str, str] | None"]  # (raw verdict, reason)

_PERCENT: Final = re.compile(r"(?<![\w.])\d{1,3}(?:[.,]\d+)?\s?(?:%|percent\b|per cent\b)")
_MONEY: Final = re.compile(
    r"[$€£¥]\s?\d[\d,.]*(?:\s?(?:k|m|bn|million|billion|thousand)\b)?"
    r"|\b\d[\d,.]*\s?(?:dollars|usd|eur|euros|pounds|gbp)\b"
    r"|\b\d+(?:\.\d+)?\s?(?:million|billion|trillion)\s+(?:dollars|in\s+revenue|revenue|in\s+sales)\b")
_MONEY_TOKENS: Final = frozenset({"dollars", "usd", "eur", "euros", "pounds", "gbp", "million",
                                  "billion", "trillion"})
_ROI: Final = re.compile(r"\b\d+(?:\.\d+)?\s?x\s+(?:roi|return on investment|returns?)\b"
                         r"|\broi\s+of\s+\d")
_SOURCED: Final = re.compile(r"\[needs verification\]|\bsources?\s*:|https?://")


def unsourced_statistic(rule: Rule) -> Detector:
    raw = rule.verdict or BLOCK

    def detect(a: ActionInput) -> tuple[str, str] | None:
        if a.sources:
            return None
        lower = a.lower
        m = None
        if "%" in lower or "percent" in lower or "per cent" in lower:
            m = _PERCENT.search(lower)
        if m is None and (any(c in lower for c in "$€£¥") or a.tokens & _MONEY_TOKENS):
            m = _MONEY.search(lower)
        if m is None and ("roi" in a.tokens or "return" in a.tokens or "returns" in a.tokens):
            m = _ROI.search(lower)
        if m is None or _SOURCED.search(lower):
            return None
        return raw, f"statistic '{m.group(0).strip()}' with no sources"
    return detect


ASSURANCE_PHRASES: Final = (
    "guarantee", "guarantees", "guaranteed", "guaranteeing", "never fails", "never fail",
    "will never fail", "zero risk", "risk-free", "completely prevents", "completely prevent",
    "completely eliminates", "eliminates all risk", "always works", "cannot fail", "can't fail",
    "foolproof", "fail-proof", "100% safe", "100% secure", "100% reliable", "100% accurate",
    "100% effective", "100% certain", "100% guaranteed", "perfectly safe", "totally safe",
    "absolutely safe", "works every time", "impossible to hack", "impossible to fail",
    "impossible to breach",
)


def _first_unnegated(phrases: PhraseSet, a: ActionInput) -> re.Match[str] | None:
    for m in phrases.matches(a):
        if not negated(a.lower, m.start()):
            return m
    return None


def absolute_assurance(rule: Rule) -> Detector:
    raw = rule.verdict or BLOCK
    phrases = PhraseSet((*ASSURANCE_PHRASES, *rule.phrases))

    def detect(a: ActionInput) -> tuple[str, str] | None:
        m = _first_unnegated(phrases, a)
        return None if m is None else (raw, f"absolute assurance '{m.group(0)}'")
    return detect


CLAIM_PHRASES: Final = (
    "production-ready", "battle-tested", "enterprise-grade", "proven at scale",
    "used in production by", "industry-leading", "trusted by thousands", "trusted by millions",
    "rock-solid",
)


def unverified_claim(rule: Rule) -> Detector:
    raw = rule.verdict or BLOCK
    phrases = PhraseSet((*CLAIM_PHRASES, *rule.phrases))

    def detect(a: ActionInput) -> tuple[str, str] | None:
        if a.sources or a.params.get("evidence"):
            return None
        m = _first_unnegated(phrases, a)
        return None if m is None else (raw, f"unverified claim '{m.group(0)}' with no evidence")
    return detect


# (tokens of which one must occur, pattern): the token set gates the regex.
CLICKBAIT_PATTERNS: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("believe",), r"you (?:won't|wont|will not) believe"),
    (("hate",), r"(?:doctors|experts|dentists|banks) hate"),
    (("trick",), r"(?:this|one) (?:weird|simple|crazy|little|strange) trick"),
    (("happens",), r"what happens next"),
    (("shock", "amaze", "stun"), r"will (?:shock|amaze|stun) you"),
    (("blow", "blowing"), r"blow your mind|mind[- ]blowing"),
    (("dropping",), r"jaw[- ]dropping"),
    (("number",), r"number \d+ will"),
    (("know",), r"(?:they|experts|doctors|banks) don't want you to know"),
    (("wrong",), r"gone wrong"),
    (("stop",), r"can't stop (?:laughing|watching)"),
    (("see",), r"you (?:need|have) to see"),
    (("deleted", "late"), r"before it's (?:deleted|too late)"),
    (("life",), r"will change your life"),
    (("truth",), r"the shocking truth"),
    (("talking", "talks"), r"nobody (?:is talking|talks) about"),
    (("revealed",), r"(?:is|are) finally revealed"),
    (("this",), r"(?:hate|love) (?:him|her|them) for this"),
)
SENSATIONAL_WORDS: Final = frozenset({
    "shocking", "shocked", "stunning", "unbelievable", "insane", "outrageous", "explosive",
    "bombshell", "miracle", "exposed", "slammed", "destroys", "destroyed", "horrifying",
    "terrifying", "epic", "scandal", "meltdown", "chaos", "sensational",
})
_NUMBER: Final = re.compile(r"\d+")
_CAPS_RUN: Final = re.compile(r"[A-Z]{4,}")


def clickbait(rule: Rule) -> Detector:
    raw = rule.verdict or BLOCK
    strong: dict[str, list[re.Pattern[str]]] = {}
    for gate_tokens, pattern in CLICKBAIT_PATTERNS:
        rx = re.compile(pattern)
        for token in gate_tokens:
            strong.setdefault(token, []).append(rx)
    gates = frozenset(strong)
    extra = PhraseSet(rule.phrases)
    custom = [re.compile(p, re.I) for p in rule.patterns]

    def detect(a: ActionInput) -> tuple[str, str] | None:
        lower, tokens = a.lower, a.tokens
        for token in sorted(tokens & gates):
            for rx in strong[token]:
                m = rx.search(lower)
                if m is not None:
                    return raw, f"clickbait phrase '{m.group(0)}'"
        m2: re.Match[str] | None = None
        if extra:
            found = extra.matches(a)
            m2 = found[0] if found else None
        if m2 is None:
            m2 = next((m for rx in custom if (m := rx.search(a.content)) is not None), None)
        if m2 is not None:
            return raw, f"clickbait phrase '{m2.group(0)}'"
        signals: list[str] = []
        for word in sorted(tokens & SENSATIONAL_WORDS):
            if not negated(lower, lower.find(word)):
                signals.append(f"sensational wording '{word}'")
                break
        content = a.content
        if "[NEEDS VERIFICATION]" in content:  # inst_002's marker is honest, not shouting
            content = content.replace("[NEEDS VERIFICATION]", "")
        if _CAPS_RUN.search(content) is not None:  # cheap gate for the two costlier tests
            head = a.headline or content.split("\n", 1)[0]
            n_alpha = sum(map(str.isalpha, head))
            if len(set(_CAPS_RUN.findall(content))) >= 2 or (
                    n_alpha >= 10 and sum(map(str.isupper, head)) > 0.6 * n_alpha):
                signals.append("excessive capitals")
        if content.count("!") >= 3 or "!!" in content or "?!" in content:
            signals.append("excessive exclamation marks")
        if a.headline and a.text:
            body = a.text.lower()
            unsupported = [n for n in _NUMBER.findall(a.headline) if n not in body]
            hw = words_of(a.headline)
            if unsupported:
                signals.append(f"headline figure {unsupported[0]} not in the body")
            elif len(hw) >= 3 and sum(1 for w in hw if w in body) < 0.25 * len(hw):
                signals.append("headline not supported by the body")
        if len(signals) >= 2:
            return raw, "clickbait: " + ", ".join(signals)
        if signals:
            return NOTIFY, "possible clickbait: " + signals[0]
        return None
    return detect


_EMAIL: Final = re.compile(r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}")
_PHONE: Final = re.compile(
    r"(?<![\w/.:-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
    r"\d{3,4}[ .-]?\d{3,4}(?![\w/.:-])")
_SSN: Final = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
_CARD: Final = re.compile(r"\b(?:\d{4}[ -]){3}\d{4}\b")
_DIGITS7: Final = re.compile(r"(?:\d\D?){7}")
PERSONAL_PHRASES: Final = (
    "home address", "lives at", "social security number", "passport number", "date of birth",
    "credit card number", "bank account number", "personal phone", "personal email",
    "phone number is", "home phone", "medical record", "national insurance number",
)


def personal_data(rule: Rule) -> Detector:
    raw = rule.verdict or BLOCK
    phrases = PhraseSet((*PERSONAL_PHRASES, *rule.phrases))
    numbers = ((_SSN, "an identity number"), (_CARD, "a card number"), (_PHONE, "a phone number"))

    def detect(a: ActionInput) -> tuple[str, str] | None:
        haystack = a.lower
        extra = [v.lower() for v in a.params.values() if isinstance(v, str)]
        if extra:
            haystack = haystack + "\n" + "\n".join(extra)
        if "@" in haystack and _EMAIL.search(haystack):
            return raw, "personal data exposed: an e-mail address"
        if _DIGITS7.search(haystack):  # every number pattern below needs seven digits
            for rx, what in numbers:
                if rx.search(haystack):
                    return raw, f"personal data exposed: {what}"
        m = _first_unnegated(phrases, a)
        return None if m is None else (raw, f"personal data exposed: '{m.group(0)}'")
    return detect


_CSP: Final = (
    (re.compile(r"<[^>]*\son[a-z]+\s*=", re.I), "inline event handler"),
    (re.compile(r"<[^>]*\sstyle\s*=", re.I), "inline style"),
    (re.compile(r"<script\b(?![^>]*\bsrc\s*=)[^>]*>\s*[^<\s]", re.I), "inline script"),
    (re.compile(r"javascript:", re.I), "javascript: URL"),
)


def csp(rule: Rule) -> Detector:
    raw = rule.verdict or BLOCK

    def detect(a: ActionInput) -> tuple[str, str] | None:
        path = str(a.params.get("path", ""))
        if "<" not in a.content and not path.endswith((".html", ".htm")):
            return None
        for rx, what in _CSP:
            if rx.search(a.content):
                return raw, f"Content Security Policy: {what}"
        return None
    return detect


def phrases(rule: Rule) -> Detector:
    raw = rule.verdict or BLOCK
    words = PhraseSet(rule.phrases)
    pats = [re.compile(p, re.I) for p in rule.patterns]

    def detect(a: ActionInput) -> tuple[str, str] | None:
        m = _first_unnegated(words, a) if words else None
        if m is None:
            m = next((m2 for rx in pats if (m2 := rx.search(a.content)) is not None), None)
        return None if m is None else (raw, f"'{m.group(0)}' ({rule.title or rule.rule_id})")
    return detect


DETECTORS: Final[dict[str, Callable[[Rule], Detector]]] = {
    "unsourced_statistic": unsourced_statistic, "absolute_assurance": absolute_assurance,
    "unverified_claim": unverified_claim, "clickbait": clickbait, "personal_data": personal_data,
    "csp": csp, "phrases": phrases,
}


_SECTION_OF_BOUNDARY: Final = {b: s for s, b in BOUNDARY_OF_SECTION.items()}


def _section_of(boundary: str | None) -> str | None:
    return _SECTION_OF_BOUNDARY.get(boundary) if boundary else None


def _severity(rule: Rule | None, raw: str) -> str | None:
    if rule is not None and rule.severity:
        return rule.severity
    if normalise(raw) == "allow":
        return None
    return rule.persistence if rule is not None and rule.persistence != "VARIABLE" else "HIGH"


class BoundaryEnforcer:
    """Values boundaries and content rules; see the module docstring for the behaviour."""

    name = NAME

    def __init__(self, rules: RuleSet | Iterable[Rule] | None = None, *,
                 boundaries: bool = True, pass_domains: Iterable[str] = PASS_DOMAINS) -> None:
        mine = [r for r in (default_rules() if rules is None else rules)
                if r.service == NAME and r.active]
        self.pass_domains = frozenset(d.lower() for d in pass_domains)
        self.content: list[tuple[Rule, Detector]] = []
        boundary_rules: list[Rule] = []
        for rule in mine:
            if rule.detector:
                try:
                    factory = DETECTORS[rule.detector]
                except KeyError:
                    raise ValueError(f"rule {rule.rule_id}: unknown detector {rule.detector!r}; "
                                     f"known: {', '.join(DETECTORS)}") from None
                self.content.append((rule, factory(rule)))
            else:
                boundary_rules.append(rule)
        self.values = ValuesBoundary(boundary_rules) if boundaries else None
        # Every rule evaluated on every action that is not pre-approved or in a pass domain:
        # the denominator of each rule's rate (records/rulesets.py).
        values_ids = ([r.rule_id for rules in self.values.by_section.values() for r, _ in rules]
                      if self.values is not None else [])
        self.rule_ids: tuple[str, ...] = tuple(
            dict.fromkeys([r.rule_id for r, _ in self.content] + values_ids))

    def check(self, action: ActionInput, context: Context) -> Check:
        start = time.perf_counter_ns()
        try:
            return self._check(action, start)
        except Exception as exc:  # fail safe: a human decides what we could not
            return make_check(NAME, BLOCK, start, rule_id="BOUNDARY-ERROR", severity="HIGH",
                              reason=f"error, failing safe: {type(exc).__name__}: {exc}")

    def _check(self, a: ActionInput, start: int) -> Check:
        # Neither case evaluates a rule: the check says so (no denominator for any rule).
        if a.pre_approved:
            c = make_check(NAME, PROCEED, start, reason="pre-approved by a human")
            c.ruleset = NO_RULES
            return c
        if a.domain.lower() in self.pass_domains:
            c = make_check(NAME, PROCEED, start, reason=f"{a.domain} domain: no values at stake")
            c.ruleset = NO_RULES
            return c
        best: tuple[str, str, Rule | None, str] | None = None  # raw, rule_id, rule, reason
        matched: list[str] = []
        for rule, detect in self.content:
            hit = detect(a)
            if hit is None:
                continue
            matched.append(rule.rule_id)
            if best is None \
                    or SEVERITY_ORDER[normalise(hit[0])] > SEVERITY_ORDER[normalise(best[0])]:
                best = (hit[0], rule.rule_id, rule, hit[1])
        if self.values is not None:
            vb = self.values(a)
            if vb is not None:
                raw, rule_id, vrule, section, reason = vb
                matched.append(rule_id)
                if best is None \
                        or SEVERITY_ORDER[normalise(raw)] > SEVERITY_ORDER[normalise(best[0])]:
                    best = (raw, rule_id, vrule, reason)
                    if vrule is None:  # a section without a loaded rule still names its boundary
                        return self._finish(best, matched, start, BOUNDARY_OF_SECTION[section])
        if best is None:
            return make_check(NAME, PROCEED, start, reason="no boundary crossed")
        return self._finish(best, matched, start, None)

    def _finish(self, best: tuple[str, str, Rule | None, str], matched: list[str], start: int,
                boundary: str | None) -> Check:
        raw, rule_id, rule, reason = best
        extra: dict[str, object] = {}
        if section := (rule.section if rule is not None else None) or _section_of(boundary):
            extra["section"] = section
        if len(matched) > 1:
            extra["matched"] = matched
        return make_check(
            NAME, raw, start, rule_id=rule_id,
            boundary=boundary or (rule.boundary if rule is not None else None),
            severity=_severity(rule, raw), reason=reason, extra=extra,
        )


__all__ = ["BOUNDARY_KEYWORDS", "BoundaryEnforcer", "DETECTORS", "negated"]
