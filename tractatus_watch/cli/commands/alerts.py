"""Alert commands: check."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..app import DataPathOption, DbOption, app, open_store, pick_run
from ..config import CliError, resolve_store
from ..output import choose_format

if TYPE_CHECKING:
    from ...analysis.alerts.engine import AlertState

RulesOption = Annotated[Optional[Path], typer.Option(
    "--rules", envvar="TRACTATUS_WATCH_RULES", dir_okay=False,
    help="Alert rules TOML \\[default: the shipped rule set].")]


CHECK_FORMATS = ("table", "json")


def load_ruleset(path: Path | None):
    from ...analysis.alerts.alert_rules import (AlertRulesError, load_alert_rules,
                                                load_default_alert_rules)

    try:
        return load_alert_rules(path) if path else load_default_alert_rules()
    except AlertRulesError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot read rules {path}: {exc.strerror}") from None


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _firing_json(s: AlertState) -> dict[str, Any]:
    return {"alertname": s.alertname, "severity": s.severity, "run_id": s.run_id,
            "labels": s.labels, "value": s.value, "active_since": _iso(s.active_since),
            "fired_at": _iso(s.fired_at), "inhibited": s.inhibited,
            "summary": s.annotations.get("summary", ""), "annotations": s.annotations}


def _label_set(labels: dict[str, str]) -> str:
    # Prometheus' notation, values quoted as JSON strings: copied as it is into a silence.
    return "{" + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}"
                           for k, v in sorted(labels.items()) if k != "alertname") + "}"


def _firing_lines(firing: list[AlertState]) -> list[str]:
    """One line per alert (name, labels, value, since when) and its summary indented below:
    plain lines a CI log keeps whole and grep finds, never cut to the terminal's width."""
    lines = [f"{len(firing)} alert(s) firing:"]
    for s in firing:
        value = "" if s.value is None else f" value={s.value:.4g}"
        since = f" since {_since(s.active_since)} UTC" if s.active_since is not None else ""
        lines.append(f"{s.alertname}{_label_set(s.labels)}{value}{since}")
        summary = s.annotations.get("summary", "")
        if summary:
            lines.append(f"  {summary}")
    return lines


# Typer joins the lines of the first paragraph only, so the others are built line by line.
CHECK_HELP = "\n\n".join([
    "Evaluate the alert rules on the stored data, as a CI gate: exit 0 nothing firing, 1 "
    "firing, 2 error.",
    "table: `ok: nothing firing (N rules, M run(s))`, or `N alert(s) firing:` and a line per "
    "firing alert, `Name{label=\"value\", ...} value=V since TIME UTC`, with its summary "
    "indented below; silenced ones are counted on a line of their own.",
    "json: one document: status (ok or firing), exit_code, runs (the run ids evaluated), rules "
    "(how many), firing (a list: alertname, severity, run_id, labels, value, active_since, "
    "fired_at, inhibited, summary, annotations), silenced (how many firing alerts a silence "
    "holds back: not listed, they do not fail the check), pending (how many wait for their "
    "`for`). Times are ISO-8601 UTC.",
    "Alert state is kept in the database, so `for` durations count across runs of `check` and "
    "the collector's own evaluations.",
])


@app.command(help=CHECK_HELP,
             epilog="Exit codes: 0 nothing firing (pending and silenced alerts do not count), "
                    "1 at least one alert firing, 2 an error (bad input, a rule that failed, "
                    "an unknown --run).")
def check(
    rules: RulesOption = None,
    run: Annotated[Optional[str], typer.Option(
        "--run", help="Only this run \\[default: every stored run].")] = None,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", metavar="FORMAT", help="table or json \\[default: table].")] = None,
    at: Annotated[Optional[str], typer.Option(
        "--at", metavar="TIME", help="Judge the data as of this time (ISO-8601, or epoch "
        "seconds) instead of now: e.g. a gate re-run long after training.")] = None,
    db: DbOption = None, data_path: DataPathOption = None,
) -> None:
    """Evaluate the alert rules as a CI gate (help: CHECK_HELP)."""
    from ...analysis.alerts.engine import AlertEngine, exit_code
    from ...monitor.store_evaluator import evaluate_once
    from ...storage import queries
    from ...storage.alert_store import DuckDBAlertStore

    chosen = choose_format(fmt, None, CHECK_FORMATS)
    ruleset = load_ruleset(rules)
    target = resolve_store(db, data_path)
    if target.kind == "duckdb" and target.path is not None and not target.path.exists():
        # A gate that made an empty database and passed would hide a wrong path.
        raise CliError(f"no database at {target.path}: nothing to check (pass --store or set "
                       "TRACTATUS_WATCH_STORE)")
    with open_store(target, read_only=False) as store:
        con = store.cursor()
        runs = [pick_run(con, run)] if run else None
        # The runs the evaluator judges: the one named, else every stored run.
        evaluated = runs if runs is not None else \
            [str(r) for r in queries.runs(con)["run_id"].to_list()]
        engine = AlertEngine(ruleset, DuckDBAlertStore(store))
        evaluate_once(engine, con, runs=runs, now=_at(at))
        states = [s for s in engine.states() if runs is None or s.run_id in runs]
    if engine.rule_errors:
        names = {r.uid: r.name for r in engine.rules}
        for uid, error in engine.rule_errors.items():
            print(f"error: rule {names.get(uid, uid)}: {error}", file=sys.stderr)
        raise typer.Exit(2)
    code = exit_code(states)
    firing = [s for s in states if s.state == "firing" and not s.silenced_by]
    silenced = sum(1 for s in states if s.state == "firing" and s.silenced_by)
    pending = sum(1 for s in states if s.state == "pending")
    if chosen == "json":
        print(json.dumps({"status": "firing" if code else "ok", "exit_code": code,
                          "runs": evaluated, "rules": len(engine.rules),
                          "firing": [_firing_json(s) for s in firing],
                          "silenced": silenced, "pending": pending}, indent=2))
    else:
        # print, not a console: these lines are data, never wrapped, cut or read as markup.
        if firing:
            print("\n".join(_firing_lines(firing)))
        else:
            print(f"ok: nothing firing ({len(engine.rules)} rules, {len(evaluated)} run(s)"
                  + (f", {pending} pending" if pending else "") + ")")
        if silenced:
            print(f"{silenced} firing alert(s) silenced (not counted)")
    raise typer.Exit(code)
