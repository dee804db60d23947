"""The rules command: the alert rules for Prometheus, or the Grafana dashboard, both made for
the metrics of `--metrics` (monitor/prometheus_bridge.py)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from ..app import app
from ..config import CliError
from ..output import emit_text
from .alerts import RulesOption, load_ruleset
from .store import ForceOption, OutOption

RULE_FORMATS = ("prometheus", "grafana", "toml")


@app.command(help=(
    "The alert rules as a Prometheus alerting-rules file (generated from the TOML rules, so "
    "the two cannot drift), the Grafana dashboard JSON, or the effective TOML rules.\n\n"
    "Both are made for a Prometheus that scrapes `collect --metrics` (README: Prometheus and "
    "Grafana). Rounds-based `for` durations become seconds at --round-seconds per round."))
def rules(
    fmt: Annotated[str, typer.Option(
        "--format", metavar="FORMAT",
        help="prometheus (rules YAML), grafana (dashboard JSON) or toml.")] = "prometheus",
    rules_file: RulesOption = None,
    round_seconds: Annotated[float, typer.Option(
        "--round-seconds", min=0.001,
        help="Seconds a training round takes, for `for = \"N rounds\"`.")] = 60.0,
    out: OutOption = None, force: ForceOption = False,
) -> None:
    """Print or write the Prometheus rules or Grafana dashboard (help above)."""
    if fmt not in RULE_FORMATS:
        raise CliError(f"--format: expected one of {', '.join(RULE_FORMATS)}, got {fmt!r}")
    if fmt == "grafana":
        emit_text(grafana_dashboard(), out, force)
        return
    if fmt == "toml":
        emit_text(_toml_text(rules_file), out, force)
        return
    from ...analysis.alerts.prometheus_rules import PrometheusRulesError, to_yaml

    ruleset = load_ruleset(rules_file)
    try:
        text = to_yaml(ruleset, round_seconds)
    except PrometheusRulesError as exc:
        raise CliError(str(exc)) from None
    emit_text(text, out, force)


def grafana_dashboard() -> str:
    """The dashboard shipped in the package (monitor/grafana_dashboard.json)."""
    res = resources.files("tractatus_watch.monitor").joinpath("grafana_dashboard.json")
    return res.read_text(encoding="utf-8")


def _toml_text(path: Path | None) -> str:
    from ...analysis.alerts.alert_rules import DEFAULT_RULES_FILE

    load_ruleset(path)  # the same checks as every command that uses the rules
    if path is None:
        res = resources.files("tractatus_watch.analysis.alerts").joinpath(DEFAULT_RULES_FILE)
        return res.read_text(encoding="utf-8")
    return path.read_text(encoding="utf-8")


__all__ = ["grafana_dashboard", "rules"]
