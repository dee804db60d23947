"""Alert commands: check."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..app import DataPathOption, DbOption, app, open_store, pick_run
from ..config import CliError
from ..output import console

RulesOption = Annotated[Optional[Path], typer.Option(
    "--rules", envvar="TRACTATUS_WATCH_RULES", dir_okay=False,
    help="Alert rules TOML [default: the shipped rule set].")]


class CheckFormat(str, Enum):
    table = "table"
    json = "json"


def load_ruleset(path: Path | None):
    from ...analysis.alerts.alert_rules import AlertRulesError, load_default_alert_rules, load_alert_rules

    try:
        return load_alert_rules(path) if path else load_default_alert_rules()
    except AlertRulesError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot read rules {path}: {exc.strerror}") from None


def _since(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _at(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--at: expected an ISO-8601 time or epoch seconds, got {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


@app.command()
def check(
    rules: RulesOption = None,
    run: Annotated[Optional[str], typer.Option("--run", help="Only this run [default: all].")]
    = None,
    fmt: Annotated[CheckFormat, typer.Option("--format", help="Output format.")]
    = CheckFormat.table,
    at: Annotated[Optional[str], typer.Option(
        "--at", metavar="TIME", help="Judge the data as of this time (ISO-8601, or epoch "
        "seconds) instead of now: e.g. a gate re-run long after training.")] = None,
    db: DbOption = None, data_path: DataPathOption = None,
) -> None:
    """Evaluate the alert rules on the database: exit 0 nothing firing, 1 firing, 2 error.

    Alert state is kept in the database, so `for` durations count across runs of `check` and
    the collector's own evaluations."""
    from ...analysis.alerts.engine import AlertEngine, exit_code
    from ...monitor.store_evaluator import evaluate_once
    from ...storage.alert_store import DuckDBAlertStore

    ruleset = load_ruleset(rules)
    with open_store(db, data_path, read_only=False) as store:
        con = store.cursor()
        runs = [pick_run(con, run)] if run else None
        engine = AlertEngine(ruleset, DuckDBAlertStore(store))
        evaluate_once(engine, con, runs=runs, now=_at(at))
        states = [s for s in engine.states() if runs is None or s.run_id in runs]
    if engine.rule_errors:
        names = {r.uid: r.name for r in engine.rules}
        for uid, error in engine.rule_errors.items():
            print(f"error: rule {names.get(uid, uid)}: {error}", file=sys.stderr)
        raise typer.Exit(2)
    firing = [s for s in states if s.state == "firing" and not s.silenced_by]
    if fmt == CheckFormat.json:
        print(json.dumps([{"alertname": s.alertname, "state": s.state, "severity": s.severity,
                           "labels": s.labels, "annotations": s.annotations, "value": s.value,
                           "active_since": s.active_since} for s in states
                          if s.state != "inactive"], indent=2))
    elif not firing:
        pending = sum(1 for s in states if s.state == "pending")
        console().print(f"ok: nothing firing ({len(engine.rules)} rules"
                        + (f", {pending} pending" if pending else "") + ")")
    else:
        table = Table(title=f"{len(firing)} alert(s) firing", header_style="bold")
        for col in ("alert", "severity", "run", "arm", "value", "since", "summary"):
            table.add_column(col)
        for s in firing:
            table.add_row(s.alertname, s.severity or "", s.run_id or "", s.labels.get("arm", ""),
                          "" if s.value is None else f"{s.value:.4g}", _since(s.active_since),
                          s.annotations.get("summary", ""))
        console().print(table)
    raise typer.Exit(exit_code(states))
