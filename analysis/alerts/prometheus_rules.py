"""A Prometheus alerting-rules file generated from our alert rules (alert_rules.py), so the two
cannot drift: the same groups, alert names, labels and annotations, each rule's `promql` as its
`expr` (with `{param}` from the rule's params and `{alert}` its name).

What has to be translated, and how:
- `for` / `keep_firing_for` counted in rounds become seconds at an assumed round duration
  (`round_seconds`): Prometheus knows time, not training rounds;
- `{{ $info.NAME }}` in an annotation (a detector's extra numbers) becomes a template query of
  the bridge's `tractatus_detector_detail{detail="NAME"}` gauge for the alert's run and arm;
- a rule without `promql` is an error: every rule must have its Prometheus twin.

YAML without a YAML library: block mappings and lists whose scalars are JSON strings and
numbers, which YAML reads as they are (JSON's string escapes are YAML's double-quoted ones).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from .alert_rules import AlertRule, AlertRuleSet, Duration

DEFAULT_ROUND_SECONDS: Final = 60.0
_PARAM_RE: Final = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")
_INFO_RE: Final = re.compile(r"\{\{\s*\$info\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


class PrometheusRulesError(ValueError):
    """A rule that has no Prometheus form; the message is `<file>: <rule>: <reason>`."""


def _fail(rule: AlertRule, reason: str) -> PrometheusRulesError:
    return PrometheusRulesError(f"{rule.source}: {rule.key} ({rule.name}): {reason}")


def promql(rule: AlertRule) -> str:
    """The rule's PromQL with `{param}` and `{alert}` substituted (one line)."""
    if rule.promql is None:
        raise _fail(rule, "no `promql`: every rule needs its PromQL to be exported")
    values: dict[str, Any] = {**rule.params, "alert": rule.name}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise _fail(rule, f"promql names {{{name}}}, which is neither a param of the rule "
                              f"nor `alert`")
        return str(values[name])

    return " ".join(_PARAM_RE.sub(sub, rule.promql).split())


def duration(d: Duration, round_seconds: float) -> str | None:
    """Prometheus's duration for `d` (rounds at `round_seconds` each); None when zero."""
    if d.zero:
        return None
    seconds = d.amount * round_seconds if d.in_rounds else d.amount
    return f"{int(round(seconds))}s"


def annotation(rule: AlertRule, text: str) -> str:
    """The template with `$info.NAME` read from the bridge's detector gauges (continuation
    whitespace of TOML's multi-line strings folded to one space)."""
    def query(m: re.Match[str]) -> str:
        selector = ('tractatus_detector_detail{alert=%q,run_id=%q,arm=%q,detail=%q}')
        return (f'{{{{ with printf "{selector}" {json.dumps(rule.name)} $labels.run_id '
                f'$labels.arm {json.dumps(m.group(1))} | query }}}}'
                '{{ . | first | value }}{{ end }}')

    return _INFO_RE.sub(query, " ".join(text.split()))


def rule_document(rule: AlertRule, round_seconds: float) -> dict[str, Any]:
    doc: dict[str, Any] = {"alert": rule.name, "expr": promql(rule)}
    for key, value in (("for", rule.for_), ("keep_firing_for", rule.keep_firing_for)):
        text = duration(value, round_seconds)
        if text is not None:
            doc[key] = text
    if rule.labels:
        doc["labels"] = dict(rule.labels)
    if rule.annotations:
        doc["annotations"] = {k: annotation(rule, v) for k, v in rule.annotations.items()}
    return doc


def rules_document(rules: AlertRuleSet,
                   round_seconds: float = DEFAULT_ROUND_SECONDS) -> dict[str, Any]:
    """The rules file as data: {"groups": [{"name", "rules": [...]}]}."""
    groups = []
    for group in rules.groups:
        entry: dict[str, Any] = {"name": group.name}
        if group.interval is not None and not group.interval.zero:
            entry["interval"] = duration(group.interval, round_seconds)
        entry["rules"] = [rule_document(r, round_seconds) for r in group.rules]
        groups.append(entry)
    return {"groups": groups}


def _yaml(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{json.dumps(k)}:")
                lines += _yaml(v, indent + 2)
            else:
                lines.append(f"{pad}{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}")
        return lines
    for item in value:
        if not isinstance(item, (dict, list)):
            lines.append(f"{pad}- {json.dumps(item, ensure_ascii=False)}")
            continue
        sub = _yaml(item, indent + 2)
        lines.append(f"{pad}- {sub[0].lstrip()}")
        lines += sub[1:]
    return lines


def to_yaml(rules: AlertRuleSet, round_seconds: float = DEFAULT_ROUND_SECONDS) -> str:
    header = [
        "# Prometheus alerting rules generated by `tractatus-watch rules --format prometheus`",
        f"# from {rules.source}: edit that file, not this one.",
        f"# `for` and `keep_firing_for` counted in rounds are taken at {round_seconds:g} s per",
        "# round (--round-seconds); the metrics are those of `--metrics` (README: Prometheus",
        "# and Grafana).",
    ]
    return "\n".join(header + _yaml(rules_document(rules, round_seconds), 0)) + "\n"


__all__ = ["DEFAULT_ROUND_SECONDS", "PrometheusRulesError", "annotation", "duration", "promql",
           "rule_document", "rules_document", "to_yaml"]
