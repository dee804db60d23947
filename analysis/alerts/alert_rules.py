"""Alert rules in TOML, shaped like Prometheus rule files, and their validation.

```toml
[route]                                   # optional; how notifications are grouped
receiver = "tractatus-watch"
group_by = ["alertname", "run_id"]        # ["..."] groups by every label

[[groups]]
name = "governance"

[[groups.rules]]
alert = "CoverageBelow100"
expr = "SELECT run_id, arm, round, covered / actions AS value FROM ..."   # or:
# detector = "adherence_drift"
# params = { ratio = 2.0 }
for = "2 rounds"                           # or "30s", "5m", "1h30m"; default 0
promql = "tractatus_coverage_ratio < 1"   # optional: the rule for Prometheus (`rules`)
keep_firing_for = "1 round"
labels = { severity = "critical" }
annotations = { summary = "coverage {{ $value | humanizePercentage }} in {{ $labels.run_id }}" }

[[inhibit_rules]]
source_matchers = ['severity="critical"']
target_matchers = ['severity="warning"']
equal = ["run_id", "arm"]
```

An `expr` is SQL that the caller runs: each returned row is an active alert instance; the `value`
column is its value, a `round` column (if any) is the round it refers to, every other column is a
label. A file with any error is refused as a whole with `RulesError`, whose message is one line:
`<file>: <key>: <reason>`.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal, Mapping

from ...records.durations import DurationError, parse_seconds

# --- evaluation results ------------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    """One active instance of a rule: labels (without alertname) and the value.

    `round` is the training round the sample refers to (drives `for = "N rounds"`); `info` holds
    extra strings for annotation templates (`{{ $info.change_round }}`) that must not become labels,
    because labels are the alert's identity.
    """

    labels: dict[str, str]
    value: float | None = None
    round: int | None = None
    info: dict[str, str] = field(default_factory=dict)


class NoData(Exception):
    """The rule could not be evaluated for lack of data (unlike: evaluated and false)."""


# --- errors --------------------------------------------------------------------------------------


class AlertRulesError(ValueError):
    """A rules file that cannot be used; the message is `<file>: <key>: <reason>`."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: {key}: {reason}" if key else f"{source}: {reason}")
        self.source = source
        self.key = key
        self.reason = reason


# --- durations ----------------------------------------------------------------------------------

_ROUNDS_RE: Final = re.compile(r"^(\d+)\s*rounds?$")


@dataclass(frozen=True, slots=True)
class Duration:
    """A wait counted in seconds or in training rounds."""

    amount: float
    unit: Literal["s", "rounds"] = "s"

    @property
    def zero(self) -> bool:
        return self.amount <= 0

    @property
    def in_rounds(self) -> bool:
        return self.unit == "rounds"

    def __str__(self) -> str:
        if self.unit == "rounds":
            n = int(self.amount)
            return f"{n} round" if n == 1 else f"{n} rounds"
        return f"{self.amount:g}s"


ZERO: Final = Duration(0.0)


def parse_duration(text: str) -> Duration:
    """`"3 rounds"`, `"1 round"`, or a duration (records/durations.py: `"30s"`, `"1h30m"`)."""
    s = text.strip()
    m = _ROUNDS_RE.match(s)
    if m:
        return Duration(float(m.group(1)), "rounds")
    try:
        return Duration(parse_seconds(s))
    except DurationError:
        raise ValueError(f"invalid duration {text!r} (expected e.g. \"5m\", \"30s\" or "
                         f"\"3 rounds\")") from None


# --- matchers ----------------------------------------------------------------------------------

_LABEL_RE: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MATCHER_RE: Final = re.compile(
    r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^"\s]*))\s*$')


@dataclass(frozen=True, slots=True)
class Matcher:
    """A label matcher as in Alertmanager: `=`, `!=`, `=~`, `!~` (regexes fully anchored)."""

    name: str
    value: str
    op: Literal["=", "!=", "=~", "!~"] = "="

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            re.compile(self.value)  # fail at construction, not at match time

    def matches(self, labels: Mapping[str, str]) -> bool:
        # A missing label reads as "", so `foo=""` matches alerts without foo (Alertmanager).
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _MATCHER_RE.match(text)
        if not m:
            raise ValueError(f"invalid matcher {text!r} (expected e.g. 'severity=\"critical\"')")
        name, op, quoted, bare = m.groups()
        value = (re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare)
        try:
            return cls(name, value, op)  # type: ignore[arg-type]
        except re.error as exc:
            raise ValueError(f"invalid regex in matcher {text!r}: {exc}") from None


def matches_all(matchers: tuple[Matcher, ...] | list[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


# --- annotation templates ----------------------------------------------------------------------

_TEMPLATE_RE: Final = re.compile(r"\{\{(.*?)\}\}")
_TEMPLATE_EXPR_RE: Final = re.compile(
    r'^\s*\$(?:(value)(?:\s*\|\s*(humanize|humanizePercentage|printf\s+"([^"]*)"))?'
    r"|labels\.([a-zA-Z_][a-zA-Z0-9_]*)|info\.([a-zA-Z_][a-zA-Z0-9_]*))\s*$")


def _check_template(text: str) -> None:
    for m in _TEMPLATE_RE.finditer(text):
        inner = _TEMPLATE_EXPR_RE.match(m.group(1))
        if not inner:
            raise ValueError(f"unsupported template {m.group(0)!r} (use {{{{ $value }}}}, "
                             f"{{{{ $labels.NAME }}}}, {{{{ $info.NAME }}}}, or $value with "
                             f"| humanize, | humanizePercentage, | printf \"%.2f\")")
        fmt = inner.group(3)
        if fmt is not None:
            try:
                fmt % 1.0
            except (TypeError, ValueError):
                raise ValueError(f"invalid printf format {fmt!r}") from None


def _humanize(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= factor:
            return f"{v / factor:.4g}{suffix}"
    return f"{v:.4g}"


def render_template(text: str, labels: Mapping[str, str], value: float | None,
                    info: Mapping[str, str] | None = None) -> str:
    """Expand `{{ $value }}`, `{{ $labels.x }}`, `{{ $info.x }}` (a subset of Prometheus's)."""
    def expand(m: re.Match[str]) -> str:
        inner = _TEMPLATE_EXPR_RE.match(m.group(1))
        if not inner:
            return m.group(0)
        _, pipe, fmt, label, info_key = inner.groups()
        if label is not None:
            return labels.get(label, "")
        if info_key is not None:
            return (info or {}).get(info_key, "")
        if value is None:
            return ""
        if pipe == "humanize":
            return _humanize(value)
        if pipe == "humanizePercentage":
            return f"{value * 100:.4g}%"
        if fmt is not None:
            return fmt % value
        return f"{value:g}"
    return _TEMPLATE_RE.sub(expand, text)


# --- detectors: names and parameters (the implementations are in detectors.py) -----------------

ParamType = Literal["float", "int", "str", "bool", "duration"]

_CUSUM_PARAMS: Final[dict[str, ParamType]] = {
    "x": "str", "n": "str", "p0": "float", "p1": "float", "ratio": "float", "arl0": "float",
    "warmup": "int", "min_events": "int", "p_floor": "float", "governed_only": "bool",
}
_TREND_PARAMS: Final[dict[str, ParamType]] = {
    "window": "int", "alpha": "float", "min_points": "int",
}
DETECTOR_PARAMS: Final[dict[str, dict[str, ParamType]]] = {
    "adherence_drift": _CUSUM_PARAMS,
    "evasion_drift": _CUSUM_PARAMS,
    "coverage_drop": {"threshold": "float", "governed_only": "bool"},
    "witnessed_coverage_drop": {"threshold": "float", "governed_only": "bool"},
    "gap_widening": _TREND_PARAMS,
    "gap_closed": {"tol": "float", "ci_window": "int", "hold": "int", "level": "float",
                   "side": "str", "seed": "int"},
    "latency_growth": {**_TREND_PARAMS, "min_growth": "float", "governed_only": "bool"},
    "no_data": {"after": "duration"},
}


# Open intervals for numbers (None: unbounded); integers must be >= 1 unless listed.
_RANGES: Final[dict[str, tuple[float | None, float | None]]] = {
    "p0": (0.0, 1.0), "p1": (0.0, 1.0), "p_floor": (0.0, 1.0), "alpha": (0.0, 1.0),
    "level": (0.0, 1.0), "ratio": (1.0, None), "arl0": (1.0, None), "tol": (0.0, None),
    "min_growth": (None, None), "threshold": (None, None),
}
_CHOICES: Final[dict[str, tuple[str, ...]]] = {"side": ("shortfall", "two-sided")}
_INT_MIN: Final[dict[str, int]] = {"seed": 0, "min_events": 0}


def _check_param(name: str, kind: ParamType, value: Any) -> str | None:
    """None when `value` fits `kind` (and the parameter's range), else the reason it does not."""
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "expected a number"
        if not math.isfinite(value):
            return "must be finite"
        lo, hi = _RANGES.get(name, (None, None))
        if (lo is not None and value <= lo) or (hi is not None and value >= hi):
            return (f"must be in ({lo:g}, {hi:g})" if lo is not None and hi is not None
                    else f"must be > {lo:g}" if lo is not None else f"must be < {hi:g}")
        return None
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            return "expected an integer"
        least = _INT_MIN.get(name, 1)
        return None if value >= least else f"must be >= {least}"
    if kind == "bool":
        return None if isinstance(value, bool) else "expected true or false"
    if kind == "duration":
        if not isinstance(value, str):
            return "expected a duration string like \"5m\""
        try:
            if parse_duration(value).in_rounds:
                return "expected a time duration like \"5m\", not rounds"
        except ValueError as exc:
            return str(exc)
        return None
    if not isinstance(value, str):
        return "expected a string"
    choices = _CHOICES.get(name)
    if choices and value not in choices:
        return f"expected one of {', '.join(choices)}"
    return None


# --- the rule model -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, slots=True)
class AlertRule:
    """One alerting rule; hashed by identity so it can key a results dict."""

    name: str
    group: str
    key: str  # where it is in its file, e.g. "groups[0].rules[2]"
    expr: str | None = None
    detector: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    for_: Duration = ZERO
    keep_firing_for: Duration = ZERO
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    source: str = "<rules>"
    # The same rule in PromQL over the Prometheus bridge's metrics, `{param}` taking the rule's
    # params (analysis/alerts/prometheus_rules.py); None: the rule has no Prometheus twin.
    promql: str | None = None

    @property
    def uid(self) -> str:
        """Stable identity across reloads of the same file: group and alert name and position."""
        return f"{self.group}/{self.name}@{self.key}"


@dataclass(frozen=True, slots=True)
class RuleGroup:
    name: str
    rules: tuple[AlertRule, ...]
    interval: Duration | None = None


@dataclass(frozen=True, slots=True)
class InhibitRule:
    source_matchers: tuple[Matcher, ...]
    target_matchers: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    receiver: str = "tractatus-watch"
    group_by: tuple[str, ...] = ("alertname",)


@dataclass(frozen=True, slots=True)
class AlertRuleSet:
    groups: tuple[RuleGroup, ...]
    inhibit_rules: tuple[InhibitRule, ...] = ()
    route: Route = Route()
    source: str = "<rules>"

    @property
    def rules(self) -> list[AlertRule]:
        return [r for g in self.groups for r in g.rules]


# --- parsing -----------------------------------------------------------------------------------

_TOP_KEYS: Final = frozenset({"groups", "inhibit_rules", "route"})
_GROUP_KEYS: Final = frozenset({"name", "interval", "rules"})
_RULE_KEYS: Final = frozenset({"alert", "expr", "detector", "params", "for", "keep_firing_for",
                               "labels", "annotations", "promql"})
_INHIBIT_KEYS: Final = frozenset({"source_matchers", "target_matchers", "equal"})
_ROUTE_KEYS: Final = frozenset({"receiver", "group_by"})
_RESERVED_LABELS: Final = frozenset({"alertname"})


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, reason: str) -> AlertRulesError:
        return AlertRulesError(self.source, key, reason)

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "expected a table")
        return value

    def unknown(self, d: Mapping[str, Any], allowed: frozenset[str], key: str) -> None:
        for k in d:
            if k not in allowed:
                where = f"{key}.{k}" if key else k
                raise self.fail(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def string(self, d: Mapping[str, Any], k: str, key: str, required: bool = True) -> str | None:
        v = d.get(k)
        if v is None:
            if required:
                raise self.fail(f"{key}.{k}", "missing")
            return None
        if not isinstance(v, str) or not v.strip():
            raise self.fail(f"{key}.{k}", "expected a non-empty string")
        return v

    def duration(self, d: Mapping[str, Any], k: str, key: str) -> Duration:
        v = d.get(k)
        if v is None:
            return ZERO
        if not isinstance(v, str):
            raise self.fail(f"{key}.{k}", "expected a duration string like \"5m\" or "
                                          "\"3 rounds\"")
        try:
            return parse_duration(v)
        except ValueError as exc:
            raise self.fail(f"{key}.{k}", str(exc)) from None

    def str_map(self, d: Mapping[str, Any], k: str, key: str, labels: bool) -> dict[str, str]:
        v = d.get(k, {})
        t = self.table(v, f"{key}.{k}")
        out: dict[str, str] = {}
        for name, val in t.items():
            where = f"{key}.{k}.{name}"
            if labels and not _LABEL_RE.match(name):
                raise self.fail(where, "invalid label name (use [a-zA-Z_][a-zA-Z0-9_]*)")
            if labels and name in _RESERVED_LABELS:
                raise self.fail(where, "alertname is set from `alert`")
            if not isinstance(val, str):
                raise self.fail(where, "expected a string")
            if not labels:
                try:
                    _check_template(val)
                except ValueError as exc:
                    raise self.fail(where, str(exc)) from None
            out[name] = val
        return out

    def matchers(self, d: Mapping[str, Any], k: str, key: str) -> tuple[Matcher, ...]:
        v = d.get(k, [])
        if not isinstance(v, list):
            raise self.fail(f"{key}.{k}", "expected a list of matcher strings")
        out = []
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise self.fail(f"{key}.{k}[{i}]", "expected a matcher string")
            try:
                out.append(Matcher.parse(item))
            except ValueError as exc:
                raise self.fail(f"{key}.{k}[{i}]", str(exc)) from None
        return tuple(out)

    def label_list(self, d: Mapping[str, Any], k: str, key: str,
                   allow_all: bool = False) -> tuple[str, ...]:
        v = d.get(k, [])
        if not isinstance(v, list):
            raise self.fail(f"{key}.{k}", "expected a list of label names")
        for i, item in enumerate(v):
            if allow_all and item == "...":
                continue
            if not isinstance(item, str) or not _LABEL_RE.match(item):
                raise self.fail(f"{key}.{k}[{i}]", "expected a label name")
        return tuple(v)

    def rule(self, d: Any, key: str, group: str) -> AlertRule:
        d = self.table(d, key)
        self.unknown(d, _RULE_KEYS, key)
        name = self.string(d, "alert", key)
        assert name is not None
        expr = self.string(d, "expr", key, required=False)
        detector = self.string(d, "detector", key, required=False)
        if (expr is None) == (detector is None):
            raise self.fail(key, "needs exactly one of `expr` (SQL) or `detector`")
        params = self.table(d.get("params", {}), f"{key}.params")
        if params and detector is None:
            raise self.fail(f"{key}.params", "only `detector` rules take params")
        if detector is not None:
            spec = DETECTOR_PARAMS.get(detector)
            if spec is None:
                raise self.fail(f"{key}.detector", f"unknown detector {detector!r} (known: "
                                                   f"{', '.join(sorted(DETECTOR_PARAMS))})")
            for pname, pval in params.items():
                kind = spec.get(pname)
                if kind is None:
                    raise self.fail(f"{key}.params.{pname}", f"unknown parameter for {detector} "
                                                             f"(known: {', '.join(sorted(spec))})")
                why = _check_param(pname, kind, pval)
                if why:
                    raise self.fail(f"{key}.params.{pname}", why)
        return AlertRule(
            name=name, group=group, key=key, expr=expr, detector=detector, params=dict(params),
            for_=self.duration(d, "for", key),
            keep_firing_for=self.duration(d, "keep_firing_for", key),
            labels=self.str_map(d, "labels", key, labels=True),
            annotations=self.str_map(d, "annotations", key, labels=False),
            source=self.source, promql=self.string(d, "promql", key, required=False),
        )

    def ruleset(self, doc: Mapping[str, Any]) -> AlertRuleSet:
        self.unknown(doc, _TOP_KEYS, "")
        raw_groups = doc.get("groups", [])
        if not isinstance(raw_groups, list):
            raise self.fail("groups", "expected an array of tables ([[groups]])")
        groups: list[RuleGroup] = []
        names: set[str] = set()
        for gi, g in enumerate(raw_groups):
            gkey = f"groups[{gi}]"
            g = self.table(g, gkey)
            self.unknown(g, _GROUP_KEYS, gkey)
            gname = self.string(g, "name", gkey)
            assert gname is not None
            if gname in names:
                raise self.fail(f"{gkey}.name", f"duplicate group name {gname!r}")
            names.add(gname)
            raw_rules = g.get("rules", [])
            if not isinstance(raw_rules, list):
                raise self.fail(f"{gkey}.rules", "expected an array of tables ([[groups.rules]])")
            rules = tuple(self.rule(r, f"{gkey}.rules[{ri}]", gname)
                          for ri, r in enumerate(raw_rules))
            interval = self.duration(g, "interval", gkey) if "interval" in g else None
            groups.append(RuleGroup(gname, rules, interval))
        raw_inhibit = doc.get("inhibit_rules", [])
        if not isinstance(raw_inhibit, list):
            raise self.fail("inhibit_rules", "expected an array of tables ([[inhibit_rules]])")
        inhibit: list[InhibitRule] = []
        for ii, item in enumerate(raw_inhibit):
            ikey = f"inhibit_rules[{ii}]"
            item = self.table(item, ikey)
            self.unknown(item, _INHIBIT_KEYS, ikey)
            src = self.matchers(item, "source_matchers", ikey)
            tgt = self.matchers(item, "target_matchers", ikey)
            if not src or not tgt:
                raise self.fail(ikey, "needs source_matchers and target_matchers")
            inhibit.append(InhibitRule(src, tgt, self.label_list(item, "equal", ikey)))
        route = Route()
        if "route" in doc:
            r = self.table(doc["route"], "route")
            self.unknown(r, _ROUTE_KEYS, "route")
            receiver = self.string(r, "receiver", "route", required=False) or route.receiver
            group_by = (self.label_list(r, "group_by", "route", allow_all=True)
                        if "group_by" in r else route.group_by)
            route = Route(receiver, group_by)
        return AlertRuleSet(tuple(groups), tuple(inhibit), route, self.source)


def parse_alert_rules(text: str, source: str = "<rules>") -> AlertRuleSet:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AlertRulesError(source, "", f"invalid TOML: {exc}") from None
    return _Parser(source).ruleset(doc)


def load_alert_rules(path: str | Path) -> AlertRuleSet:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise AlertRulesError(str(p), "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise AlertRulesError(str(p), "", "not UTF-8 text") from None
    return parse_alert_rules(text, str(p))


DEFAULT_RULES_FILE: Final = "default_rules.toml"


def load_default_alert_rules() -> AlertRuleSet:
    """The rule set shipped with the package (analysis/alerts/default_rules.toml)."""
    res = resources.files(__package__).joinpath(DEFAULT_RULES_FILE)
    return parse_alert_rules(res.read_text(encoding="utf-8"), f"<package>/{DEFAULT_RULES_FILE}")


__all__ = [
    "DETECTOR_PARAMS", "Duration", "InhibitRule", "Matcher", "NoData", "Route", "AlertRule",
    "RuleGroup", "AlertRuleSet", "AlertRulesError", "Sample", "ZERO", "load_default_alert_rules",
    "load_alert_rules",
    "matches_all", "parse_duration", "parse_alert_rules", "render_template",
]
